//! Mergeable partial aggregates (M2): what a shard answers per series and step bucket, so that
//! any split of a series' samples across shards, and any chunking of the answer, merges into
//! the same result. Averages and the like are computed only after the last merge.

use std::fmt;
use std::str::FromStr;

/// The aggregate of the samples of one series in one step bucket.
///
/// `first`/`last` are the samples with the smallest/largest timestamp; on equal timestamps the
/// smaller/larger value wins, so the merge is commutative (two shards may hold samples with
/// the same timestamp: a file re-written under another name, or a client that moved).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Partial {
    pub count: u64,
    pub sum: f64,
    pub min: f64,
    pub max: f64,
    pub first_ts: i64,
    pub first: f64,
    pub last_ts: i64,
    pub last: f64,
}

impl Partial {
    /// The aggregate of one sample.
    pub fn of(ts: i64, value: f64) -> Self {
        Partial {
            count: 1,
            sum: value,
            min: value,
            max: value,
            first_ts: ts,
            first: value,
            last_ts: ts,
            last: value,
        }
    }

    /// Adds one sample.
    pub fn push(&mut self, ts: i64, value: f64) {
        self.merge(&Partial::of(ts, value));
    }

    /// Folds another partial of the same series and bucket into this one.
    pub fn merge(&mut self, other: &Partial) {
        self.count += other.count;
        self.sum += other.sum;
        self.min = min_nan_last(self.min, other.min);
        self.max = max_nan_last(self.max, other.max);
        if (other.first_ts, OrdF64(other.first)) < (self.first_ts, OrdF64(self.first)) {
            self.first_ts = other.first_ts;
            self.first = other.first;
        }
        if (other.last_ts, OrdF64(other.last)) > (self.last_ts, OrdF64(self.last)) {
            self.last_ts = other.last_ts;
            self.last = other.last;
        }
    }

    /// The value of `agg` over this bucket.
    pub fn value(&self, agg: Agg) -> f64 {
        match agg {
            Agg::Avg => self.sum / self.count as f64,
            Agg::Min => self.min,
            Agg::Max => self.max,
            Agg::Sum => self.sum,
            Agg::Count => self.count as f64,
            Agg::Last => self.last,
            Agg::First => self.first,
        }
    }
}

/// Which fields of a [`Partial`] a question needs, so a shard's answer carries only those
/// (an `avg` over 1,000 series x 1,440 buckets is a sixth of the bytes of every field). The
/// count always travels: it says whether the bucket has samples at all.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Fields(u32);

impl Fields {
    pub const COUNT: Fields = Fields(1);
    pub const SUM: Fields = Fields(1 << 1);
    pub const MIN: Fields = Fields(1 << 2);
    pub const MAX: Fields = Fields(1 << 3);
    pub const FIRST: Fields = Fields(1 << 4);
    pub const LAST: Fields = Fields(1 << 5);
    pub const ALL: Fields = Fields(0b11_1111);

    /// From the wire: unknown bits are ignored, the count is always included, and 0 (a peer
    /// that does not know fields) means every field.
    pub fn from_bits(bits: u32) -> Fields {
        match bits & Self::ALL.0 {
            0 => Self::ALL,
            b => Fields(b | Self::COUNT.0),
        }
    }

    pub fn bits(self) -> u32 {
        self.0
    }

    pub fn has(self, f: Fields) -> bool {
        self.0 & f.0 == f.0
    }

    pub fn with(self, f: Fields) -> Fields {
        Fields(self.0 | f.0)
    }

    /// What `agg` reads.
    pub fn of(agg: Agg) -> Fields {
        let extra = match agg {
            Agg::Avg | Agg::Sum => Self::SUM,
            Agg::Min => Self::MIN,
            Agg::Max => Self::MAX,
            Agg::Count => Self::COUNT,
            Agg::Last => Self::LAST,
            Agg::First => Self::FIRST,
        };
        Self::COUNT.with(extra)
    }
}

impl Partial {
    /// A partial of `count` samples whose other fields are not known yet: each is the
    /// neutral element of its merge (0 for the sum, NaN for min/max, which the merge skips,
    /// the far ends of time for first/last), so merging known fields into it is exact.
    pub fn counted(count: u64) -> Self {
        Partial {
            count,
            sum: 0.0,
            min: f64::NAN,
            max: f64::NAN,
            first_ts: i64::MAX,
            first: f64::NAN,
            last_ts: i64::MIN,
            last: f64::NAN,
        }
    }
}

