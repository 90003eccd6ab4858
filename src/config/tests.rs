//! Loading every mode's config from files and flags, and the problems it reports.

use super::*;
use std::io::Write;
use std::net::SocketAddr;

/// A user without XDG_STATE_HOME, so the leader's default state dir is under HOME.
fn user() -> UserEnv {
    UserEnv {
        euid: 1000,
        xdg_state_home: None,
        home: Some("/home/u".into()),
    }
}

fn load_leader(file: Option<&Path>, flags: &LeaderFlags) -> Result<LeaderConfig, ConfigError> {
    LeaderConfig::load_as(file, flags, &user())
}

fn write(text: &str) -> tempfile::NamedTempFile {
    let mut f = tempfile::Builder::new()
        .suffix(".toml")
        .tempfile()
        .expect("temp file");
    f.write_all(text.as_bytes()).expect("write temp file");
    f
}

fn problems(e: ConfigError) -> Vec<String> {
    match e {
        ConfigError::Invalid { problems } => problems,
        other => panic!("expected Invalid, got {other:?}"),
    }
}

fn sample_path(mode: Mode) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("config")
        .join(format!("{}.toml", mode.as_str()))
}

fn default_log() -> LogConfig {
    LogConfig {
        level: "info".into(),
        format: LogFormat::Text,
    }
}

fn default_leader() -> LeaderConfig {
    LeaderConfig {
        listen: "127.0.0.1:7070".parse().expect("addr"),
        metrics: None,
        query_listen: None,
        state_dir: "/home/u/.local/state/sqd/leader".into(),
        cluster: "sqd".into(),
        heartbeat_ms: 1000,
        lease_ms: 3000,
        grace_ms: 500,
        max_moves_per_tick: 8,
        rollup_interval_ms: 60_000,
        rules_file: None,
        alertmanager_url: None,
        security: Default::default(),
        discovery: None,
        host_metrics: default_host_metrics(),
        emitters: crate::config::EmitterConfig {
            keep: 10,
            forget_after_ms: 3_600_000,
        },
        log: default_log(),
    }
}

fn default_host_metrics() -> crate::config::HostMetricsConfig {
    crate::config::HostMetricsConfig {
        interval_ms: 10_000,
        host: crate::hostmetrics::default_host_name(),
    }
}

fn worker_flags() -> WorkerFlags {
    WorkerFlags {
        id: Some("w1".into()),
        store: Some("/tmp/store".into()),
        ..Default::default()
    }
}

#[test]
fn sample_text_is_the_file() {
    for mode in [Mode::Leader, Mode::Worker, Mode::Client] {
        let on_disk = std::fs::read_to_string(sample_path(mode)).expect("sample file");
        assert_eq!(sample(mode), on_disk);
        assert!(sample(mode).contains(&format!("sqd --mode {} start --config", mode.as_str())));
    }
}

#[test]
fn leader_sample_is_the_defaults() {
    let path = sample_path(Mode::Leader);
    let from_file = load_leader(Some(&path), &LeaderFlags::default()).expect("sample");
    assert_eq!(from_file, default_leader());
    let no_file = load_leader(None, &LeaderFlags::default()).expect("defaults");
    assert_eq!(no_file, default_leader());
}

#[test]
fn worker_sample_is_the_defaults_plus_examples() {
    let path = sample_path(Mode::Worker);
    let cfg = WorkerConfig::load(Some(&path), &WorkerFlags::default()).expect("sample");
    assert_eq!(
        cfg,
        WorkerConfig {
            id: "worker-1".into(),
            leader: "127.0.0.1:7070".into(),
            store: "/var/lib/sqd/store".into(),
            listen: None,
            metrics: None,
            capacity: 1000,
            cluster: None,
            ssh_key: None,
            known_hosts: None,
            poll_ms: 1000,
            settle_ms: 1000,
            batch_files: 1000,
            transfers_in_flight: 256,
            max_file_bytes: 4096 * 1024 * 1024,
            transfer: TransferMode::Auto,
            shard: ShardConfig::default(),
            fleet: FleetConfig::default(),
            security: Default::default(),
            discovery: None,
            remote_write: None,
            host_metrics: default_host_metrics(),
            log: default_log(),
        }
    );
}

