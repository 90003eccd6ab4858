//! Timestamps: every format's time value becomes i64 milliseconds since the Unix epoch.
//!
//! - Fixed precision (line protocol: ns by default, or us/ms/s): integer division rounds
//!   toward minus infinity, so `-1` ns is `-1` ms, and no sample moves across a boundary
//!   differently for negative times. Seconds that overflow i64 ms are an error.
//! - By magnitude (JSON lines, CSV), on the absolute value `a` of a number:
//!   `a < 1e11` → seconds, `a < 1e14` → milliseconds, `a < 1e17` → microseconds, else
//!   nanoseconds. Each unit is then unambiguous for dates between 1973-03-03 and 5138-11-16
//!   (the range where 1e11 seconds and 1e11 milliseconds cannot be confused). Fractions
//!   are kept down to the millisecond (floor).
//! - RFC 3339 strings (`2026-12-02T00:00:00.250Z`, `...+01:00`, `t`/space separator, `z`):
//!   parsed by hand; fractions beyond the millisecond are truncated; a leap second `:60`
//!   is accepted and lands on the next second.

use std::str::FromStr;

/// Unit of integer timestamps in line protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Precision {
    #[default]
    Ns,
    Us,
    Ms,
    S,
}

/// A precision name that is none of ns, us, ms, s.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown precision {0:?}: expected ns, us, ms or s")]
pub struct UnknownPrecision(pub String);

impl FromStr for Precision {
    type Err = UnknownPrecision;
    fn from_str(s: &str) -> Result<Self, UnknownPrecision> {
        match s {
            "ns" | "n" => Ok(Self::Ns),
            "us" | "u" => Ok(Self::Us),
            "ms" => Ok(Self::Ms),
            "s" => Ok(Self::S),
            _ => Err(UnknownPrecision(s.chars().take(40).collect())),
        }
    }
}

impl std::fmt::Display for Precision {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Ns => "ns",
            Self::Us => "us",
            Self::Ms => "ms",
            Self::S => "s",
        })
    }
}

/// Converts an integer in `precision` units to ms; `None` when it does not fit.
pub fn with_precision(v: i64, precision: Precision) -> Option<i64> {
    match precision {
        Precision::Ns => Some(v.div_euclid(1_000_000)),
        Precision::Us => Some(v.div_euclid(1_000)),
        Precision::Ms => Some(v),
        Precision::S => v.checked_mul(1_000),
    }
}

/// Integer epoch, unit chosen by magnitude (module doc).
pub fn int_by_magnitude(v: i128) -> Option<i64> {
    let a = v.unsigned_abs();
    let ms = if a < 100_000_000_000 {
        v * 1_000
    } else if a < 100_000_000_000_000 {
        v
    } else if a < 100_000_000_000_000_000 {
        v.div_euclid(1_000)
    } else {
        v.div_euclid(1_000_000)
    };
    i64::try_from(ms).ok()
}

/// Float epoch, unit chosen by magnitude (module doc); `None` for NaN, ±Inf, out of range.
pub fn float_by_magnitude(v: f64) -> Option<i64> {
    if !v.is_finite() {
        return None;
    }
    let a = v.abs();
    let ms = if a < 1e11 {
        v * 1e3
    } else if a < 1e14 {
        v
    } else if a < 1e17 {
        v / 1e3
    } else {
        v / 1e6
    };
    let ms = ms.floor();
    // `i64::MAX as f64` rounds up to 2^63, which does not fit: hence the half-open range.
    (i64::MIN as f64..i64::MAX as f64)
        .contains(&ms)
        .then_some(ms as i64)
}

/// A number written in text (JSON or CSV cell). Plain decimals (`-?digits[.digits]`) are
/// converted exactly, so `1764633600.123` is 123 ms and not 122.99…; other spellings
/// (exponents) go through f64.
pub fn text_by_magnitude(s: &str) -> Option<i64> {
    if let Some(ms) = decimal_by_magnitude(s) {
        return Some(ms);
    }
    if s.is_empty()
        || !s
            .bytes()
            .all(|b| b.is_ascii_digit() || b"+-.eE".contains(&b))
    {
        return None; // refuses "nan", "inf", "infinity" that f64::from_str would take
    }
    float_by_magnitude(s.parse::<f64>().ok()?)
}

