//! The worker's `remote_write_*` keys and flags: where the shard's new samples are also
//! shipped (Prometheus remote-write 1.0), how big the on-disk queue may grow, how requests
//! are batched, and the optional credentials.

use std::path::PathBuf;

use clap::Args;

use super::rules::Reason;
use super::{Loader, Origin, Slot, Sourced, merge, merge_int, rules};

/// Remote-write settings; present only when `remote_write_url` is set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteWriteConfig {
    /// Key `remote_write_url`: `http[s]://HOST[:PORT]/PATH` of a remote-write receiver.
    pub url: String,
    /// Key `remote_write_tls_ca`, default the system's bundle: the CAs an https receiver's
    /// certificate is checked against (PEM).
    pub tls_ca: PathBuf,
    /// Key `remote_write_queue_bytes`, default 1 GiB: most bytes of queued (compressed)
    /// samples in the store; beyond it a commit's samples are not exported (counted, logged).
    pub queue_bytes: u64,
    /// Key `remote_write_batch_samples`, default 5000: most samples per request.
    pub batch_samples: usize,
    /// Key `remote_write_interval_ms`, default 1000: how long a partial batch waits for more.
    pub interval_ms: u64,
    /// Key `remote_write_max_backoff_s`, default 30: the longest pause between retries.
    pub max_backoff_s: u64,
    /// Key `remote_write_timeout_s`, default 30: one request's deadline.
    pub timeout_s: u64,
    /// Key `remote_write_bearer_token_file`: sent as `Authorization: Bearer …`.
    pub bearer_token_file: Option<PathBuf>,
    /// Keys `remote_write_basic_auth_user` and `remote_write_basic_auth_password_file`.
    pub basic_auth: Option<(String, PathBuf)>,
}

pub(super) const KEYS: &[&str] = &[
    "remote_write_url",
    "remote_write_queue_bytes",
    "remote_write_batch_samples",
    "remote_write_interval_ms",
    "remote_write_max_backoff_s",
    "remote_write_timeout_s",
    "remote_write_bearer_token_file",
    "remote_write_basic_auth_user",
    "remote_write_basic_auth_password_file",
    "remote_write_tls_ca",
];

/// Debian's bundle of the system's trusted CAs (package ca-certificates).
pub const SYSTEM_CA_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";

/// The remote-write flags of `sqd --mode worker`.
#[derive(Debug, Clone, Default, Args)]
pub struct RemoteWriteFlags {
    /// Also ship every sample committed into this worker's shard to this Prometheus
    /// remote-write receiver (http[s]://HOST:PORT/PATH, e.g. VictoriaMetrics' /api/v1/write;
    /// https checks the receiver against remote_write_tls_ca, default the system's CAs).
    #[arg(long, value_name = "URL")]
    pub remote_write_url: Option<String>,
    /// Most bytes of samples queued on disk for the receiver (default 1073741824); beyond it
    /// new samples are not exported (counted in sqd_worker_remote_write_dropped_samples_total).
    #[arg(long, value_name = "BYTES")]
    pub remote_write_queue_bytes: Option<u64>,
}

pub(super) struct RemoteWriteKeys {
    url: Slot<String>,
    queue_bytes: Slot<i128>,
    batch_samples: Slot<i128>,
    interval_ms: Slot<i128>,
    max_backoff_s: Slot<i128>,
    timeout_s: Slot<i128>,
    bearer: Slot<PathBuf>,
    user: Slot<String>,
    password: Slot<PathBuf>,
    tls_ca: Slot<PathBuf>,
}

impl RemoteWriteKeys {
    pub(super) fn take(l: &mut Loader) -> Self {
        RemoteWriteKeys {
            url: l.string("remote_write_url"),
            queue_bytes: l.integer("remote_write_queue_bytes"),
            batch_samples: l.integer("remote_write_batch_samples"),
            interval_ms: l.integer("remote_write_interval_ms"),
            max_backoff_s: l.integer("remote_write_max_backoff_s"),
            timeout_s: l.integer("remote_write_timeout_s"),
            bearer: l.path("remote_write_bearer_token_file"),
            user: l.string("remote_write_basic_auth_user"),
            password: l.path("remote_write_basic_auth_password_file"),
            tls_ca: l.path("remote_write_tls_ca"),
        }
    }
}

/// `http[s]://HOST[:PORT][/PATH]`.
pub(crate) fn url_rule(v: String) -> Result<String, Reason> {
    let uri: hyper::Uri = v
        .parse()
        .map_err(|e| Reason::from(format!("{v:?} is not a URL ({e})")))?;
    if !matches!(uri.scheme_str(), Some("http" | "https")) {
        return Err(format!("{v:?} must start with http:// or https://").into());
    }
    if uri.host().is_none_or(str::is_empty) {
        return Err(format!("{v:?} names no host").into());
    }
    Ok(v)
}