#[test]
fn client_sample_is_the_defaults_plus_examples() {
    let path = sample_path(Mode::Client);
    let cfg = ClientConfig::load(Some(&path), &ClientFlags::default()).expect("sample");
    assert_eq!(
        cfg,
        ClientConfig {
            complain_after: std::time::Duration::from_secs(60),
            name: "host-1".into(),
            leader: "127.0.0.1:7070".into(),
            watch: "/var/stats".into(),
            security: Default::default(),
            cluster: "sqd".into(),
            discovery: None,
            host_metrics: default_host_metrics(),
            log: default_log(),
        }
    );
}

#[test]
fn every_problem_in_a_file_is_reported_at_once() {
    let f = write("colour = \"red\"\nheartbeat_ms = \"fast\"\nmax_moves_per_tick = 0\n");
    let shown = f.path().display().to_string();
    let e = load_leader(Some(f.path()), &LeaderFlags::default()).unwrap_err();
    let text = e.to_string();
    let p = problems(e);
    assert_eq!(p.len(), 3, "{p:#?}");
    assert!(
        p.iter().all(|l| l.starts_with(&format!("{shown}: key `"))),
        "{p:#?}"
    );
    assert!(p.contains(&format!(
        "{shown}: key `heartbeat_ms`: expected an integer, found string \"fast\""
    )));
    assert!(p.iter().any(|l| l.starts_with(&format!(
        "{shown}: key `colour`: unknown key (valid keys: listen, metrics, state_dir,"
    ))));
    assert!(p.iter().any(|l| l.starts_with(&format!(
        "{shown}: key `max_moves_per_tick`: 0 is out of range"
    ))));
    assert_eq!(text.lines().count(), 3);
}

#[test]
fn a_misspelt_key_gets_a_suggestion() {
    let f = write("heartbeat = 1000\n");
    let p = problems(load_leader(Some(f.path()), &LeaderFlags::default()).unwrap_err());
    assert!(p[0].contains("did you mean `heartbeat_ms`?"), "{p:#?}");
}

#[test]
fn floats_and_negative_integers_are_rejected() {
    let f = write("heartbeat_ms = 1000.0\ngrace_ms = -1\n");
    let p = problems(load_leader(Some(f.path()), &LeaderFlags::default()).unwrap_err());
    assert_eq!(p.len(), 2, "{p:#?}");
    assert!(p[0].ends_with("key `heartbeat_ms`: expected an integer, found float 1000.0"));
    assert!(p[1].contains("key `grace_ms`: -1 is out of range"));
}

#[test]
fn flags_override_the_file() {
    let f = write("listen = \"127.0.0.1:1\"\ncluster = \"a\"\nlog_format = \"text\"\n");
    let flags = LeaderFlags {
        serve: ServeFlags {
            listen: Some("[::1]:9000".into()),
            cluster: Some("b".into()),
            ..Default::default()
        },
        heartbeat_ms: Some(100),
        lease_ms: Some(600),
        log: LogFlags {
            log_format: Some("json".into()),
            ..Default::default()
        },
        ..Default::default()
    };
    let cfg = load_leader(Some(f.path()), &flags).expect("valid");
    assert_eq!(
        cfg.listen,
        "[::1]:9000".parse::<SocketAddr>().expect("addr")
    );
    assert_eq!(cfg.cluster, "b");
    assert_eq!((cfg.heartbeat_ms, cfg.lease_ms), (100, 600));
    assert_eq!(cfg.log.format, LogFormat::Json);

    let f = write("id = \"from-file\"\nstore = \"/a\"\ncapacity = 5\n");
    let flags = WorkerFlags {
        id: Some("from-flag".into()),
        capacity: Some(7),
        ..Default::default()
    };
    let cfg = WorkerConfig::load(Some(f.path()), &flags).expect("valid");
    assert_eq!((cfg.id.as_str(), cfg.capacity), ("from-flag", 7));
    assert_eq!(cfg.store, PathBuf::from("/a"));
}

