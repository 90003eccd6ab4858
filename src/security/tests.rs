use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use proptest::prelude::*;

use super::gate::{Refusal, decide};
use super::token::{Expected, Token, bearer};
use super::*;

fn token(s: &str) -> Token {
    Token::parse(Path::new("t"), s).expect("token")
}

#[test]
fn a_token_is_trimmed_and_must_be_long_and_printable() {
    assert_eq!(token("  0123456789abcdef\n").secret(), "0123456789abcdef");
    assert!(Token::parse(Path::new("t"), "short").is_err());
    assert!(Token::parse(Path::new("t"), "0123456789 abcdef").is_err());
    assert!(Token::parse(Path::new("t"), "0123456789abcdefé").is_err());
}

#[test]
fn the_header_decides() {
    let expected = Expected::new(&token("0123456789abcdef"));
    let ok = decide(Some(b"Bearer 0123456789abcdef"), &expected);
    assert_eq!(ok, Ok(()));
    assert_eq!(decide(Some(b"bearer 0123456789abcdef"), &expected), Ok(()));
    assert_eq!(decide(None, &expected), Err(Refusal::Missing));
    assert_eq!(
        decide(Some(b"Basic 0123456789abcdef"), &expected),
        Err(Refusal::Malformed)
    );
    assert_eq!(decide(Some(b"Bearer"), &expected), Err(Refusal::Malformed));
    assert_eq!(
        decide(Some(b"\xff\xfe"), &expected),
        Err(Refusal::Malformed)
    );
    assert_eq!(
        decide(Some(b"Bearer 0123456789abcdeF"), &expected),
        Err(Refusal::Wrong)
    );
    assert_eq!(bearer("Bearer  x "), Some("x"));
}

proptest! {
    #[test]
    fn only_the_exact_token_passes(a in "[!-~]{16,40}", b in "[!-~]{16,40}") {
        let expected = Expected::new(&token(&a));
        prop_assert!(expected.matches(&a));
        prop_assert_eq!(expected.matches(&b), a == b);
    }
}

#[test]
fn token_files_are_refused_when_others_may_read_them() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (admin, node) = (dir.path().join("admin"), dir.path().join("node"));
    generate_tokens(&admin, &node).expect("generate");
    let a = Token::read(&admin).expect("admin");
    let n = Token::read(&node).expect("node");
    assert_eq!(a.secret().len(), 64);
    assert_ne!(a.secret(), n.secret());
    let mode = std::fs::metadata(&admin)
        .expect("meta")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    // Never overwritten.
    let again = generate_tokens(&admin, &dir.path().join("other"));
    assert!(matches!(again, Err(SecurityError::Exists(_))), "{again:?}");
    assert!(!dir.path().join("other").exists());
    std::fs::set_permissions(&admin, std::fs::Permissions::from_mode(0o640)).expect("chmod");
    let err = Token::read(&admin).expect_err("group-readable");
    assert!(err.to_string().contains("chmod 600"), "{err}");
}

fn leader(tokens: bool, tls: bool, insecure: bool) -> LeaderSecurity {
    let some = |b: bool, p: &str| b.then(|| PathBuf::from(p));
    LeaderSecurity {
        admin_token_file: some(tokens, "/a"),
        node_token_file: some(tokens, "/n"),
        tls_cert: some(tls, "/c"),
        tls_key: some(tls, "/k"),
        tls_client_ca: None,
        allow_insecure: insecure,
    }
}

#[test]
fn a_reachable_leader_needs_tokens_and_tls() {
    let lo: SocketAddr = "127.0.0.1:7070".parse().expect("addr");
    let any: SocketAddr = "0.0.0.0:7070".parse().expect("addr");
    let lan: SocketAddr = "10.1.2.3:7070".parse().expect("addr");
    assert!(check_leader(lo, &leader(false, false, false)).is_ok());
    assert!(
        check_leader(
            "[::1]:7070".parse().expect("addr"),
            &leader(false, false, false)
        )
        .is_ok()
    );
    for addr in [any, lan] {
        let open = check_leader(addr, &leader(false, true, true));
        assert!(
            matches!(open, Err(SecurityError::OpenLeader(_))),
            "{open:?}"
        );
        let plain = check_leader(addr, &leader(true, false, false));
        assert!(matches!(plain, Err(SecurityError::PlaintextLeader(_))));
        assert!(check_leader(addr, &leader(true, false, true)).is_ok());
        assert!(check_leader(addr, &leader(true, true, false)).is_ok());
    }
}

#[test]
fn a_client_sends_its_token_in_plaintext_only_to_loopback() {
    let with = |tls: bool, insecure: bool| NodeSecurity {
        token_file: Some("/t".into()),
        tls_ca: tls.then(|| "/ca".into()),
        allow_insecure: insecure,
        ..Default::default()
    };
    for host in ["127.0.0.1:7070", "localhost:7070", "[::1]:7070"] {
        assert!(check_client(host, &with(false, false)).is_ok(), "{host}");
    }
    let far = check_client("leader.example:7070", &with(false, false));
    assert!(matches!(far, Err(SecurityError::PlaintextClient(_))));
    assert!(check_client("10.0.0.1:7070", &with(true, false)).is_ok());
    assert!(check_client("10.0.0.1:7070", &with(false, true)).is_ok());
    assert!(check_client("10.0.0.1:7070", &NodeSecurity::default()).is_ok());
    assert_eq!(host_of("[::1]:7070"), "::1");
    assert_eq!(host_of("leader:7070"), "leader");
}

#[test]
fn a_node_certificate_names_exactly_its_node() {
    let key = rcgen::KeyPair::generate().expect("key");
    let params = rcgen::CertificateParams::new(vec!["w1.worker.prod".to_owned()]).expect("params");
    let cert = params.self_signed(&key).expect("cert");
    let certs = vec![cert.der().clone()];
    assert!(tls::names(&certs, &tls::node_name("worker", "w1", "prod")));
    assert!(!tls::names(&certs, &tls::node_name("worker", "w2", "prod")));
    assert!(!tls::names(&certs, &tls::node_name("agent", "w1", "prod")));
    assert!(!tls::names(
        &certs,
        &tls::node_name("worker", "w1", "other")
    ));
    assert!(!tls::names(&[], "w1.worker.prod"));
    // A name that is not a DNS name never matches.
    assert!(!tls::names(&certs, "w1 worker"));
}
