use std::io::Write as _;

use super::*;
use crate::config::{ConfigError, WorkerConfig, WorkerFlags};

fn load(text: &str, url_flag: Option<&str>) -> Result<WorkerConfig, ConfigError> {
    let mut f = tempfile::Builder::new()
        .suffix(".toml")
        .tempfile()
        .unwrap_or_else(|e| panic!("{e}"));
    f.write_all(text.as_bytes())
        .unwrap_or_else(|e| panic!("{e}"));
    let mut flags = WorkerFlags {
        id: Some("w1".into()),
        store: Some("/tmp/store".into()),
        ..Default::default()
    };
    flags.remote_write.remote_write_url = url_flag.map(str::to_owned);
    WorkerConfig::load(Some(f.path()), &flags)
}

fn problems(r: Result<WorkerConfig, ConfigError>) -> String {
    match r {
        Err(ConfigError::Invalid { problems }) => problems.join("\n"),
        other => panic!("expected problems, got {other:?}"),
    }
}

#[test]
fn off_by_default_and_defaults_when_on() {
    assert_eq!(load("", None).map(|c| c.remote_write).ok(), Some(None));
    let on = load("", Some("http://127.0.0.1:8428/api/v1/write"))
        .unwrap_or_else(|e| panic!("{e}"))
        .remote_write
        .unwrap_or_else(|| panic!("on"));
    assert_eq!(
        *on,
        RemoteWriteConfig {
            url: "http://127.0.0.1:8428/api/v1/write".into(),
            tls_ca: SYSTEM_CA_BUNDLE.into(),
            queue_bytes: 1 << 30,
            batch_samples: 5000,
            interval_ms: 1000,
            max_backoff_s: 30,
            timeout_s: 30,
            bearer_token_file: None,
            basic_auth: None,
        }
    );
}

#[test]
fn keys_are_read_and_the_flag_wins() {
    let text = "remote_write_url = \"http://a:1/w\"\nremote_write_batch_samples = 10\n\
                remote_write_basic_auth_user = \"u\"\n\
                remote_write_basic_auth_password_file = \"/etc/p\"\n";
    let cfg = load(text, Some("http://b:2/w")).unwrap_or_else(|e| panic!("{e}"));
    let rw = cfg.remote_write.unwrap_or_else(|| panic!("on"));
    assert_eq!(rw.url, "http://b:2/w");
    assert_eq!(rw.batch_samples, 10);
    assert_eq!(rw.basic_auth, Some(("u".into(), "/etc/p".into())));
}

#[test]
fn https_is_accepted_with_a_ca_file() {
    let text = "remote_write_tls_ca = \"/etc/sqd/ca.pem\"\n";
    let rw = load(text, Some("https://tsdb.example:8443/api/v1/write"))
        .unwrap_or_else(|e| panic!("{e}"))
        .remote_write
        .unwrap_or_else(|| panic!("on"));
    assert_eq!(rw.tls_ca, std::path::PathBuf::from("/etc/sqd/ca.pem"));
    let p = problems(load(
        "remote_write_tls_ca = \"ca.pem\"\n",
        Some("https://a/w"),
    ));
    assert!(
        p.contains("remote_write_tls_ca") && p.contains("absolute"),
        "{p}"
    );
}

#[test]
fn bad_values_are_named() {
    for (url, says) in [
        ("ftp://x/", "must start with http://"),
        ("not a url", "is not a URL"),
        ("/api/v1/write", "must start with http://"),
    ] {
        let p = problems(load("", Some(url)));
        assert!(
            p.contains("remote-write-url") && p.contains(says),
            "{url}: {p}"
        );
    }
    let p = problems(load("remote_write_queue_bytes = 5\n", Some("http://a/w")));
    assert!(
        p.contains("remote_write_queue_bytes") && p.contains("out of range"),
        "{p}"
    );
}

#[test]
fn settings_without_a_url_or_half_a_credential_are_refused() {
    let p = problems(load("remote_write_batch_samples = 10\n", None));
    assert!(
        p.contains("remote_write_batch_samples") && p.contains("without remote_write_url"),
        "{p}"
    );
    let p = problems(load(
        "remote_write_basic_auth_user = \"u\"\n",
        Some("http://a/w"),
    ));
    assert!(p.contains("set both or neither"), "{p}");
    let text = "remote_write_bearer_token_file = \"/t\"\nremote_write_basic_auth_user = \"u\"\n\
                remote_write_basic_auth_password_file = \"/p\"\n";
    let p = problems(load(text, Some("http://a/w")));
    assert!(p.contains("not both"), "{p}");
    let p = problems(load(
        "remote_write_bearer_token_file = \"rel\"\n",
        Some("http://a/w"),
    ));
    assert!(p.contains("absolute"), "{p}");
}
