//! A block: the samples of one series over a span of time, as the shard stores them — raw
//! (little-endian arrays, written in the commit of the file they came from) or sealed
//! (pco-compressed timestamps and values, written by compaction). Both carry the block's
//! [`Partial`], so a query whose step bucket holds a whole block reads no samples.

use super::partial::Partial;

#[derive(Debug, thiserror::Error)]
pub enum BlockError {
    #[error(
        "a stored block is damaged ({0}); run `sqd --mode worker compact` or restore the store"
    )]
    Damaged(String),
    #[error("cannot compress a block: {0}")]
    Compress(String),
}

/// How a block's payload is encoded (stored as a small integer).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    Raw = 0,
    Pco = 1,
}

impl Encoding {
    pub fn from_code(code: i64) -> Result<Self, BlockError> {
        match code {
            0 => Ok(Encoding::Raw),
            1 => Ok(Encoding::Pco),
            other => Err(BlockError::Damaged(format!("unknown encoding {other}"))),
        }
    }
}

/// Samples of one series, sorted by time (equal timestamps keep their order).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Samples {
    pub ts: Vec<i64>,
    pub vals: Vec<f64>,
}

impl Samples {
    pub fn push(&mut self, ts: i64, value: f64) {
        self.ts.push(ts);
        self.vals.push(value);
    }

    pub fn len(&self) -> usize {
        self.ts.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ts.is_empty()
    }

    /// Sorts by timestamp, keeping the order of equal ones.
    pub fn sort(&mut self) {
        if self.ts.windows(2).all(|w| w[0] <= w[1]) {
            return;
        }
        let mut idx: Vec<usize> = (0..self.ts.len()).collect();
        idx.sort_by_key(|&i| self.ts[i]);
        self.ts = idx.iter().map(|&i| self.ts[i]).collect();
        self.vals = idx.iter().map(|&i| self.vals[i]).collect();
    }

    /// The aggregate of every sample, or `None` when empty.
    pub fn partial(&self) -> Option<Partial> {
        let mut it = self.ts.iter().zip(&self.vals);
        let (&t, &v) = it.next()?;
        let mut p = Partial::of(t, v);
        for (&t, &v) in it {
            p.push(t, v);
        }
        Some(p)
    }

    /// Moves the samples of `other` in and keeps the order.
    pub fn extend(&mut self, other: &Samples) {
        self.ts.extend_from_slice(&other.ts);
        self.vals.extend_from_slice(&other.vals);
        self.sort();
    }

    pub fn encode(&self, encoding: Encoding) -> Result<(Vec<u8>, Vec<u8>), BlockError> {
        match encoding {
            Encoding::Raw => Ok((
                self.ts.iter().flat_map(|t| t.to_le_bytes()).collect(),
                self.vals
                    .iter()
                    .flat_map(|v| v.to_bits().to_le_bytes())
                    .collect(),
            )),
            Encoding::Pco => {
                let level = pco::DEFAULT_COMPRESSION_LEVEL;
                let ts = pco::standalone::simpler_compress(&self.ts, level)
                    .map_err(|e| BlockError::Compress(e.to_string()))?;
                let vals = pco::standalone::simpler_compress(&self.vals, level)
                    .map_err(|e| BlockError::Compress(e.to_string()))?;
                Ok((ts, vals))
            }
        }
    }

    pub fn decode(encoding: Encoding, ts: &[u8], vals: &[u8]) -> Result<Samples, BlockError> {
        let samples = match encoding {
            Encoding::Raw => {
                if !ts.len().is_multiple_of(8) || ts.len() != vals.len() {
                    return Err(BlockError::Damaged(format!(
                        "raw block of {} and {} bytes",
                        ts.len(),
                        vals.len()
                    )));
                }
                Samples {
                    ts: ts
                        .chunks_exact(8)
                        .map(|c| i64::from_le_bytes(c.try_into().unwrap_or([0; 8])))
                        .collect(),
                    vals: vals
                        .chunks_exact(8)
                        .map(|c| f64::from_bits(u64::from_le_bytes(c.try_into().unwrap_or([0; 8]))))
                        .collect(),
                }
            }
            Encoding::Pco => {
                let damaged = |e: pco::errors::PcoError| BlockError::Damaged(e.to_string());
                let ts: Vec<i64> = pco::standalone::simple_decompress(ts).map_err(damaged)?;
                let vals: Vec<f64> = pco::standalone::simple_decompress(vals).map_err(damaged)?;
                if ts.len() != vals.len() {
                    return Err(BlockError::Damaged(format!(
                        "{} timestamps for {} values",
                        ts.len(),
                        vals.len()
                    )));
                }
                Samples { ts, vals }
            }
        };
        Ok(samples)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn host_like_series_compress_below_two_bytes_per_sample() {
        // 24 h of a CPU-like gauge at 10 s: timestamps regular, values with one decimal.
        let mut s = Samples::default();
        let mut v: f64 = 40.0;
        for i in 0..8_640i64 {
            v = (v + ((i * 7919) % 13) as f64 / 10.0 - 0.6).clamp(0.0, 100.0);
            s.push(1_764_633_600_000 + i * 10_000, (v * 10.0).round() / 10.0);
        }
        let (ts, vals) = s.encode(Encoding::Pco).unwrap_or_default();
        let per_sample = (ts.len() + vals.len()) as f64 / s.len() as f64;
        assert!(per_sample < 2.0, "{per_sample} bytes per sample");
        let back = Samples::decode(Encoding::Pco, &ts, &vals).ok();
        assert_eq!(back.as_ref(), Some(&s));
    }

    #[test]
    fn damaged_blocks_are_errors_not_panics() {
        assert!(Samples::decode(Encoding::Raw, &[1, 2, 3], &[1, 2, 3]).is_err());
        assert!(Samples::decode(Encoding::Pco, &[1, 2, 3], &[]).is_err());
        assert!(Encoding::from_code(7).is_err());
    }

    proptest! {
        #[test]
        fn both_encodings_round_trip(samples in proptest::collection::vec((any::<i64>(), any::<f64>()), 0..300)) {
            let mut s = Samples::default();
            for (t, v) in samples { s.push(t, v); }
            for enc in [Encoding::Raw, Encoding::Pco] {
                let (ts, vals) = s.encode(enc).map_err(|e| TestCaseError::fail(e.to_string()))?;
                let back = Samples::decode(enc, &ts, &vals).map_err(|e| TestCaseError::fail(e.to_string()))?;
                prop_assert_eq!(back.ts, s.ts.clone());
                let same = back.vals.iter().zip(&s.vals).all(|(a, b)| a.to_bits() == b.to_bits());
                prop_assert!(same);
            }
        }

        #[test]
        fn sorting_keeps_equal_timestamps_in_order(samples in proptest::collection::vec((0i64..20, -5f64..5.0), 0..100)) {
            let mut s = Samples::default();
            for (t, v) in &samples { s.push(*t, *v); }
            s.sort();
            let mut expected = samples.clone();
            expected.sort_by_key(|x| x.0);
            prop_assert_eq!(s.ts, expected.iter().map(|x| x.0).collect::<Vec<_>>());
            prop_assert_eq!(s.vals, expected.iter().map(|x| x.1).collect::<Vec<_>>());
        }
    }
}