#[test]
fn flags_alone_make_a_config() {
    let cfg = WorkerConfig::load(None, &worker_flags()).expect("valid");
    assert_eq!(cfg.id, "w1");
    assert_eq!(cfg.store, PathBuf::from("/tmp/store"));
    assert_eq!(cfg.leader, "127.0.0.1:7070");
    let cfg = ClientConfig::load(
        None,
        &ClientFlags {
            name: Some("h".into()),
            watch: Some("/w".into()),
            node: NodeFlags {
                leader: Some("leader.example:7070".into()),
                ..Default::default()
            },
            ..Default::default()
        },
    )
    .expect("valid");
    assert_eq!(cfg.leader, "leader.example:7070");
}

#[test]
fn missing_required_keys_name_the_flag() {
    let p = problems(WorkerConfig::load(None, &WorkerFlags::default()).unwrap_err());
    assert_eq!(p.len(), 2, "{p:#?}");
    assert_eq!(p[0], "key `id` is required: pass --id ID");
    assert_eq!(p[1], "key `store` is required: pass --store DIR");

    let f = write("id = \"w\"\n");
    let shown = f.path().display().to_string();
    let p = problems(WorkerConfig::load(Some(f.path()), &WorkerFlags::default()).unwrap_err());
    assert_eq!(
        p,
        vec![format!(
            "key `store` is required: set it in {shown} or pass --store DIR"
        )]
    );

    let p = problems(ClientConfig::load(None, &ClientFlags::default()).unwrap_err());
    assert!(
        p[0].contains("--name NAME") && p[1].contains("--watch DIR"),
        "{p:#?}"
    );
}

#[test]
fn lease_below_twice_heartbeat_is_rejected() {
    let f = write("heartbeat_ms = 1000\nlease_ms = 1000\n");
    let shown = f.path().display().to_string();
    let p = problems(load_leader(Some(f.path()), &LeaderFlags::default()).unwrap_err());
    assert_eq!(
        p,
        vec![format!(
            "{shown}: key `lease_ms`: 1000 must be at least 2 × heartbeat_ms (1000)"
        )]
    );

    // Mixed sources: the blamed value is named by its own source, the other one too.
    let flags = LeaderFlags {
        heartbeat_ms: Some(1000),
        ..Default::default()
    };
    let f = write("lease_ms = 1500\n");
    let p = problems(load_leader(Some(f.path()), &flags).unwrap_err());
    assert!(p[0].contains("key `lease_ms`: 1500 must be at least 2 × heartbeat_ms (1000, from flag --heartbeat-ms)"), "{p:#?}");

    // A flag heartbeat against the default lease blames the flag.
    let flags = LeaderFlags {
        heartbeat_ms: Some(2000),
        ..Default::default()
    };
    let p = problems(load_leader(None, &flags).unwrap_err());
    assert_eq!(p.len(), 1, "{p:#?}");
    assert!(
        p[0].starts_with("flag --heartbeat-ms: 2000 needs lease_ms"),
        "{p:#?}"
    );
}

#[test]
fn grace_above_lease_is_rejected() {
    let flags = LeaderFlags {
        heartbeat_ms: Some(100),
        lease_ms: Some(400),
        grace_ms: Some(401),
        ..Default::default()
    };
    let p = problems(load_leader(None, &flags).unwrap_err());
    assert_eq!(
        p,
        vec!["flag --grace-ms: 401 must be at most lease_ms (400)".to_string()]
    );
}