/// The first remote-write key set while the URL is not (it would do nothing).
fn stray_key(keys: &RemoteWriteKeys, flags: &RemoteWriteFlags) -> Option<&'static str> {
    let set = |s: &Slot<i128>| matches!(s, Slot::Set(_));
    [
        (
            "remote_write_queue_bytes",
            flags.remote_write_queue_bytes.is_some() || set(&keys.queue_bytes),
        ),
        ("remote_write_batch_samples", set(&keys.batch_samples)),
        ("remote_write_interval_ms", set(&keys.interval_ms)),
        ("remote_write_max_backoff_s", set(&keys.max_backoff_s)),
        ("remote_write_timeout_s", set(&keys.timeout_s)),
        (
            "remote_write_bearer_token_file",
            matches!(keys.bearer, Slot::Set(_)),
        ),
        (
            "remote_write_basic_auth_user",
            matches!(keys.user, Slot::Set(_)),
        ),
        ("remote_write_tls_ca", matches!(keys.tls_ca, Slot::Set(_))),
    ]
    .into_iter()
    .find_map(|(key, set)| set.then_some(key))
}

type Credentials = (Option<PathBuf>, Option<(String, PathBuf)>);

/// A bearer token file or basic auth (user and password file), never both.
fn credentials(
    l: &mut Loader,
    bearer: Slot<PathBuf>,
    user: Slot<String>,
    password: Slot<PathBuf>,
) -> Credentials {
    let bearer = l.check(
        "remote_write_bearer_token_file",
        bearer,
        rules::absolute_path,
    );
    let user = l.check("remote_write_basic_auth_user", user, |v: String| {
        if v.is_empty() || v.contains(':') {
            Err(Reason::from(format!(
                "{v:?} must be non-empty and hold no ':'"
            )))
        } else {
            Ok(v)
        }
    });
    let password = l.check(
        "remote_write_basic_auth_password_file",
        password,
        rules::absolute_path,
    );
    let basic = match (user, password) {
        (Some(u), Some(p)) => Some((u.value, p.value)),
        (None, None) => None,
        (Some(Sourced { origin, .. }), None) | (None, Some(Sourced { origin, .. })) => {
            l.problem(
                origin,
                "remote_write_basic_auth_user",
                "goes with remote_write_basic_auth_password_file: set both or neither",
            );
            None
        }
    };
    let bearer = Sourced::value_of(bearer);
    if bearer.is_some() && basic.is_some() {
        l.problem(
            Origin::File,
            "remote_write_bearer_token_file",
            "set either a bearer token or basic auth, not both",
        );
    }
    (bearer, basic)
}

/// Checks the remote-write keys laid over their flags; `None` when off or broken (a broken
/// value is reported as a problem, so the load fails anyway).
pub(super) fn load(
    l: &mut Loader,
    keys: RemoteWriteKeys,
    flags: &RemoteWriteFlags,
) -> Option<RemoteWriteConfig> {
    let stray = stray_key(&keys, flags);
    let url = merge(flags.remote_write_url.clone(), keys.url);
    let on = matches!(url, Slot::Set(_));
    if let (false, Some(key)) = (on || matches!(url, Slot::Broken), stray) {
        let why = "has no effect without remote_write_url: set it (or --remote-write-url) or drop this key";
        l.problem(Origin::File, key, why);
    }
    let url = l.check("remote_write_url", url, url_rule);
    let queue = merge_int(flags.remote_write_queue_bytes, keys.queue_bytes);
    let queue = l.ranged::<u64>(
        "remote_write_queue_bytes",
        queue,
        1 << 30,
        (1 << 20, 1 << 40),
    );
    let batch = keys.batch_samples;
    let batch = l.ranged::<usize>("remote_write_batch_samples", batch, 5000, (1, 1_000_000));
    let interval = keys.interval_ms;
    let interval = l.ranged::<u64>("remote_write_interval_ms", interval, 1000, (1, 600_000));
    let backoff = keys.max_backoff_s;
    let backoff = l.ranged::<u64>("remote_write_max_backoff_s", backoff, 30, (1, 3600));
    let timeout = l.ranged::<u64>("remote_write_timeout_s", keys.timeout_s, 30, (1, 600));
    let (bearer, basic) = credentials(l, keys.bearer, keys.user, keys.password);
    let ca = keys.tls_ca.or_default(PathBuf::from(SYSTEM_CA_BUNDLE));
    let ca = l.check("remote_write_tls_ca", ca, rules::absolute_path);
    if !on {
        return None;
    }
    Some(RemoteWriteConfig {
        url: url?.value,
        tls_ca: ca?.value,
        queue_bytes: queue?.value,
        batch_samples: batch?.value,
        interval_ms: interval?.value,
        max_backoff_s: backoff?.value,
        timeout_s: timeout?.value,
        bearer_token_file: bearer,
        basic_auth: basic,
    })
}

#[cfg(test)]
#[path = "remote_write_tests.rs"]
mod tests;
