//! Version handshake rules (C7): nodes and leader must agree on major.minor.

/// This build's version, as advertised at registration.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// The version this node advertises at registration: [`VERSION`], unless tests set
/// `SQD_ADVERTISE_VERSION` to exercise the handshake without building another release.
pub(crate) fn advertised() -> String {
    std::env::var("SQD_ADVERTISE_VERSION").unwrap_or_else(|_| VERSION.to_owned())
}

/// Checks that a node at `node` may join a leader at `leader`.
///
/// The rule is same major.minor: patch releases mix freely, anything else is refused so a
/// rolling upgrade moves the leader and workers within one minor line at a time.
pub fn check_compatible(leader: &str, node: &str) -> Result<(), String> {
    let (Some(l), Some(n)) = (major_minor(leader), major_minor(node)) else {
        return Err(format!(
            "version {node:?} is not a valid version (expected MAJOR.MINOR.PATCH)"
        ));
    };
    if l == n {
        Ok(())
    } else {
        Err(format!(
            "version {node} is incompatible with leader {leader}: major.minor must match; run {}.{}.x on this node",
            l.0, l.1
        ))
    }
}

fn major_minor(v: &str) -> Option<(u64, u64)> {
    let core = v.split(['-', '+']).next()?;
    let mut parts = core.split('.');
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    Some((major, minor))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patch_differences_are_compatible() {
        assert!(check_compatible("1.4.0", "1.4.9").is_ok());
        assert!(check_compatible("0.1.0", "0.1.3-rc1").is_ok());
    }

    #[test]
    fn minor_or_major_differences_are_refused_with_advice() {
        let e = check_compatible("1.4.0", "1.5.0").unwrap_err();
        assert!(e.contains("1.4.x"), "{e}");
        assert!(check_compatible("1.4.0", "2.4.0").is_err());
        assert!(check_compatible("1.4.0", "banana").is_err());
    }
}