#[test]
fn bad_socket_addresses_are_rejected() {
    for bad in ["localhost:7070", "127.0.0.1", "::1:7070", ""] {
        let flags = LeaderFlags {
            serve: ServeFlags {
                listen: Some(bad.into()),
                ..Default::default()
            },
            ..Default::default()
        };
        let p = problems(load_leader(None, &flags).unwrap_err());
        assert!(p[0].starts_with("flag --listen: "), "{p:#?}");
        assert!(p[0].contains("not a socket address"), "{p:#?}");
    }
    let f = write("id = \"w\"\nstore = \"/s\"\nlisten = \"nope\"\n");
    let p = problems(WorkerConfig::load(Some(f.path()), &WorkerFlags::default()).unwrap_err());
    assert!(
        p[0].contains("key `listen`: \"nope\" is not a socket address"),
        "{p:#?}"
    );
}

#[test]
fn bad_leader_addresses_are_rejected() {
    for (bad, why) in [
        ("nohost", "has no port"),
        ("h:notaport", "is not a port number"),
        (":7070", "has no host"),
        ("h:70000", "is not a port number"),
        ("h:0", "port 0"),
        ("http://h:7070", "has a scheme"),
        ("::1:7070", "in brackets"),
        ("[zz]:7070", "bracketed IPv6"),
        ("a b:7070", "host contains"),
    ] {
        let flags = WorkerFlags {
            node: NodeFlags {
                leader: Some(bad.into()),
                ..Default::default()
            },
            ..worker_flags()
        };
        let p = problems(WorkerConfig::load(None, &flags).unwrap_err());
        assert_eq!(p.len(), 1, "{bad}: {p:#?}");
        assert!(p[0].starts_with("flag --leader: "), "{bad}: {p:#?}");
        assert!(p[0].contains(why), "{bad}: {p:#?}");
    }
    for good in ["[::1]:7070", "leader-1.example.com:1", "10.0.0.1:65535"] {
        let flags = WorkerFlags {
            node: NodeFlags {
                leader: Some(good.into()),
                ..Default::default()
            },
            ..worker_flags()
        };
        assert_eq!(WorkerConfig::load(None, &flags).expect(good).leader, good);
    }
    let f = write("name = \"c\"\nwatch = \"/w\"\nleader = \"nohost\"\n");
    let p = problems(ClientConfig::load(Some(f.path()), &ClientFlags::default()).unwrap_err());
    assert!(
        p[0].contains("key `leader`: \"nohost\" has no port"),
        "{p:#?}"
    );
}

#[test]
fn transfer_mode_is_auto_or_sftp() {
    let f = write("id = \"w\"\nstore = \"/s\"\ntransfer = \"scp\"\n");
    let p = problems(WorkerConfig::load(Some(f.path()), &WorkerFlags::default()).unwrap_err());
    assert!(
        p[0].contains("key `transfer`: \"scp\" is not a transfer mode"),
        "{p:#?}"
    );
    let flags = WorkerFlags {
        transfer: Some("sftp".into()),
        ..WorkerFlags::default()
    };
    let cfg = WorkerConfig::load(Some(f.path()), &flags).expect("the flag wins");
    assert_eq!(cfg.transfer, TransferMode::Sftp);
}

#[test]
fn bad_log_format_is_rejected() {
    let f = write("log_format = \"xml\"\nlog_level = \"\"\n");
    let p = problems(load_leader(Some(f.path()), &LeaderFlags::default()).unwrap_err());
    assert_eq!(p.len(), 2, "{p:#?}");
    assert!(
        p[0].contains("key `log_level`: must not be empty"),
        "{p:#?}"
    );
    assert!(
        p[1].contains(
            "key `log_format`: \"xml\" is not a log format; expected \"text\" or \"json\""
        ),
        "{p:#?}"
    );
    let flags = ClientFlags {
        name: Some("c".into()),
        watch: Some("/w".into()),
        log: LogFlags {
            log_format: Some("JSON".into()),
            ..Default::default()
        },
        ..Default::default()
    };
    let p = problems(ClientConfig::load(None, &flags).unwrap_err());
    assert!(p[0].starts_with("flag --log-format: \"JSON\""), "{p:#?}");
}

