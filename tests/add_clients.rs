//! `sqdctl add-clients --from FILE`: a fleet registered in one call and one transaction, all
//! or none, every problem named with its line; real leader and workers.

mod support;

use std::fmt::Write as _;
use std::time::Duration;

use support::*;

fn toml_list(names: impl Iterator<Item = String>) -> String {
    let mut text = String::new();
    for name in names {
        let _ = write!(
            text,
            "[[client]]\nname = \"{name}\"\nssh = \"nobody@127.0.0.1:1\"\npath = \"/var/stats\"\n\n"
        );
    }
    text
}

fn client_count(cluster: &Cluster) -> usize {
    cluster
        .status()
        .and_then(|s| s["clients"].as_array().map(Vec::len))
        .unwrap_or(0)
}

#[test]
fn a_fleet_is_added_in_one_call_all_or_none() {
    let mut cluster = Cluster::start(500, 1500);
    cluster.spawn_worker("w1", &[]);
    cluster.spawn_worker("w2", &[]);
    cluster.wait_alive(2);
    let dir = cluster.dir.path().to_owned();

    // Problems are all named with their lines, and nothing is added (exit 2).
    let csv = dir.join("bad.csv");
    std::fs::write(
        &csv,
        "name,ssh,path\nok-1,nobody@127.0.0.1:1,/var/stats\nbad one,nobody@127.0.0.1:1,/p\n\
         ok-2,-oProxyCommand=x,/p\nok-1,nobody@127.0.0.1:1,/var/stats\n",
    )
    .expect("write list");
    let out = cluster.ctl(&["add-clients", "--from", csv.to_str().expect("utf-8")]);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    for line in [":3:", ":4:", ":5:"] {
        assert!(err.contains(line), "no problem at line {line}: {err}");
    }
    assert!(err.contains("nothing was added"), "{err}");
    assert_eq!(client_count(&cluster), 0);

    // A dry run checks and adds nothing.
    let list = dir.join("fleet.toml");
    std::fs::write(&list, toml_list((0..300).map(|i| format!("host-{i:04}")))).expect("write");
    let list = list.to_str().expect("utf-8");
    let out = cluster.ctl(&["add-clients", "--from", list, "--dry-run"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("dry run: 300"));
    assert_eq!(client_count(&cluster), 0);

    // The real thing: all 300 placed across both workers by one call.
    let out = cluster.ctl(&["add-clients", "--from", list, "--json"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let answer: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let added = answer["added"].as_array().expect("added");
    assert_eq!(added.len(), 300);
    let on = |w: &str| added.iter().filter(|a| a["worker"] == w).count();
    assert_eq!((on("w1"), on("w2")), (150, 150), "{answer}");
    assert_eq!(client_count(&cluster), 300);

    // A list naming a client the leader has is refused whole (exit 1), with the lines.
    let again = dir.join("again.jsonl");
    std::fs::write(
        &again,
        "{\"name\":\"new-1\",\"ssh\":\"nobody@127.0.0.1:1\",\"path\":\"/p\"}\n\
         {\"name\":\"host-0007\",\"ssh\":\"nobody@127.0.0.1:1\",\"path\":\"/p\"}\n",
    )
    .expect("write");
    let out = cluster.ctl(&["add-clients", "--from", again.to_str().expect("utf-8")]);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains(":2: client \"host-0007\" already exists"),
        "{err}"
    );
    assert_eq!(client_count(&cluster), 300);

    // Standard input with an explicit syntax; then a single add-client on top.
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_sqdctl"))
        .args(["--leader", &cluster.leader_addr])
        .args(["add-clients", "--from", "-", "--input-format", "jsonl"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn sqdctl");
    {
        use std::io::Write as _;
        let mut stdin = child.stdin.take().expect("stdin");
        stdin
            .write_all(b"{\"name\":\"piped\",\"ssh\":\"nobody@127.0.0.1:1\",\"path\":\"/p\"}\n")
            .expect("write stdin");
    }
    let out = child.wait_with_output().expect("sqdctl ends");
    assert!(out.status.success(), "{}", text(&out.stderr));
    cluster.add_client("single");
    assert_eq!(client_count(&cluster), 302);

    // Durable: a leader killed at once comes back with every client where it was.
    let before = assignments(&cluster.status().expect("status"));
    cluster.leader.as_mut().expect("leader").kill9();
    let addr = cluster.leader_addr.clone();
    cluster.start_leader(&addr);
    let after = cluster.wait_status(Duration::from_secs(20), "302 clients back", |s| {
        s["clients"].as_array().is_some_and(|c| c.len() == 302)
    });
    let after = assignments(&after);
    assert_eq!(
        before.keys().collect::<Vec<_>>(),
        after.keys().collect::<Vec<_>>()
    );
    for (name, (worker, epoch)) in &before {
        assert_eq!(after[name].1, *epoch, "{name} lost its epoch");
        assert_eq!(&after[name].0, worker, "{name} moved");
    }
}
