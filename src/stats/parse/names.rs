//! Metric and label names: validation and the one sanitiser every format uses.
//!
//! Prometheus rules: a metric name matches `[a-zA-Z_:][a-zA-Z0-9_:]*`, a label name
//! `[a-zA-Z_][a-zA-Z0-9_]*`, and names starting with `__` are reserved.
//!
//! [`sanitize`] turns any byte string into a valid name, the same way for every format:
//! 1. every character outside the allowed set becomes `_` (each invalid UTF-8 sequence, as
//!    `String::from_utf8_lossy` counts them, is one character; `:` is allowed in metric
//!    names only);
//! 2. an empty result becomes `_`;
//! 3. a leading digit gets a `_` prefix (`5xx` → `_5xx`);
//! 4. a leading run of two or more `_` collapses to one (`__name__` → `_name__`), so no
//!    sanitised name is reserved.
//!
//! The result is always valid and sanitising is idempotent (property-tested).
//! A label named `client` in the data is renamed `exported_client` (the way Prometheus
//! renames clashing target labels), because sqd sets `client` itself: see [`RESERVED_LABEL`].

/// Which rule set a name follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NameKind {
    /// `[a-zA-Z_:][a-zA-Z0-9_:]*`
    Metric,
    /// `[a-zA-Z_][a-zA-Z0-9_]*`
    Label,
}

/// The label sqd adds to every series; the caller passes its value (the client name).
pub const RESERVED_LABEL: &str = "client";
/// What a `client` label found in the data is renamed to.
pub const EXPORTED_RESERVED_LABEL: &str = "exported_client";

fn allowed(c: char, kind: NameKind) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || (c == ':' && kind == NameKind::Metric)
}

/// True when `name` is valid for `kind` and not reserved (no `__` prefix).
pub fn is_valid(name: &str, kind: NameKind) -> bool {
    let mut chars = name.chars();
    let Some(first) = chars.next() else {
        return false;
    };
    !first.is_ascii_digit()
        && allowed(first, kind)
        && chars.all(|c| allowed(c, kind))
        && !name.starts_with("__")
}

/// Appends the sanitised form of `raw` to `out` (see the module doc for the rules).
pub fn sanitize(raw: &[u8], kind: NameKind, out: &mut String) {
    let start = out.len();
    // Fast path: already valid ASCII names (nearly all real data) are copied as is.
    if let Ok(s) = std::str::from_utf8(raw)
        && is_valid(s, kind)
    {
        out.push_str(s);
        return;
    }
    for chunk in raw.utf8_chunks() {
        for c in chunk.valid().chars() {
            out.push(if allowed(c, kind) { c } else { '_' });
        }
        if !chunk.invalid().is_empty() {
            out.push('_');
        }
    }
    let first = out[start..].chars().next();
    match first {
        None => out.push('_'),
        Some(c) if c.is_ascii_digit() => out.insert(start, '_'),
        Some(_) => {}
    }
    let underscores = out[start..].bytes().take_while(|&b| b == b'_').count();
    if underscores >= 2 {
        out.replace_range(start..start + underscores, "_");
    }
}

/// [`sanitize`] into a new `String` (tests, cold paths).
pub fn sanitized(raw: &[u8], kind: NameKind) -> String {
    let mut s = String::new();
    sanitize(raw, kind, &mut s);
    s
}

/// Appends `bytes` to `out`, replacing each invalid UTF-8 sequence with U+FFFD.
/// Returns true when something was replaced (the caller counts it).
pub fn push_lossy(bytes: &[u8], out: &mut String) -> bool {
    if let Ok(s) = std::str::from_utf8(bytes) {
        out.push_str(s);
        return false;
    }
    for chunk in bytes.utf8_chunks() {
        out.push_str(chunk.valid());
        if !chunk.invalid().is_empty() {
            out.push(char::REPLACEMENT_CHARACTER);
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn examples() {
        let m = |s: &[u8]| sanitized(s, NameKind::Metric);
        let l = |s: &[u8]| sanitized(s, NameKind::Label);
        assert_eq!(m(b"node_cpu_seconds_total"), "node_cpu_seconds_total");
        assert_eq!(m(b"a:b"), "a:b");
        assert_eq!(l(b"a:b"), "a_b");
        assert_eq!(m(b"disk.used-pct"), "disk_used_pct");
        assert_eq!(m(b"5xx"), "_5xx");
        assert_eq!(m(b""), "_");
        assert_eq!(l(b"__name__"), "_name__");
        assert_eq!(l(b"___"), "_");
        assert_eq!(l(b"caf\xc3\xa9"), "caf_");
        assert_eq!(l(b"a\xff\xfeb"), "a__b");
        assert_eq!(l(b"a\xe2\x82b"), "a_b");
        assert_eq!(l(b"\xff1"), "_1");
    }

    #[test]
    fn lossy() {
        let mut s = String::new();
        assert!(!push_lossy(b"web-1", &mut s));
        assert!(push_lossy(b"w\xffb", &mut s));
        assert_eq!(s, "web-1w\u{fffd}b");
    }

    proptest! {
        #[test]
        fn sanitize_is_valid_and_idempotent(raw in proptest::collection::vec(any::<u8>(), 0..40),
                                            metric in any::<bool>()) {
            let kind = if metric { NameKind::Metric } else { NameKind::Label };
            let once = sanitized(&raw, kind);
            prop_assert!(is_valid(&once, kind), "{once:?} invalid");
            prop_assert_eq!(sanitized(once.as_bytes(), kind), once.clone());
            if let Ok(s) = std::str::from_utf8(&raw) && is_valid(s, kind) {
                prop_assert_eq!(once, s);
            }
        }

        #[test]
        fn sanitize_strings(raw in "\\PC{0,20}") {
            let once = sanitized(raw.as_bytes(), NameKind::Label);
            prop_assert!(is_valid(&once, NameKind::Label));
            prop_assert_eq!(sanitized(once.as_bytes(), NameKind::Label), once);
        }
    }
}
