//! The rule each config value must follow on its own (ranges, names, addresses, paths, enums),
//! as pure functions from the merged value to the typed one or the reason it is refused.

use std::fmt;
use std::net::{Ipv6Addr, SocketAddr};
use std::path::PathBuf;

use super::{LogFormat, TransferMode};

/// Why a value is refused; a problem line shows it after the key it belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Reason(String);

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<String> for Reason {
    fn from(text: String) -> Self {
        Reason(text)
    }
}

impl From<&str> for Reason {
    fn from(text: &str) -> Self {
        Reason(text.to_owned())
    }
}

type Rule<T> = Result<T, Reason>;

pub(super) fn ranged<U: TryFrom<i128>>(v: i128, (lo, hi): (i128, i128)) -> Rule<U> {
    if !(lo..=hi).contains(&v) {
        return Err(format!("{v} is out of range: must be between {lo} and {hi}").into());
    }
    U::try_from(v).map_err(|_| format!("{v} does not fit this platform").into())
}

/// Cluster ids, worker ids and client names: `[A-Za-z0-9_.-]+`, at most `max` characters.
pub(super) fn name(v: String, max: usize) -> Rule<String> {
    if v.is_empty() {
        return Err("must not be empty".into());
    }
    if let Some(c) = v
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-')))
    {
        return Err(format!(
            "{v:?} contains {c:?}; only letters A-Z a-z, digits, '_', '.' and '-' are allowed"
        )
        .into());
    }
    if v.len() > max {
        return Err(format!(
            "{v:?} is {} characters long; at most {max} are allowed",
            v.len()
        )
        .into());
    }
    Ok(v)
}

pub(super) fn socket_addr(v: String) -> Rule<SocketAddr> {
    v.parse().map_err(|_| {
        format!(
            "{v:?} is not a socket address; expected IP:PORT, e.g. 127.0.0.1:7070 or [::1]:7070"
        )
        .into()
    })
}

/// A leader address: HOST:PORT with a non-empty host and a port in 1..=65535.
pub(super) fn leader_addr(v: String) -> Rule<String> {
    const EXPECTED: &str = "expected HOST:PORT, e.g. 127.0.0.1:7070 or leader.example:7070";
    let refuse = |why: String| Err(Reason(why));
    if v.contains("://") {
        return refuse(format!("{v:?} has a scheme; {EXPECTED}"));
    }
    let Some((host, port)) = v.rsplit_once(':') else {
        return refuse(format!("{v:?} has no port; {EXPECTED}"));
    };
    if host.is_empty() {
        return refuse(format!("{v:?} has no host; {EXPECTED}"));
    }
    match port.parse::<u16>() {
        Ok(0) => return refuse(format!("{v:?}: port 0 cannot be connected to; {EXPECTED}")),
        Ok(_) => {}
        Err(_) => return refuse(format!("{v:?}: {port:?} is not a port number; {EXPECTED}")),
    }
    if let Some(inner) = host.strip_prefix('[') {
        let ok = inner
            .strip_suffix(']')
            .is_some_and(|ip| ip.parse::<Ipv6Addr>().is_ok());
        if !ok {
            return refuse(format!("{v:?}: {host:?} is not a bracketed IPv6 address"));
        }
    } else if host.contains(':') {
        return refuse(format!(
            "{v:?}: an IPv6 host must be in brackets, e.g. [::1]:7070"
        ));
    } else if let Some(c) = host
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_')))
    {
        return refuse(format!("{v:?}: the host contains {c:?}; {EXPECTED}"));
    }
    Ok(v)
}

pub(super) fn absolute_path(v: PathBuf) -> Rule<PathBuf> {
    if v.is_absolute() {
        Ok(v)
    } else {
        Err(format!("{} must be an absolute path", v.display()).into())
    }
}

pub(super) fn non_empty_path(v: PathBuf) -> Rule<PathBuf> {
    if v.as_os_str().is_empty() {
        return Err("must not be empty".into());
    }
    Ok(v)
}

/// A file named relative to the directory sqd starts in, made absolute so later reads (a
/// reload) find the same file.
pub(super) fn made_absolute(v: PathBuf) -> Rule<PathBuf> {
    let v = non_empty_path(v)?;
    std::path::absolute(&v).map_err(|e| format!("{v:?} cannot be made absolute: {e}").into())
}

/// `http://HOST:PORT[/prefix]`: the alert sender speaks plain HTTP/1.1 only.
pub(super) fn http_url(v: String) -> Rule<String> {
    let Some(rest) = v.strip_prefix("http://") else {
        return Err(format!(
            "{v:?} is not an http:// URL; expected e.g. http://127.0.0.1:9093 (https is not \
             supported: put a TLS proxy on loopback in front of Alertmanager)"
        )
        .into());
    };
    let host = rest.split('/').next().unwrap_or_default();
    if host.is_empty() || host.contains('@') {
        return Err(format!("{v:?} has no HOST[:PORT] after http://").into());
    }
    Ok(v.trim_end_matches('/').to_owned())
}

pub(super) fn log_level(v: String) -> Rule<String> {
    if v.trim().is_empty() {
        return Err(
            "must not be empty; use a level (error, warn, info, debug, trace) or \
                    directives like \"sqd=debug\""
                .into(),
        );
    }
    Ok(v)
}

pub(super) fn log_format(v: String) -> Rule<LogFormat> {
    match v.as_str() {
        "text" => Ok(LogFormat::Text),
        "json" => Ok(LogFormat::Json),
        _ => Err(format!("{v:?} is not a log format; expected \"text\" or \"json\"").into()),
    }
}

pub(super) fn transfer_mode(v: String) -> Rule<TransferMode> {
    match v.as_str() {
        "auto" => Ok(TransferMode::Auto),
        "sftp" => Ok(TransferMode::Sftp),
        _ => Err(format!(
            "{v:?} is not a transfer mode; expected \"auto\" (batch mode where the host allows \
             it) or \"sftp\""
        )
        .into()),
    }
}