#[test]
fn names_follow_the_charset_and_length_rules() {
    let long = "a".repeat(65);
    let flags = LeaderFlags {
        serve: ServeFlags {
            cluster: Some(long),
            ..Default::default()
        },
        ..Default::default()
    };
    let p = problems(load_leader(None, &flags).unwrap_err());
    assert!(p[0].contains("at most 64"), "{p:#?}");
    let flags = WorkerFlags {
        id: Some("w 1".into()),
        serve: ServeFlags {
            cluster: Some(String::new()),
            ..Default::default()
        },
        ..worker_flags()
    };
    let p = problems(WorkerConfig::load(None, &flags).unwrap_err());
    assert_eq!(p.len(), 2, "{p:#?}");
    assert!(
        p[0].starts_with("flag --id: \"w 1\" contains ' '"),
        "{p:#?}"
    );
    assert_eq!(p[1], "flag --cluster: must not be empty");
    let name = "n".repeat(128);
    let flags = ClientFlags {
        name: Some(name.clone()),
        watch: Some("/w".into()),
        ..Default::default()
    };
    assert_eq!(ClientConfig::load(None, &flags).expect("128 ok").name, name);
}

#[test]
fn missing_file_is_a_read_error_naming_the_path() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("absent.toml");
    match load_leader(Some(&path), &LeaderFlags::default()) {
        Err(e @ ConfigError::Read { .. }) => {
            assert!(e.to_string().contains(&path.display().to_string()), "{e}");
        }
        other => panic!("expected Read, got {other:?}"),
    }
    // A directory cannot be read as a file either.
    let e = ClientConfig::load(Some(dir.path()), &ClientFlags::default()).unwrap_err();
    assert!(matches!(e, ConfigError::Read { .. }), "{e:?}");
}

#[test]
fn syntax_error_names_the_path_and_line() {
    let f = write("listen = \"127.0.0.1:7070\"\nheartbeat_ms = = 3\n");
    let e = load_leader(Some(f.path()), &LeaderFlags::default()).unwrap_err();
    let ConfigError::Syntax { path, message } = &e else {
        panic!("expected Syntax, got {e:?}");
    };
    assert_eq!(path, f.path());
    assert!(message.starts_with("line 2, column"), "{message}");
    assert!(!message.contains('\n'), "{message}");
    let text = e.to_string();
    assert!(
        text.starts_with(&format!("{}: not valid TOML: line 2", f.path().display())),
        "{text}"
    );
}

#[test]
fn a_section_is_a_wrong_type_or_an_unknown_key() {
    let f = write("id = \"w\"\nstore = \"/s\"\n[leader]\nhost = \"x\"\n");
    let p = problems(WorkerConfig::load(Some(f.path()), &WorkerFlags::default()).unwrap_err());
    assert_eq!(p.len(), 1, "{p:#?}");
    assert!(
        p[0].ends_with("key `leader`: expected a string, found a table"),
        "{p:#?}"
    );
}

#[test]
fn mode_names() {
    assert_eq!(Mode::Leader.as_str(), "leader");
    assert_eq!(Mode::Worker.as_str(), "worker");
    assert_eq!(Mode::Client.as_str(), "client");
}