/// `min` that ignores NaN unless both are NaN (as Prometheus's `min_over_time` does).
fn min_nan_last(a: f64, b: f64) -> f64 {
    if a.is_nan() {
        b
    } else if b.is_nan() {
        a
    } else {
        a.min(b)
    }
}

fn max_nan_last(a: f64, b: f64) -> f64 {
    if a.is_nan() {
        b
    } else if b.is_nan() {
        a
    } else {
        a.max(b)
    }
}

/// Total order on floats for tie-breaking (NaN sorts above everything).
#[derive(Debug, Clone, Copy, PartialEq)]
struct OrdF64(f64);

impl PartialOrd for OrdF64 {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.0.total_cmp(&other.0))
    }
}

/// An aggregation over a step bucket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Agg {
    Avg,
    Min,
    Max,
    Sum,
    Count,
    Last,
    First,
}

impl Agg {
    pub const ALL: [Agg; 7] = [
        Agg::Avg,
        Agg::Min,
        Agg::Max,
        Agg::Sum,
        Agg::Count,
        Agg::Last,
        Agg::First,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Agg::Avg => "avg",
            Agg::Min => "min",
            Agg::Max => "max",
            Agg::Sum => "sum",
            Agg::Count => "count",
            Agg::Last => "last",
            Agg::First => "first",
        }
    }
}

impl fmt::Display for Agg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown aggregation {0:?}; use one of avg, min, max, sum, count, last, first")]
pub struct UnknownAgg(pub String);

impl FromStr for Agg {
    type Err = UnknownAgg;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Agg::ALL
            .into_iter()
            .find(|a| a.as_str() == s)
            .ok_or_else(|| UnknownAgg(s.chars().take(40).collect()))
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn fold(samples: &[(i64, f64)]) -> Option<Partial> {
        let mut it = samples.iter();
        let &(ts, v) = it.next()?;
        let mut p = Partial::of(ts, v);
        for &(ts, v) in it {
            p.push(ts, v);
        }
        Some(p)
    }

    fn same(a: &Partial, b: &Partial) -> bool {
        let close = |x: f64, y: f64| {
            (x.is_nan() && y.is_nan()) || x == y || (x - y).abs() <= 1e-9 * x.abs().max(y.abs())
        };
        a.count == b.count
            && close(a.sum, b.sum)
            && close(a.min, b.min)
            && close(a.max, b.max)
            && a.first_ts == b.first_ts
            && close(a.first, b.first)
            && a.last_ts == b.last_ts
            && close(a.last, b.last)
    }

    #[test]
    fn avg_is_taken_after_merging() {
        let mut a = fold(&[(1, 1.0), (2, 2.0), (3, 3.0)]).unwrap_or(Partial::of(0, 0.0));
        let b = Partial::of(4, 10.0);
        a.merge(&b);
        assert_eq!(a.value(Agg::Avg), 4.0);
        assert_eq!(a.value(Agg::Last), 10.0);
        assert_eq!(a.value(Agg::First), 1.0);
        assert_eq!(a.value(Agg::Count), 4.0);
    }

    #[test]
    fn nan_does_not_hide_min_and_max() {
        let p = fold(&[(1, f64::NAN), (2, 5.0), (3, -1.0)]).unwrap_or(Partial::of(0, 0.0));
        assert_eq!((p.min, p.max), (-1.0, 5.0));
    }

    #[test]
    fn aggregation_names_round_trip() {
        for a in Agg::ALL {
            assert_eq!(a.as_str().parse::<Agg>(), Ok(a));
        }
        assert!("mean".parse::<Agg>().is_err());
    }

    proptest! {
        /// Any split of the samples into shards, folded in any order, gives one answer.
        #[test]
        fn any_split_merges_to_the_same_partial(
            samples in proptest::collection::vec((-50i64..50, -1e6f64..1e6), 1..60),
            cuts in proptest::collection::vec(0usize..4, 60),
        ) {
            let whole = fold(&samples);
            let mut shards: Vec<Vec<(i64, f64)>> = vec![Vec::new(); 4];
            for (i, s) in samples.iter().enumerate() {
                shards[cuts[i % cuts.len()]].push(*s);
            }
            let mut merged: Option<Partial> = None;
            for shard in shards.iter().rev() {
                if let Some(p) = fold(shard) {
                    match merged.as_mut() {
                        Some(m) => m.merge(&p),
                        None => merged = Some(p),
                    }
                }
            }
            match (whole, merged) {
                (Some(w), Some(m)) => prop_assert!(same(&w, &m), "{:?} != {:?}", w, m),
                other => prop_assert!(false, "one side empty: {:?}", other),
            }
        }
    }
}
