//! What a client is (name, SSH target, directory, pattern) and the rules its fields obey,
//! shared by `sqdctl` (early, friendly errors) and the leader (authoritative check). Its
//! protobuf form converts in `services::convert`.

use crate::stats::parse::time::UnknownPrecision;
use crate::stats::parse::{Format, Precision, UnknownName};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientSpec {
    pub name: String,
    /// USER@HOST[:PORT] as given.
    pub ssh: String,
    pub path: String,
    pub key_file: String,
    pub known_hosts: String,
    pub pattern: String,
    /// How the files' stats are parsed; see [`IngestSpec`].
    pub ingest: Box<IngestSpec>,
}

/// A client's parse settings as given to `add-client` (text, so an old peer's empty fields
/// mean the defaults): `format` empty = `auto`, `precision` empty = `ns`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IngestSpec {
    pub format: String,
    /// JSON lines / CSV time field; empty = the format's defaults.
    pub time_field: String,
    /// JSON lines / CSV fields that are labels; empty = every JSON string field.
    pub label_fields: Vec<String>,
    /// Unit of InfluxDB line-protocol timestamps.
    pub precision: String,
}

/// A client's parse settings that this sqd cannot use.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BadIngestSpec {
    #[error("--format: {0}")]
    Format(#[from] UnknownName),
    #[error("--precision: {0}")]
    Precision(#[from] UnknownPrecision),
}

impl IngestSpec {
    pub fn format(&self) -> Result<Format, UnknownName> {
        if self.format.is_empty() {
            return Ok(Format::Auto);
        }
        self.format.parse()
    }

    pub fn precision(&self) -> Result<Precision, UnknownPrecision> {
        if self.precision.is_empty() {
            return Ok(Precision::Ns);
        }
        self.precision.parse()
    }

    /// Every problem, each saying what is expected.
    fn problems(&self) -> Vec<String> {
        let mut problems: Vec<String> = [
            self.format().err().map(|e| format!("--format: {e}")),
            self.precision().err().map(|e| format!("--precision: {e}")),
        ]
        .into_iter()
        .flatten()
        .collect();
        let bad_field = |f: &String| f.is_empty() || f.contains(['\0', '\n', ',']);
        if self.time_field.contains(['\0', '\n']) {
            problems.push(format!(
                "--time-field {:?} must be one field name",
                self.time_field
            ));
        }
        if self.label_fields.iter().any(bad_field) {
            problems.push(format!(
                "--label-fields {:?} must be non-empty field names separated by ','",
                self.label_fields.join(",")
            ));
        }
        problems
    }
}

#[cfg(test)]
impl ClientSpec {
    /// A minimal valid client for unit tests.
    pub(crate) fn example(name: &str) -> Self {
        ClientSpec {
            name: name.into(),
            ssh: "u@h".into(),
            path: "/p".into(),
            key_file: String::new(),
            known_hosts: String::new(),
            pattern: String::new(),
            ingest: Box::default(),
        }
    }
}

/// A parsed USER@HOST[:PORT].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SshTarget {
    pub user: String,
    pub host: String,
    pub port: u16,
}

pub(crate) const MAX_NAME_LEN: usize = 128;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{what} {name:?} is not a valid name: use 1-{MAX_NAME_LEN} letters, digits, '_', '.' or '-', not starting with '.' or '-'"
)]
pub(crate) struct BadName {
    what: &'static str,
    name: String,
}

/// Checks a client or worker name: 1–128 of `[A-Za-z0-9_.-]`, not starting with `.` or `-`.
pub(crate) fn check_name(what: &'static str, name: &str) -> Result<(), BadName> {
    let ok_chars = name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
    if name.is_empty() || name.len() > MAX_NAME_LEN || !ok_chars || name.starts_with(['.', '-']) {
        return Err(BadName {
            what,
            name: crate::text::clip(name),
        });
    }
    Ok(())
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("ssh target {target:?} {why}; expected USER@HOST[:PORT], e.g. stats@10.0.0.5:22")]
pub struct BadSshTarget {
    target: String,
    why: &'static str,
}