/// Exact path of [`text_by_magnitude`]; `None` when `s` is not a short plain decimal.
fn decimal_by_magnitude(s: &str) -> Option<i64> {
    let (neg, body) = match s.strip_prefix('-') {
        Some(b) => (true, b),
        None => (false, s.strip_prefix('+').unwrap_or(s)),
    };
    let (int, frac) = body.split_once('.').unwrap_or((body, ""));
    if int.is_empty()
        || int.len() > 20
        || !(int.bytes().chain(frac.bytes()).all(|b| b.is_ascii_digit()))
    {
        return None;
    }
    let frac = &frac[..frac.len().min(9)]; // below the nanosecond of a second: noise
    let int_v: i128 = int.parse().ok()?;
    let frac_v: i128 = if frac.is_empty() {
        0
    } else {
        frac.parse().ok()?
    };
    let scale = 10i128.pow(frac.len() as u32);
    let mut n = int_v * scale + frac_v; // the value times `scale`
    if neg {
        n = -n;
    }
    // ms = n / scale * (ms per unit), floored; the unit is chosen on the integer part.
    let (mul, div) = if int_v < 100_000_000_000 {
        (1_000, 1)
    } else if int_v < 100_000_000_000_000 {
        (1, 1)
    } else if int_v < 100_000_000_000_000_000 {
        (1, 1_000)
    } else {
        (1, 1_000_000)
    };
    i64::try_from((n * mul).div_euclid(scale * div)).ok()
}

fn digits(b: &[u8]) -> Option<i64> {
    if b.is_empty() || !b.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(b.iter().fold(0i64, |n, d| n * 10 + i64::from(d - b'0')))
}

use crate::clock::days_from_civil;

