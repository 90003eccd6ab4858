//! Fixture, property and benchmark tests of the parsers.

mod bench;
mod fixtures;
mod props;

use super::*;

#[test]
fn recycle_keeps_the_allocation() {
    let mut v: Vec<(&str, &str)> = Vec::with_capacity(16);
    v.push(("a", "b"));
    let r: Vec<(&'static str, &'static str)> = recycle(v);
    assert!(r.is_empty() && r.capacity() >= 16);
}

#[test]
fn enums_round_trip() {
    for f in ["auto", "influx", "prom", "jsonl", "csv", "none"] {
        assert_eq!(
            f.parse::<Format>().map(|x| x.to_string()),
            Ok(f.to_string())
        );
    }
    assert!("xml".parse::<Format>().is_err());
    for k in ["counter", "gauge", "histogram", "summary", "untyped"] {
        assert_eq!(
            k.parse::<MetricKind>().map(|x| x.to_string()),
            Ok(k.to_string())
        );
    }
    for (i, k) in ErrorKind::ALL.iter().enumerate() {
        assert_eq!(*k as usize, i, "ALL is in declaration order");
        assert!(ErrorKind::ALL[..i].iter().all(|o| o.code() != k.code()));
        assert!(!k.to_string().contains('\n'));
    }
    let e = LineError {
        line: 3,
        reason: ErrorKind::BadNumber,
    };
    assert_eq!(e.to_string(), "line 3: value is not a number");
}