// `worker::pull` still gathers its SSH setup errors as text.
impl SshTarget {
    pub fn parse(s: &str) -> Result<Self, BadSshTarget> {
        let bad = |why: &'static str| BadSshTarget {
            target: crate::text::clip(s),
            why,
        };
        let (user, rest) = s.split_once('@').ok_or_else(|| bad("has no user"))?;
        // `ssh` would read a leading '-' as an option (`-oProxyCommand=…` runs a command).
        if user.starts_with('-') {
            return Err(bad("has a user starting with '-'"));
        }
        if user.is_empty() || user.contains(|c: char| c.is_whitespace() || c == '@') {
            return Err(bad("has an invalid user"));
        }
        let (host, port) = if let Some(v6) = rest.strip_prefix('[') {
            let (host, after) = v6
                .split_once(']')
                .ok_or_else(|| bad("has an unclosed '['"))?;
            match after.strip_prefix(':') {
                Some(p) => (host, Some(p)),
                None if after.is_empty() => (host, None),
                None => return Err(bad("has text after ']'")),
            }
        } else {
            match rest.rsplit_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (rest, None),
            }
        };
        if host.starts_with('-') {
            return Err(bad("has a host starting with '-'"));
        }
        if host.is_empty() || host.contains(|c: char| c.is_whitespace() || c == '/' || c == '@') {
            return Err(bad("has an invalid host"));
        }
        let port = match port {
            None => 22,
            Some(p) => match p.parse::<u16>() {
                Ok(p) if p > 0 => p,
                _ => return Err(bad("has an invalid port")),
            },
        };
        Ok(SshTarget {
            user: user.to_owned(),
            host: host.to_owned(),
            port,
        })
    }
}

impl ClientSpec {
    /// Every problem with the spec, each saying what to fix.
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if let Err(e) = check_name("client name", &self.name) {
            problems.push(e.to_string());
        }
        if let Err(e) = SshTarget::parse(&self.ssh) {
            problems.push(e.to_string());
        }
        if !self.path.starts_with('/') {
            problems.push(format!(
                "path {:?} must be an absolute directory on the producing host, e.g. /var/stats",
                crate::text::clip(&self.path)
            ));
        }
        if self.path.contains('\0') || self.pattern.contains('\0') {
            problems.push("path and pattern must not contain NUL bytes".to_owned());
        }
        if self.pattern.contains('/') {
            problems.push(format!(
                "pattern {:?} must match file names only, without '/'",
                crate::text::clip(&self.pattern)
            ));
        }
        for (flag, file) in [
            ("--key", &self.key_file),
            ("--known-hosts", &self.known_hosts),
        ] {
            if !file.is_empty() && !file.starts_with('/') {
                problems.push(format!(
                    "{flag} {:?} must be an absolute path on the worker hosts",
                    crate::text::clip(file)
                ));
            }
        }
        problems.extend(self.ingest.problems());
        problems
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ssh_targets_parse_with_default_port_and_ipv6() {
        assert_eq!(
            SshTarget::parse("u@h").unwrap(),
            SshTarget {
                user: "u".into(),
                host: "h".into(),
                port: 22
            }
        );
        assert_eq!(SshTarget::parse("u@127.0.0.1:2222").unwrap().port, 2222);
        let v6 = SshTarget::parse("u@[::1]:2200").unwrap();
        assert_eq!((v6.host.as_str(), v6.port), ("::1", 2200));
        for bad in [
            "h",
            "@h",
            "u@",
            "u@h:0",
            "u@h:99999",
            "u@h:x",
            "u@[::1",
            "u@a/b",
            "u@-oProxyCommand=touch /tmp/x",
            "-oProxyCommand=x@h",
            "u@[-oProxyCommand=x]:22",
        ] {
            assert!(SshTarget::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn long_values_are_cut_in_errors() {
        let name = "a".repeat(10_000);
        let msg = check_name("client name", &name).unwrap_err().to_string();
        assert!(msg.len() < 300, "{msg}");
        assert!(msg.contains("10000 bytes"), "{msg}");
        let msg = SshTarget::parse(&name).unwrap_err().to_string();
        assert!(msg.len() < 300, "{msg}");
    }

    #[test]
    fn errors_say_what_is_wrong_and_what_is_expected() {
        assert_eq!(
            SshTarget::parse("h").unwrap_err().to_string(),
            "ssh target \"h\" has no user; expected USER@HOST[:PORT], e.g. stats@10.0.0.5:22"
        );
        assert_eq!(
            check_name("client name", "-x").unwrap_err().to_string(),
            "client name \"-x\" is not a valid name: use 1-128 letters, digits, '_', '.' or '-', not starting with '.' or '-'"
        );
    }

    #[test]
    fn names_are_restricted_to_safe_characters() {
        assert!(check_name("client", "host-1.dc_2").is_ok());
        for bad in ["", "..", "-x", "a/b", "a b", "é", &"x".repeat(129)] {
            assert!(check_name("client", bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn all_problems_are_reported() {
        let spec = ClientSpec {
            name: "bad name".into(),
            ssh: "nohost".into(),
            path: "relative".into(),
            key_file: "k".into(),
            known_hosts: String::new(),
            pattern: "a/b".into(),
            ingest: Box::new(IngestSpec {
                format: "xml".into(),
                precision: "h".into(),
                time_field: String::new(),
                label_fields: vec![String::new()],
            }),
        };
        assert_eq!(spec.problems().len(), 8);
        assert!(IngestSpec::default().problems().is_empty());
    }
}
