//! Bad input gives a clear one-line error and the documented exit code, never a panic.

mod support;

use std::time::Duration;

use support::*;

fn one_line(out: &std::process::Output) -> String {
    let err = text(&out.stderr);
    assert_eq!(
        err.trim().lines().count(),
        1,
        "expected one line, got: {err}"
    );
    assert!(!err.contains("panicked"), "{err}");
    err
}

#[test]
fn sqdctl_reports_an_unreachable_leader() {
    // Port 1 on loopback: nothing listens there.
    let out = sqdctl("127.0.0.1:1", &["status"]);
    assert_eq!(out.status.code(), Some(3));
    let err = one_line(&out);
    assert!(
        err.contains("cannot reach the leader at 127.0.0.1:1"),
        "{err}"
    );
    assert!(err.contains("SQD_LEADER"), "{err}");
}

#[test]
fn sqdctl_rejects_bad_arguments_before_calling_the_leader() {
    let out = sqdctl(
        "127.0.0.1:1",
        &["add-client", "bad name", "--ssh", "nohost", "--path", "rel"],
    );
    assert_eq!(out.status.code(), Some(2));
    let err = one_line(&out);
    assert!(err.contains("USER@HOST"), "{err}");
    assert!(err.contains("absolute"), "{err}");
    let out = sqdctl(
        "127.0.0.1:1",
        &[
            "add-client",
            "a",
            "--ssh",
            "u@h",
            "--path",
            "/p",
            "--format",
            "xml",
            "--precision",
            "h",
        ],
    );
    assert_eq!(out.status.code(), Some(2));
    let err = one_line(&out);
    assert!(err.contains("--format: unknown format \"xml\""), "{err}");
    assert!(err.contains("--precision"), "{err}");
}

#[test]
fn sqdctl_names_unknown_and_duplicate_clients() {
    let c = Cluster::start(500, 1500);
    c.add_client("a");
    let dup = c.ctl(&["add-client", "a", "--ssh", "u@h", "--path", "/p"]);
    assert_eq!(dup.status.code(), Some(1));
    assert!(one_line(&dup).contains("already exists"));
    let unknown = c.ctl(&["remove-client", "nope"]);
    assert_eq!(unknown.status.code(), Some(1));
    assert!(one_line(&unknown).contains("unknown client \"nope\""));
    let unknown = c.ctl(&["drain-worker", "nope"]);
    assert_eq!(unknown.status.code(), Some(1));
    assert!(one_line(&unknown).contains("unknown worker"));
    let ok = c.ctl(&["remove-client", "a"]);
    assert!(ok.status.success());
    let s = c.status().expect("status");
    assert_eq!(s["clients"].as_array().map(Vec::len), Some(0));
    // The human table answers too.
    let human = c.ctl(&["status"]);
    assert!(
        text(&human.stdout).contains("cluster test"),
        "{}",
        text(&human.stdout)
    );
}

#[test]
fn bad_config_lists_every_problem_with_file_and_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("leader.toml");
    std::fs::write(
        &file,
        "heartbeat_ms = \"fast\"\ncolour = \"blue\"\nlease_ms = 10\n",
    )
    .expect("write");
    let out = sqd_output(&[
        "--mode",
        "leader",
        "start",
        "--config",
        file.to_str().expect("utf-8"),
    ]);
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(!err.contains("panicked"), "{err}");
    for needle in ["heartbeat_ms", "colour", "leader.toml"] {
        assert!(err.contains(needle), "missing {needle}: {err}");
    }
}

#[test]
fn flags_of_another_mode_and_missing_required_values_are_explained() {
    let out = sqd_output(&["--mode", "leader", "start", "--store", "/tmp/x"]);
    assert!(!out.status.success());
    assert!(one_line(&out).contains("--store not valid with --mode leader"));
    let out = sqd_output(&["--mode", "worker", "start", "--leader", "127.0.0.1:1"]);
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(err.contains("--id") && err.contains("--store"), "{err}");
}

#[test]
fn init_writes_a_sample_that_starts() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("leader.toml");
    let path = file.to_str().expect("utf-8");
    let out = sqd_output(&["--mode", "leader", "init", "--config", path]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let again = sqd_output(&["--mode", "leader", "init", "--config", path]);
    assert!(!again.status.success());
    assert!(one_line(&again).contains("already exists"));
    // The sample is a valid config: start from it (on a free port and a temp state dir) and stop.
    let state = dir.path().join("state");
    let mut leader = Proc::spawn(
        "leader",
        dir.path(),
        &leader_args("127.0.0.1:0", &state, &["--config", path]),
        &[],
    );
    let addr = wait_addr_file(&state.join("leader.addr"));
    assert!(addr.starts_with("127.0.0.1:"));
    let out = sqd_output(&[
        "--mode",
        "leader",
        "stop",
        "--state-dir",
        state.to_str().expect("utf-8"),
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        leader
            .wait_exit(Duration::from_secs(10))
            .is_some_and(|s| s.success())
    );
}

#[test]
fn completions_and_man_pages_need_no_leader() {
    for shell in ["bash", "zsh", "fish"] {
        for program in ["sqd", "sqdctl"] {
            let out = sqdctl("127.0.0.1:1", &["completions", shell, "--program", program]);
            assert!(
                out.status.success(),
                "{shell}/{program}: {}",
                text(&out.stderr)
            );
            assert!(text(&out.stdout).contains(program), "{shell}/{program}");
        }
    }
    let out = sqdctl("127.0.0.1:1", &["completions", "tcsh"]);
    assert_eq!(out.status.code(), Some(2), "unknown shell is a usage error");

    let dir = tempfile::tempdir().expect("tempdir");
    let man = dir.path().join("man1");
    let out = sqdctl(
        "127.0.0.1:1",
        &["man", "--out-dir", man.to_str().expect("utf-8")],
    );
    assert!(out.status.success(), "man: {}", text(&out.stderr));
    for page in ["sqd.1", "sqdctl.1", "sqdctl-status.1", "sqdctl-explain.1"] {
        let body = std::fs::read_to_string(man.join(page)).expect(page);
        assert!(
            body.starts_with(".ie") || body.contains(".TH"),
            "{page} is not roff"
        );
    }
}

#[test]
fn sqd_query_names_each_bad_value_and_exits_2() {
    let dir = tempfile::tempdir().expect("tempdir");
    // An empty catalog: the values are checked before anything is read.
    std::fs::write(dir.path().join("catalog.sqlite"), b"").expect("catalog");
    let store = dir.path().to_str().expect("utf-8");
    for (args, names) in [
        (&["--agg", "median"][..], "--agg"),
        (&["--step", "0"], "--step"),
        (&["--from", "yesterday"], "--from"),
        (&["--to", "soon"], "--to"),
        (&["--where", "host"], "--where"),
        (&["--from", "now", "--to", "-1h"], "range is empty"),
    ] {
        let mut all = vec!["--mode", "worker", "query", "--store", store, "cpu"];
        all.extend(args);
        let out = sqd_output(&all);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert!(one_line(&out).contains(names), "{args:?}");
    }
    let out = sqd_output(&[
        "--mode",
        "worker",
        "query",
        "--store",
        "/nonexistent",
        "cpu",
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(one_line(&out).contains("--store"));
}
