//! Durations as written in the rules file: `250ms`, `30s`, `5m`, `1h30m`, `1d` — one or more
//! `<digits><unit>` parts, units from the largest down, each at most once (Prometheus's form).

/// Units from the largest down, with their length in milliseconds.
const UNITS: [(&str, i64); 5] = [
    ("d", 86_400_000),
    ("h", 3_600_000),
    ("m", 60_000),
    ("s", 1_000),
    ("ms", 1),
];

/// Parses a duration into milliseconds; `None` when it is not of the documented form or
/// does not fit (the caller names the key and the text).
pub fn parse_ms(text: &str) -> Option<i64> {
    let mut rest = text;
    let mut total: i64 = 0;
    // Index into UNITS of the previous part's unit: the next one must be strictly smaller.
    let mut last_unit: Option<usize> = None;
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 || digits > 12 {
            return None;
        }
        let (number, after) = rest.split_at(digits);
        let letters = after.bytes().take_while(u8::is_ascii_alphabetic).count();
        let (unit, after) = after.split_at(letters);
        let idx = UNITS.iter().position(|(u, _)| *u == unit)?;
        if last_unit.is_some_and(|l| idx <= l) {
            return None;
        }
        last_unit = Some(idx);
        let n: i64 = number.parse().ok()?;
        total = total.checked_add(n.checked_mul(UNITS[idx].1)?)?;
        rest = after;
    }
    Some(total)
}

/// Renders milliseconds back in the same form (`90000` → `1m30s`), for messages and docs.
pub fn format_ms(ms: i64) -> String {
    if ms == 0 {
        return "0s".to_owned();
    }
    let mut out = String::new();
    let mut rest = ms;
    for (unit, len) in UNITS {
        if rest >= len {
            out.push_str(&format!("{}{unit}", rest / len));
            rest %= len;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documented_forms_parse() {
        let cases = [
            ("30s", 30_000),
            ("5m", 300_000),
            ("1h30m", 5_400_000),
            ("250ms", 250),
            ("1d", 86_400_000),
            ("0s", 0),
            ("1m500ms", 60_500),
        ];
        for (text, ms) in cases {
            assert_eq!(parse_ms(text), Some(ms), "{text}");
            assert_eq!(parse_ms(&format_ms(ms)), Some(ms), "{text}");
        }
    }

    #[test]
    fn other_forms_are_refused() {
        for bad in [
            "",
            "5",
            "5 minutes",
            "m",
            "1m1h",
            "1s1s",
            "-5s",
            "1.5s",
            "5S",
            " 5s",
            "1y",
            "9999999999999d",
        ] {
            assert_eq!(parse_ms(bad), None, "{bad:?}");
        }
    }
}