#[test]
fn the_default_state_dir_is_never_relative() {
    let root = UserEnv { euid: 0, ..user() };
    let cfg = LeaderConfig::load_as(None, &LeaderFlags::default(), &root).expect("root");
    assert_eq!(cfg.state_dir, PathBuf::from("/var/lib/sqd/leader"));
    let xdg = UserEnv {
        xdg_state_home: Some("/xdg".into()),
        ..user()
    };
    let cfg = LeaderConfig::load_as(None, &LeaderFlags::default(), &xdg).expect("xdg");
    assert_eq!(cfg.state_dir, PathBuf::from("/xdg/sqd/leader"));

    // No usable environment: the key becomes required, and a flag or the file satisfies it.
    let homeless = UserEnv {
        euid: 1000,
        xdg_state_home: None,
        home: Some("relative".into()),
    };
    let p = problems(LeaderConfig::load_as(None, &LeaderFlags::default(), &homeless).unwrap_err());
    assert_eq!(
        p,
        vec![
            "key `state_dir` is required here (no default: neither XDG_STATE_HOME nor HOME is \
             an absolute path): pass --state-dir DIR"
                .to_string()
        ]
    );
    let flags = LeaderFlags {
        state_dir: Some("rel/state".into()),
        ..Default::default()
    };
    let cfg = LeaderConfig::load_as(None, &flags, &homeless).expect("flag");
    assert_eq!(cfg.state_dir, PathBuf::from("rel/state"));
    let f = write("state_dir = \"/srv/sqd\"\n");
    let cfg =
        LeaderConfig::load_as(Some(f.path()), &LeaderFlags::default(), &homeless).expect("file");
    assert_eq!(cfg.state_dir, PathBuf::from("/srv/sqd"));
}

#[test]
fn fleet_keys_take_flags_over_the_file_and_name_bad_values() {
    let file = write("max_reconnect_s = 60\nssh_spawns_per_s = 0\norphan_after_s = 120\n");
    let err = WorkerConfig::load(Some(file.path()), &worker_flags()).unwrap_err();
    let all = problems(err).join("\n");
    assert!(all.contains("ssh_spawns_per_s"), "{all}");
    assert!(!all.contains("max_reconnect_s"), "{all}");
    let flags = WorkerFlags {
        ssh_spawns_per_s: Some(3),
        orphan_after_s: Some(30),
        ..worker_flags()
    };
    let cfg = WorkerConfig::load(Some(file.path()), &flags).expect("valid");
    assert_eq!(
        cfg.fleet,
        FleetConfig {
            max_reconnect_s: 60,
            ssh_spawns_per_s: 3,
            orphan_after_s: 30,
        }
    );
}

#[test]
fn the_query_api_is_off_unless_an_address_is_given() {
    let cfg = load_leader(None, &LeaderFlags::default()).expect("defaults");
    assert_eq!(cfg.query_listen, None);
    let f = write("query_listen = \"127.0.0.1:9090\"\n");
    let cfg = load_leader(Some(f.path()), &LeaderFlags::default()).expect("valid");
    assert_eq!(cfg.query_listen, "127.0.0.1:9090".parse().ok());
    let flags = LeaderFlags {
        query_listen: Some("127.0.0.1:0".into()),
        ..Default::default()
    };
    let cfg = load_leader(Some(f.path()), &flags).expect("valid");
    assert_eq!(cfg.query_listen, "127.0.0.1:0".parse().ok());
    let flags = LeaderFlags {
        query_listen: Some("grafana".into()),
        ..Default::default()
    };
    let p = problems(load_leader(None, &flags).unwrap_err());
    assert!(p[0].starts_with("flag --query-listen: "), "{p:#?}");
    assert!(
        p[0].contains("\"grafana\" is not a socket address"),
        "{p:#?}"
    );
}

#[test]
fn rules_file_is_made_absolute_and_alertmanager_must_be_plain_http() {
    let f = write("rules_file = \"rules.toml\"\nalertmanager_url = \"http://127.0.0.1:9093/\"\n");
    let cfg = load_leader(Some(f.path()), &LeaderFlags::default()).expect("valid");
    let rules = cfg.rules_file.expect("rules_file");
    assert!(
        rules.is_absolute() && rules.ends_with("rules.toml"),
        "{rules:?}"
    );
    assert_eq!(
        cfg.alertmanager_url.as_deref(),
        Some("http://127.0.0.1:9093")
    );
    let f = write("alertmanager_url = \"https://am:9093\"\n");
    let p = problems(load_leader(Some(f.path()), &LeaderFlags::default()).unwrap_err());
    assert!(
        p[0].contains("alertmanager_url") && p[0].contains("not an http:// URL"),
        "{p:#?}"
    );
}
