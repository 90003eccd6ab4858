//! CSV with a header line: a time column plus numeric columns, e.g. collectd's csv plugin
//! (`epoch,value` or `epoch,rx,tx`, fractional epoch seconds).
//!
//! As implemented:
//! - The first non-blank line is the header. A header whose cells all parse as numbers
//!   means there is none: every line of the file is [`ErrorKind::NoHeader`].
//! - Cells are split on every `,` (no quoting: collectd never quotes); spaces around cells
//!   are trimmed, and double quotes around header cells.
//! - Time column: the header cell equal to `ParseOptions::time_field`, else the first named
//!   `epoch`, `time`, `timestamp` or `ts` (any case), else the first column. Its cells are
//!   RFC 3339 or a number read by magnitude (seconds / ms / µs / ns, see [`super::time`]).
//! - Columns listed in `ParseOptions::label_fields` are labels; every other column is a
//!   value column: one sample per cell.
//! - Metric names come from the header. A file named like collectd's
//!   `<type>[-<instance>]-YYYY-MM-DD[.csv]` (e.g. `if_octets-2026-12-02`) gives the prefix
//!   `<type>[-<instance>]`: the metric is `<prefix>_<column>`, or just `<prefix>` for a column
//!   named `value` (`memory-used-2026-12-02` → `memory_used`; `if_octets-…` → `if_octets_rx`,
//!   `if_octets_tx`). Other file names give no prefix. Names are then sanitised.
//! - Values: decimal numbers; `nan`, `-nan`, `inf`, `-inf`, `infinity` (any case) are kept
//!   as NaN/±Inf (collectd writes `nan` for an unknown gauge); an empty cell is no sample
//!   (`skipped_values`). Errors, whole line rejected: a different number of cells than the
//!   header ([`ErrorKind::ColumnCount`]), a bad value ([`ErrorKind::BadNumber`],
//!   [`ErrorKind::NumberOutOfRange`]), a bad time cell ([`ErrorKind::BadTimestamp`],
//!   [`ErrorKind::TimestampOutOfRange`]).

use super::influx::parse_float;
use super::names::{self, NameKind};
use super::time::{rfc3339_ms, text_by_magnitude};
use super::{Ctx, ErrorKind, SampleSink, SeriesRef};

const TIME_NAMES: [&str; 4] = ["epoch", "time", "timestamp", "ts"];

enum Column {
    Time,
    Value(String),
    Label(Vec<u8>),
}

enum Header {
    Pending,
    Missing,
    Columns(Vec<Column>),
}

pub(crate) fn parse<S: SampleSink + ?Sized>(bytes: &[u8], cx: &mut Ctx<'_>, sink: &mut S) {
    let mut header = Header::Pending;
    let mut values: Vec<(usize, f64)> = Vec::new();
    cx.for_each_line(bytes, false, |cx, _, line| match &header {
        Header::Pending => {
            header = read_header(line, cx);
            match header {
                Header::Missing => Err(ErrorKind::NoHeader),
                _ => Ok(()),
            }
        }
        Header::Missing => Err(ErrorKind::NoHeader),
        Header::Columns(cols) => parse_line(line, cols, &mut values, cx, sink),
    });
}

fn trim(cell: &[u8]) -> &[u8] {
    cell.trim_ascii()
}

fn read_header(line: &[u8], cx: &Ctx<'_>) -> Header {
    let cells: Vec<&[u8]> = line
        .split(|&b| b == b',')
        .map(|c| {
            let c = trim(c);
            c.strip_prefix(b"\"")
                .and_then(|c| c.strip_suffix(b"\""))
                .unwrap_or(c)
        })
        .collect();
    if cells.iter().all(|c| number(c).is_ok()) {
        return Header::Missing;
    }
    let is_time = |c: &[u8], i: usize| match &cx.opts.time_field {
        Some(f) if cells.iter().any(|c| c == &f.as_bytes()) => c == f.as_bytes(),
        _ => match cells.iter().position(|c| {
            TIME_NAMES
                .iter()
                .any(|t| c.eq_ignore_ascii_case(t.as_bytes()))
        }) {
            Some(p) => p == i,
            None => i == 0,
        },
    };
    let prefix = collectd_prefix(&cx.opts.file_name);
    let columns = cells.iter().enumerate().map(|(i, c)| {
        if is_time(c, i) {
            return Column::Time;
        }
        let listed = cx
            .opts
            .label_fields
            .as_ref()
            .is_some_and(|l| l.iter().any(|f| f.as_bytes() == *c));
        if listed {
            return Column::Label(c.to_vec());
        }
        let raw = match prefix {
            Some(p) if c.eq_ignore_ascii_case(b"value") => p.to_vec(),
            Some(p) => [p, b"_", c].concat(),
            None => c.to_vec(),
        };
        Column::Value(names::sanitized(&raw, NameKind::Metric))
    });
    Header::Columns(columns.collect())
}

/// `<prefix>` of a collectd file name `<prefix>-YYYY-MM-DD[.csv]`.
fn collectd_prefix(file_name: &[u8]) -> Option<&[u8]> {
    let n = file_name.len();
    let stem = if n >= 4 && file_name[n - 4..].eq_ignore_ascii_case(b".csv") {
        &file_name[..n - 4]
    } else {
        file_name
    };
    let (prefix, date) = stem.split_at_checked(stem.len().checked_sub(11)?)?;
    let shape = date.iter().enumerate().all(|(i, b)| match i {
        0 | 5 | 8 => *b == b'-',
        _ => b.is_ascii_digit(),
    });
    (shape && !prefix.is_empty()).then_some(prefix)
}

