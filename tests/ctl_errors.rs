//! sqdctl and the daemons given bad input as a user would: something that is not a leader at
//! `--leader`, impossible ports, ssh targets that would be read as options, huge values, a
//! leader that cannot be reached. Real processes; the "wrong servers" are sockets this test
//! opens on 127.0.0.1.

mod support;

use std::io::{Read, Write};
use std::net::TcpListener;
use std::time::{Duration, Instant};

use support::*;

/// A server on a free loopback port that answers every connection with `answer` (after the
/// client's first bytes when `after_read`), or keeps it open silently when `answer` is empty.
/// It lives as long as the test process; the port is what the test uses.
fn fake_server(answer: &'static [u8], after_read: bool) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr").to_string();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            if !answer.is_empty() {
                let _ = conn.set_read_timeout(Some(Duration::from_secs(5)));
                if after_read {
                    let mut buf = [0u8; 256];
                    let _ = conn.read(&mut buf);
                }
                let _ = conn.write_all(answer);
            }
            // Kept open: the client decides when to give up.
            held.push(conn);
        }
    });
    addr
}

fn one_line(out: &std::process::Output) -> String {
    let err = text(&out.stderr);
    assert_eq!(err.trim().lines().count(), 1, "expected one line: {err}");
    assert!(!err.contains("panicked"), "{err}");
    err
}

#[test]
fn a_server_that_is_not_a_leader_is_named_with_exit_3() {
    let ssh = fake_server(b"SSH-2.0-OpenSSH_9.2p1 Debian\r\n", false);
    let http = fake_server(
        b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        true,
    );
    let silent = fake_server(b"", false);
    for (addr, found) in [
        (&ssh, "SSH-2.0-OpenSSH_9.2p1"),
        (&http, "HTTP/1.1 400 Bad Request"),
        (&silent, "did not answer gRPC"),
    ] {
        let started = Instant::now();
        let out = sqdctl(addr, &["--timeout", "1", "status"]);
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "{addr} took {:?}",
            started.elapsed()
        );
        assert_eq!(out.status.code(), Some(3), "{addr}: {}", text(&out.stderr));
        let err = one_line(&out);
        assert!(err.contains(&format!("no sqd leader at {addr}")), "{err}");
        assert!(err.contains(found), "{err}");
    }
}

#[test]
fn impossible_leader_addresses_are_refused_before_connecting() {
    for (addr, says) in [
        ("127.0.0.1:99999", "outside 1-65535"),
        ("127.0.0.1", "no port"),
        ("127.0.0.1:http", "invalid port"),
    ] {
        let out = sqdctl(addr, &["status"]);
        assert_eq!(out.status.code(), Some(2), "{addr}");
        let err = one_line(&out);
        assert!(err.contains(says) && err.contains("--leader"), "{err}");
    }
}

#[test]
fn ssh_targets_that_ssh_would_read_as_options_are_refused() {
    for target in [
        "u@-oProxyCommand=touch /tmp/sqd-pwned",
        "-oProxyCommand=x@h",
    ] {
        let ssh = format!("--ssh={target}");
        let out = sqdctl("127.0.0.1:1", &["add-client", "a", &ssh, "--path", "/p"]);
        assert_eq!(out.status.code(), Some(2), "{target}");
        assert!(one_line(&out).contains("starting with '-'"));
    }
}

#[test]
fn huge_values_are_cut_in_messages_from_sqdctl_and_the_leader() {
    let huge = "a".repeat(10_000);
    let out = sqdctl(
        "127.0.0.1:1",
        &["add-client", &huge, "--ssh", "u@h", "--path", "/p"],
    );
    assert_eq!(out.status.code(), Some(2));
    let err = one_line(&out);
    assert!(
        err.len() < 400 && err.contains("10000 bytes"),
        "{}",
        err.len()
    );
    // The leader's own refusal of an unknown name.
    let c = Cluster::start(500, 1500);
    let out = c.ctl(&["remove-client", &huge]);
    assert_eq!(out.status.code(), Some(1));
    let err = one_line(&out);
    assert!(err.len() < 400 && err.contains("unknown client"), "{err}");
}

#[test]
fn causes_are_named_once() {
    let out = sqdctl("127.0.0.1:1", &["status"]);
    assert_eq!(out.status.code(), Some(3));
    let err = one_line(&out);
    assert_eq!(err.matches("tcp connect error").count(), 1, "{err}");
    // A daemon's error at the binary edge (the source is both in the message and the chain).
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("file");
    std::fs::write(&file, b"").expect("write");
    let store = file.join("store");
    let out = sqd_output(&[
        "--mode",
        "worker",
        "start",
        "--id",
        "w",
        "--leader",
        "127.0.0.1:1",
        "--store",
        store.to_str().expect("utf-8"),
    ]);
    assert!(!out.status.success());
    let err = text(&out.stderr);
    let last = err.trim().lines().last().unwrap_or_default().to_owned();
    assert!(last.contains("Not a directory"), "{err}");
    assert_eq!(last.matches("Not a directory").count(), 1, "{last}");
}

#[test]
fn a_worker_that_cannot_reach_its_leader_warns_at_once_and_then_rarely() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = dir.path().join("store");
    let args = [
        "--mode",
        "worker",
        "start",
        "--id",
        "w1",
        "--leader",
        "127.0.0.1:1",
        "--store",
        store.to_str().expect("utf-8"),
    ];
    let worker = Proc::spawn("worker", dir.path(), &args, &[("RUST_LOG", "warn")]);
    wait_until(Duration::from_secs(5), "the first warning", || {
        worker
            .log_text()
            .contains("cannot reach the leader")
            .then_some(())
    });
    // Retries go on every few seconds; the next line is due only after 10 s.
    std::thread::sleep(Duration::from_secs(3));
    let log = worker.log_text();
    assert_eq!(log.matches("cannot reach the leader").count(), 1, "{log}");
    assert!(log.contains("127.0.0.1:1"), "{log}");
}
