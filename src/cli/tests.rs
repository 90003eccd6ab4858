//! The `sqd` command line: flags gathered from every mode, refused for the wrong mode, and help
//! that shows one mode's flags when the mode is known.

use super::*;

fn args(words: &[&str]) -> Vec<OsString> {
    std::iter::once("sqd")
        .chain(words.iter().copied())
        .map(OsString::from)
        .collect()
}

fn start_args(words: &[&str]) -> (Mode, StartArgs) {
    let cli = try_parse(args(words)).expect("parses");
    match cli.action {
        Action::Start(a) | Action::Stop(a) => (cli.mode, a),
        Action::Init { .. }
        | Action::Restore(_)
        | Action::CheckRules { .. }
        | Action::Query(_)
        | Action::Compact(_) => {
            panic!("not start")
        }
    }
}

#[test]
fn the_command_is_well_formed() {
    Cli::command().debug_assert();
    for mode in Mode::ALL {
        command(Some(mode)).debug_assert();
    }
}

#[test]
fn each_mode_gets_its_own_flags() {
    let (mode, a) = start_args(&[
        "--mode",
        "worker",
        "start",
        "--id",
        "w1",
        "--leader",
        "h:1",
        "--listen",
        "127.0.0.1:0",
        "--poll-ms",
        "5",
        "--log-format",
        "json",
    ]);
    assert_eq!(mode, Mode::Worker);
    assert_eq!(a.check_mode(mode), Ok(()));
    assert_eq!(a.worker.id.as_deref(), Some("w1"));
    assert_eq!(a.worker.node.leader.as_deref(), Some("h:1"));
    assert_eq!(a.worker.serve.listen.as_deref(), Some("127.0.0.1:0"));
    assert_eq!(a.worker.poll_ms, Some(5));
    assert_eq!(a.worker.log.log_format.as_deref(), Some("json"));
    // A flag two modes share is seen by both.
    assert_eq!(a.client.node.leader.as_deref(), Some("h:1"));
    assert_eq!(a.leader.serve.listen.as_deref(), Some("127.0.0.1:0"));
}

#[test]
fn flags_of_another_mode_are_named_all_at_once() {
    let (mode, a) = start_args(&[
        "--mode",
        "leader",
        "stop",
        "--config",
        "l.toml",
        "--watch",
        "/w",
        "--store",
        "/s",
        "--cluster",
        "c",
    ]);
    assert_eq!(a.config.as_deref(), Some(std::path::Path::new("l.toml")));
    let e = a.check_mode(mode).expect_err("foreign flags");
    assert_eq!(
        e.to_string(),
        "--store, --watch not valid with --mode leader; see `sqd --mode leader start --help`"
    );
}

#[test]
fn the_mode_is_found_before_parsing() {
    assert_eq!(
        mode_in(&args(&["--mode", "client", "start"])),
        Some(Mode::Client)
    );
    assert_eq!(
        mode_in(&args(&["--mode=worker", "start"])),
        Some(Mode::Worker)
    );
    assert_eq!(mode_in(&args(&["start", "--help"])), None);
    assert_eq!(mode_in(&args(&["--mode", "nope", "start"])), None);
    assert_eq!(mode_in(&args(&["--mode"])), None);
}

fn start_help(mode: Option<Mode>) -> String {
    let mut cmd = command(mode);
    cmd.build();
    let start = cmd.find_subcommand_mut("start").expect("start");
    start.render_long_help().to_string()
}

#[test]
fn help_tags_shared_flags_and_shows_one_mode_when_known() {
    let all = start_help(None);
    for needle in [
        "--store",
        "--watch",
        "--state-dir",
        "[leader, worker] Address to serve on",
        "[worker, client] Leader address",
        "[leader] Directory of the durable registry",
        "~/.local/state/sqd/leader",
        "Log filter",
    ] {
        assert!(all.contains(needle), "{needle} missing from:\n{all}");
    }
    let worker = start_help(Some(Mode::Worker));
    assert!(
        worker.contains("--store") && worker.contains("--listen"),
        "{worker}"
    );
    assert!(
        !worker.contains("--state-dir") && !worker.contains("--watch"),
        "{worker}"
    );
    // Hidden flags still parse, to be explained by check_mode.
    let (mode, a) = start_args(&["--mode", "worker", "start", "--state-dir", "/x"]);
    assert!(a.check_mode(mode).is_err());
}

#[test]
fn restore_takes_the_backup_and_the_state_dir() {
    let cli = try_parse(args(&[
        "--mode",
        "leader",
        "restore",
        "--from",
        "/b/leader.sqlite",
        "--state-dir",
        "/s",
    ]))
    .expect("parses");
    match cli.action {
        Action::Restore(r) => {
            assert_eq!(r.from, PathBuf::from("/b/leader.sqlite"));
            assert_eq!(r.state_dir, Some(PathBuf::from("/s")));
        }
        other => panic!("not restore: {other:?}"),
    }
    assert!(
        try_parse(args(&["--mode", "leader", "restore"])).is_err(),
        "--from is required"
    );
}

#[test]
fn query_takes_relative_times_and_repeated_matchers() {
    let cli = try_parse(args(&[
        "--mode", "worker", "query", "--store", "/s", "cpu", "--from", "-15m", "--where", "host=a",
        "--where", "dc!=x",
    ]))
    .expect("parses");
    match cli.action {
        Action::Query(q) => {
            assert_eq!(
                (q.metric.as_str(), q.from.as_str(), q.to.as_str()),
                ("cpu", "-15m", "now")
            );
            assert_eq!(q.matchers, ["host=a", "dc!=x"]);
        }
        _ => panic!("not query"),
    }
}