fn number(cell: &[u8]) -> Result<f64, ErrorKind> {
    let text = std::str::from_utf8(cell).map_err(|_| ErrorKind::BadNumber)?;
    let special = [
        ("nan", f64::NAN),
        ("-nan", f64::NAN),
        ("inf", f64::INFINITY),
        ("+inf", f64::INFINITY),
    ];
    let special2 = [
        ("infinity", f64::INFINITY),
        ("-inf", f64::NEG_INFINITY),
        ("-infinity", f64::NEG_INFINITY),
    ];
    if let Some((_, v)) = special
        .iter()
        .chain(&special2)
        .find(|(s, _)| text.eq_ignore_ascii_case(s))
    {
        return Ok(*v);
    }
    parse_float(text)
}

fn time_cell(cell: &[u8]) -> Result<i64, ErrorKind> {
    let text = std::str::from_utf8(cell).map_err(|_| ErrorKind::BadTimestamp)?;
    if let Some(t) = rfc3339_ms(text).or_else(|| text_by_magnitude(text)) {
        return Ok(t);
    }
    match parse_float(text) {
        Ok(_) | Err(ErrorKind::NumberOutOfRange) => Err(ErrorKind::TimestampOutOfRange),
        Err(_) => Err(ErrorKind::BadTimestamp),
    }
}

fn parse_line<S: SampleSink + ?Sized>(
    line: &[u8],
    cols: &[Column],
    values: &mut Vec<(usize, f64)>,
    cx: &mut Ctx<'_>,
    sink: &mut S,
) -> Result<(), ErrorKind> {
    if line.iter().filter(|&&b| b == b',').count() + 1 != cols.len() {
        return Err(ErrorKind::ColumnCount);
    }
    cx.series.clear();
    values.clear();
    let mut ts = None;
    for (i, (cell, col)) in line.split(|&b| b == b',').zip(cols).enumerate() {
        let cell = trim(cell);
        match col {
            Column::Time => ts = Some(time_cell(cell)?),
            Column::Label(name) => {
                cx.series.push_label(name, cell);
            }
            Column::Value(_) if cell.is_empty() => cx.series.skipped += 1,
            Column::Value(_) => values.push((i, number(cell)?)),
        }
    }
    let ts = ts.unwrap_or(cx.opts.mtime_ms);
    let n = cx.series.with_refs(&cx.opts.client, |labels, _| {
        for (i, v) in values.iter() {
            if let Some(Column::Value(metric)) = cols.get(*i) {
                sink.sample(&SeriesRef { metric, labels }, ts, *v);
            }
        }
        values.len() as u64
    })?;
    cx.accept_line(n);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::{CollectSink, ErrorKind, Format, ParseOptions, parse};
    use super::collectd_prefix;

    #[test]
    fn prefix() {
        assert_eq!(
            collectd_prefix(b"if_octets-2026-12-02"),
            Some(&b"if_octets"[..])
        );
        assert_eq!(
            collectd_prefix(b"cpu-idle-2026-12-02.csv"),
            Some(&b"cpu-idle"[..])
        );
        assert_eq!(collectd_prefix(b"2026-12-02"), None);
        assert_eq!(collectd_prefix(b"stats.csv"), None);
        assert_eq!(collectd_prefix(b""), None);
    }

    #[test]
    fn collectd_file() {
        let mut o = ParseOptions::new("c", 0);
        o.file_name = b"if_octets-2026-12-02".to_vec();
        let input = "epoch,rx,tx\r\n1764633600.250,10,20\r\n1764633610.250,nan,\r\n1764633620,1\r\nx,1,2\r\n";
        let mut s = CollectSink::default();
        let r = parse(Format::Csv, input.as_bytes(), &o, &mut s);
        let got: Vec<_> = s
            .samples
            .iter()
            .map(|x| (x.metric.as_str(), x.ts_ms, x.value))
            .collect();
        assert_eq!(
            got[..2],
            [
                ("if_octets_rx", 1_764_633_600_250, 10.0),
                ("if_octets_tx", 1_764_633_600_250, 20.0)
            ]
        );
        assert_eq!((got.len(), got[2].0), (3, "if_octets_rx"));
        assert!(got[2].2.is_nan());
        assert_eq!(
            (
                r.skipped_values,
                r.errors_of(ErrorKind::ColumnCount),
                r.errors_of(ErrorKind::BadTimestamp)
            ),
            (1, 1, 1)
        );
    }

    #[test]
    fn no_header_and_labels() {
        let mut s = CollectSink::default();
        let r = parse(
            Format::Csv,
            b"1,2\n3,4\n",
            &ParseOptions::new("c", 0),
            &mut s,
        );
        assert_eq!((r.samples, r.errors_of(ErrorKind::NoHeader)), (0, 2));
        let mut o = ParseOptions::new("c", 0);
        o.label_fields = Some(vec!["host".into()]);
        o.time_field = Some("when".into());
        let r = parse(
            Format::Csv,
            b"host,when,value\nweb-1,2025-12-02T00:00:00Z,5\n",
            &o,
            &mut s,
        );
        assert_eq!(r.samples, 1);
        assert_eq!(s.samples[0].label("host"), Some("web-1"));
        assert_eq!(
            (s.samples[0].metric.as_str(), s.samples[0].ts_ms),
            ("value", 1_764_633_600_000)
        );
    }
}