fn days_in_month(y: i64, m: i64) -> i64 {
    match m {
        2 if (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Parses an RFC 3339 date-time into ms since the epoch.
pub fn rfc3339_ms(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || b[13] != b':' || b[16] != b':' {
        return None;
    }
    if !matches!(b[10], b'T' | b't' | b' ') {
        return None;
    }
    let (y, mo, d) = (digits(&b[0..4])?, digits(&b[5..7])?, digits(&b[8..10])?);
    let (h, mi, sec) = (
        digits(&b[11..13])?,
        digits(&b[14..16])?,
        digits(&b[17..19])?,
    );
    if !(1..=12).contains(&mo) || d < 1 || d > days_in_month(y, mo) {
        return None;
    }
    if h > 23 || mi > 59 || sec > 60 {
        return None;
    }
    let mut rest = &b[19..];
    let mut frac_ms = 0;
    if let Some(after_dot) = rest.strip_prefix(b".") {
        let n = after_dot.iter().take_while(|c| c.is_ascii_digit()).count();
        if n == 0 {
            return None;
        }
        let mut ms_digits = [b'0'; 3];
        for (dst, src) in ms_digits.iter_mut().zip(&after_dot[..n]) {
            *dst = *src;
        }
        frac_ms = digits(&ms_digits)?;
        rest = &after_dot[n..];
    }
    let offset_min = match rest {
        [b'Z' | b'z'] => 0,
        [sign @ (b'+' | b'-'), oh1, oh2, b':', om1, om2] => {
            let (oh, om) = (digits(&[*oh1, *oh2])?, digits(&[*om1, *om2])?);
            if oh > 23 || om > 59 {
                return None;
            }
            let off = oh * 60 + om;
            if *sign == b'-' { -off } else { off }
        }
        _ => return None,
    };
    let days = days_from_civil(y, mo, d);
    let secs = days * 86_400 + h * 3_600 + mi * 60 + sec - offset_min * 60;
    Some(secs * 1_000 + frac_ms)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn precision() {
        assert_eq!(
            with_precision(1_764_633_600_123_456_789, Precision::Ns),
            Some(1_764_633_600_123)
        );
        assert_eq!(with_precision(-1, Precision::Ns), Some(-1));
        assert_eq!(
            with_precision(1_764_633_600, Precision::S),
            Some(1_764_633_600_000)
        );
        assert_eq!(with_precision(i64::MAX, Precision::S), None);
        assert_eq!("us".parse::<Precision>(), Ok(Precision::Us));
        assert!("h".parse::<Precision>().is_err());
    }

    #[test]
    fn magnitude() {
        let t = 1_764_633_600_000i64;
        assert_eq!(text_by_magnitude("1764633600"), Some(t));
        assert_eq!(text_by_magnitude("1764633600.25"), Some(t + 250));
        assert_eq!(text_by_magnitude("1764633600000"), Some(t));
        assert_eq!(text_by_magnitude("1764633600000000"), Some(t));
        assert_eq!(text_by_magnitude("1764633600000000999"), Some(t));
        assert_eq!(text_by_magnitude("0"), Some(0));
        assert_eq!(text_by_magnitude("1764633600.123"), Some(t + 123));
        assert_eq!(text_by_magnitude("1764633600.0009"), Some(t));
        assert_eq!(text_by_magnitude("-1.5"), Some(-1_500));
        assert_eq!(text_by_magnitude("-0.0005"), Some(-1));
        assert_eq!(text_by_magnitude("1.7646336e9"), Some(t));
        assert_eq!(text_by_magnitude("."), None);
        assert_eq!(text_by_magnitude("1.2.3"), None);
        assert_eq!(text_by_magnitude("nan"), None);
        assert_eq!(text_by_magnitude("1e400"), None);
        assert_eq!(
            text_by_magnitude("99999999999999999999999999999999999999"),
            None
        );
        assert_eq!(float_by_magnitude(1.764_633_600_5e9), Some(t + 500));
        assert_eq!(float_by_magnitude(f64::NAN), None);
    }

    #[test]
    fn rfc3339() {
        let t = 1_764_633_600_000i64; // 2025-12-02T00:00:00Z
        assert_eq!(rfc3339_ms("2025-12-02T00:00:00Z"), Some(t));
        assert_eq!(rfc3339_ms("2025-12-02t00:00:00.25z"), Some(t + 250));
        assert_eq!(
            rfc3339_ms("2025-12-02 01:00:00.123456+01:00"),
            Some(t + 123)
        );
        assert_eq!(rfc3339_ms("2025-12-01T23:00:00-01:00"), Some(t));
        assert_eq!(rfc3339_ms("1969-12-31T23:59:59Z"), Some(-1_000));
        assert_eq!(rfc3339_ms("2025-02-29T00:00:00Z"), None);
        assert_eq!(rfc3339_ms("2024-02-29T12:00:00Z"), Some(1_709_208_000_000));
        assert_eq!(rfc3339_ms("2025-12-02T00:00:00"), None);
        assert_eq!(rfc3339_ms("2025-12-02T00:00:00.Z"), None);
        assert_eq!(rfc3339_ms("2025-13-02T00:00:00Z"), None);
    }

    proptest! {
        #[test]
        fn rfc3339_never_panics(s in "\\PC{0,40}") {
            let _ = rfc3339_ms(&s);
            let _ = text_by_magnitude(&s);
        }

        #[test]
        fn rfc3339_roundtrip(days in -700_000i64..2_000_000, secs in 0i64..86_400, ms in 0i64..1000) {
            let (y, m, d) = crate::clock::civil_from_days(days);
            prop_assume!((0..=9999).contains(&y));
            let s = format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{ms:03}Z",
                            secs / 3600, secs / 60 % 60, secs % 60);
            prop_assert_eq!(rfc3339_ms(&s), Some((days * 86_400 + secs) * 1000 + ms));
        }
    }
}
