//! Where runtime state goes when the config names no directory: a rule on who runs sqd and
//! their environment, always an absolute path, so that a daemon started inside a checkout
//! never writes its state there.

use std::ffi::OsString;
use std::path::PathBuf;

/// Where root keeps sqd's state (the systemd units allow writing there).
const SYSTEM_STATE_HOME: &str = "/var/lib/sqd";

/// Who runs sqd and the environment variables its default paths come from.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct UserEnv {
    /// Effective user id.
    pub(crate) euid: u32,
    /// `XDG_STATE_HOME`, if set.
    pub(crate) xdg_state_home: Option<OsString>,
    /// `HOME`, if set.
    pub(crate) home: Option<OsString>,
}

impl UserEnv {
    /// The running process's user and environment.
    pub(crate) fn current() -> Self {
        UserEnv {
            euid: nix::unistd::geteuid().as_raw(),
            xdg_state_home: std::env::var_os("XDG_STATE_HOME"),
            home: std::env::var_os("HOME"),
        }
    }

    /// sqd's state home: `/var/lib/sqd` for root, else `$XDG_STATE_HOME/sqd`, else
    /// `$HOME/.local/state/sqd`. Relative values are ignored (the XDG spec says so for
    /// `XDG_STATE_HOME`; for `HOME` it would put state under the working directory).
    pub(crate) fn state_home(&self) -> Result<PathBuf, NoStateHome> {
        if self.euid == 0 {
            return Ok(PathBuf::from(SYSTEM_STATE_HOME));
        }
        let absolute =
            |v: &Option<OsString>| v.as_ref().map(PathBuf::from).filter(|p| p.is_absolute());
        if let Some(xdg) = absolute(&self.xdg_state_home) {
            return Ok(xdg.join("sqd"));
        }
        match absolute(&self.home) {
            Some(home) => Ok(home.join(".local/state/sqd")),
            None => Err(NoStateHome),
        }
    }
}

/// Neither variable a default state directory comes from holds an absolute path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("no default: neither XDG_STATE_HOME nor HOME is an absolute path")]
pub(crate) struct NoStateHome;

#[cfg(test)]
mod tests {
    use super::*;

    fn env(euid: u32, xdg: Option<&str>, home: Option<&str>) -> UserEnv {
        UserEnv {
            euid,
            xdg_state_home: xdg.map(OsString::from),
            home: home.map(OsString::from),
        }
    }

    #[test]
    fn root_uses_var_lib_whatever_the_environment() {
        for e in [
            env(0, None, None),
            env(0, Some("/x"), Some("/root")),
            env(0, Some("rel"), Some("")),
        ] {
            assert_eq!(e.state_home(), Ok(PathBuf::from("/var/lib/sqd")), "{e:?}");
        }
    }

    #[test]
    fn a_user_gets_xdg_state_home_then_home() {
        let e = env(1000, Some("/xdg"), Some("/home/u"));
        assert_eq!(e.state_home(), Ok(PathBuf::from("/xdg/sqd")));
        let e = env(1000, None, Some("/home/u"));
        assert_eq!(
            e.state_home(),
            Ok(PathBuf::from("/home/u/.local/state/sqd"))
        );
        // An empty XDG_STATE_HOME counts as unset (XDG spec).
        let e = env(1000, Some(""), Some("/home/u"));
        assert_eq!(
            e.state_home(),
            Ok(PathBuf::from("/home/u/.local/state/sqd"))
        );
    }

    #[test]
    fn relative_values_never_give_a_relative_home() {
        let e = env(1000, Some("state"), Some("/home/u"));
        assert_eq!(
            e.state_home(),
            Ok(PathBuf::from("/home/u/.local/state/sqd"))
        );
        for e in [
            env(1000, Some("state"), Some("home")),
            env(1000, None, None),
            env(1000, Some(""), Some("")),
        ] {
            assert_eq!(e.state_home(), Err(NoStateHome), "{e:?}");
        }
    }
}
