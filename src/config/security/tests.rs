use std::path::PathBuf;

use crate::config::{ClientConfig, ClientFlags, ConfigError, LeaderConfig, LeaderFlags};
use crate::config::{NodeFlags, WorkerConfig, WorkerFlags};

fn file(text: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("c.toml");
    std::fs::write(&path, text).expect("write config");
    (dir, path)
}

fn problems(e: ConfigError) -> Vec<String> {
    match e {
        ConfigError::Invalid { problems } => problems,
        other => vec![other.to_string()],
    }
}

fn leader_flags() -> LeaderFlags {
    LeaderFlags {
        state_dir: Some("/tmp/s".into()),
        ..Default::default()
    }
}

#[test]
fn the_leader_takes_its_security_keys_and_flags_win() {
    let (_d, path) = file(
        "admin_token_file = \"/a\"\nnode_token_file = \"/n\"\ntls_cert = \"/c\"\n\
         tls_key = \"/k\"\ntls_client_ca = \"/ca\"\nallow_insecure = true\n",
    );
    let mut flags = leader_flags();
    flags.security.node_token_file = Some("/flag".into());
    let cfg = LeaderConfig::load(Some(&path), &flags).expect("load");
    let s = cfg.security;
    assert_eq!(s.admin_token_file, Some("/a".into()));
    assert_eq!(s.node_token_file, Some("/flag".into()));
    assert_eq!(s.tls_client_ca, Some("/ca".into()));
    assert!(s.allow_insecure);
}

#[test]
fn tls_files_come_in_pairs_and_a_client_ca_needs_a_certificate() {
    let (_d, path) = file("tls_key = \"/k\"\ntls_client_ca = \"/ca\"\nallow_insecure = \"yes\"\n");
    let p = problems(LeaderConfig::load(Some(&path), &leader_flags()).expect_err("bad"));
    assert_eq!(p.len(), 3, "{p:#?}");
    assert!(
        p.iter()
            .any(|l| l.contains("`tls_key`") && l.contains("needs tls_cert"))
    );
    assert!(
        p.iter()
            .any(|l| l.contains("`tls_client_ca`") && l.contains("needs tls_cert"))
    );
    assert!(
        p.iter()
            .any(|l| l.contains("`allow_insecure`") && l.contains("a boolean"))
    );

    let flags = WorkerFlags {
        id: Some("w1".into()),
        store: Some("/s".into()),
        node: NodeFlags {
            security: crate::config::NodeSecurityFlags {
                tls: crate::config::TlsFlags {
                    tls_cert: Some("/c".into()),
                    tls_key: Some("/k".into()),
                    allow_insecure: false,
                },
                ..Default::default()
            },
            ..Default::default()
        },
        ..Default::default()
    };
    let p = problems(WorkerConfig::load(None, &flags).expect_err("no CA"));
    assert_eq!(p.len(), 1, "{p:#?}");
    assert!(p[0].starts_with("flag --tls-cert: needs tls_ca"), "{p:#?}");
}

#[test]
fn nodes_take_token_file_and_a_misspelt_key_is_named() {
    let (_d, path) = file("name = \"h\"\nwatch = \"/w\"\ntoken_file = \"/t\"\ntls_ca = \"/ca\"\n");
    let cfg = ClientConfig::load(Some(&path), &ClientFlags::default()).expect("load");
    assert_eq!(cfg.security.token_file, Some("/t".into()));
    assert_eq!(cfg.security.tls_ca, Some("/ca".into()));
    let (_d, path) = file("name = \"h\"\nwatch = \"/w\"\ntoken_flie = \"/t\"\n");
    let p = problems(ClientConfig::load(Some(&path), &ClientFlags::default()).expect_err("typo"));
    assert!(p[0].contains("did you mean `token_file`?"), "{p:#?}");
}
