//! How user-facing messages show what a user gave and why something failed: long values cut
//! to a readable length, and a chain of causes with each cause named once.

/// Longest value shown whole in a message; longer ones are cut (a 10 KB name would bury the
/// message that explains it).
pub(crate) const SHOWN_MAX: usize = 80;

/// `value` as a message shows it: whole when short, else its first [`SHOWN_MAX`] bytes (on a
/// char boundary) and how long it was.
pub fn clip(value: &str) -> String {
    if value.len() <= SHOWN_MAX {
        return value.to_owned();
    }
    let mut end = SHOWN_MAX;
    while !value.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…({} bytes)", &value[..end], value.len())
}

/// The error and its causes joined by ": ", leaving out a cause whose text the message already
/// ends with (thiserror messages often include their source, and transports wrap an error in
/// one that repeats it: "File exists (os error 17): File exists (os error 17)").
pub fn causes(e: &dyn std::error::Error) -> String {
    let mut parts = vec![e.to_string()];
    let mut source = e.source();
    while let Some(s) = source {
        parts.push(s.to_string());
        source = s.source();
    }
    join_causes(parts)
}

/// [`causes`] over texts: pure, for any chain (anyhow's too).
pub fn join_causes(parts: impl IntoIterator<Item = String>) -> String {
    let mut msg = String::new();
    for part in parts {
        let part = part.trim();
        if part.is_empty() || msg.ends_with(part) || msg.contains(&format!("{part}: ")) {
            continue;
        }
        if !msg.is_empty() {
            msg.push_str(": ");
        }
        msg.push_str(part);
    }
    msg
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn short_values_are_shown_whole_and_long_ones_cut_with_their_length() {
        assert_eq!(clip("web-1"), "web-1");
        let long = "a".repeat(10_000);
        let shown = clip(&long);
        assert!(shown.len() < 120, "{shown}");
        assert!(shown.ends_with("…(10000 bytes)"), "{shown}");
        // Multi-byte characters are never split.
        let wide = "é".repeat(100);
        assert!(clip(&wide).starts_with(&"é".repeat(40)));
    }

    #[test]
    fn a_cause_is_named_once() {
        let parts = [
            "cannot create /x: File exists (os error 17)",
            "File exists (os error 17)",
        ];
        assert_eq!(
            join_causes(parts.map(String::from)),
            "cannot create /x: File exists (os error 17)"
        );
        let parts = [
            "transport error",
            "tcp connect error",
            "tcp connect error",
            "Connection refused (os error 111)",
        ];
        assert_eq!(
            join_causes(parts.map(String::from)),
            "transport error: tcp connect error: Connection refused (os error 111)"
        );
    }

    proptest! {
        #[test]
        fn clipped_values_are_bounded_and_prefixes(s in ".{0,300}") {
            let shown = clip(&s);
            prop_assert!(shown.len() <= SHOWN_MAX + 32);
            let kept = shown.split("…(").next().unwrap_or_default();
            prop_assert!(s.starts_with(kept));
        }

        #[test]
        fn joined_causes_keep_the_first_and_the_last(parts in prop::collection::vec("[a-z ]{1,12}", 1..6)) {
            let joined = join_causes(parts.clone());
            let first = parts[0].trim();
            let last = parts[parts.len() - 1].trim();
            prop_assert!(joined.contains(first) || first.is_empty());
            prop_assert!(joined.contains(last) || last.is_empty());
        }
    }
}
