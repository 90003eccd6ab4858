//! Tests of the private-sshd harness (`tests/support/sshd.rs`) itself.

mod support;

use std::process::Stdio;
use std::time::{Duration, Instant};

use support::login::login_user;
use support::sshd::Sshd;
use support::{text, wait_until};

/// Whether `echo hi` ran: a line that is exactly "hi" (ForceCommand's refusal, "This service
/// allows sftp connections only.", contains "hi" as a substring).
fn printed_hi(out: &std::process::Output) -> bool {
    text(&out.stdout).lines().any(|l| l.trim() == "hi")
}

fn assert_host_key_rejected(out: &std::process::Output, what: &str) {
    let stderr = text(&out.stderr);
    assert!(!out.status.success(), "{what}: ssh succeeded");
    assert!(
        stderr.contains("Host key verification failed")
            || stderr.contains("REMOTE HOST IDENTIFICATION HAS CHANGED"),
        "{what}: unexpected stderr: {stderr}"
    );
    assert!(!printed_hi(out), "{what}: the command ran anyway");
}

/// Runs an sftp batch that must succeed; its stdout.
fn sftp_ok(sshd: &Sshd, batch: &str) -> String {
    let out = sshd.sftp_batch(batch);
    assert!(
        out.status.success(),
        "sftp: {}\n{}",
        text(&out.stderr),
        sshd.log_tail()
    );
    text(&out.stdout)
}

#[test]
fn ssh_and_sftp_work_with_the_client_key() {
    let sshd = Sshd::start();
    assert_eq!(
        sshd.target(),
        format!("{}@127.0.0.1:{}", sshd.user, sshd.port)
    );
    let known_hosts = std::fs::read_to_string(&sshd.known_hosts).expect("read known_hosts");
    assert!(
        known_hosts.starts_with(&format!("[127.0.0.1]:{} ssh-ed25519 ", sshd.port)),
        "{known_hosts}"
    );
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(&sshd.client_key)
            .expect("stat the client key")
            .permissions(),
    );
    assert_eq!(mode & 0o777, 0o600);

    let out = sshd.ssh("echo hi");
    assert!(out.status.success(), "ssh: {}", text(&out.stderr));
    assert_eq!(text(&out.stdout).trim(), "hi");

    let remote = sshd.dir.join("remote");
    let out = sshd.ssh(&format!(
        "mkdir -p '{0}' && printf 'payload' > '{0}/stats.1'",
        remote.display()
    ));
    assert!(out.status.success(), "ssh setup: {}", text(&out.stderr));
    let local = sshd.dir.join("fetched");
    let listed = sftp_ok(
        &sshd,
        &format!(
            "ls \"{0}\"\nget \"{0}/stats.1\" \"{1}\"\n",
            remote.display(),
            local.display()
        ),
    );
    assert!(listed.contains("stats.1"), "{listed}");
    assert_eq!(
        std::fs::read_to_string(&local).expect("read the fetched file"),
        "payload"
    );
}

#[test]
fn changed_and_unknown_host_keys_are_rejected() {
    let sshd = Sshd::start();
    let out = sshd.ssh_with(&sshd.wrong_known_hosts, "echo hi");
    assert_host_key_rejected(&out, "wrong_known_hosts");
    assert!(
        text(&out.stderr).contains("REMOTE HOST IDENTIFICATION HAS CHANGED"),
        "{}",
        text(&out.stderr)
    );
    let out = sshd.ssh_with(&sshd.empty_known_hosts, "echo hi");
    assert_host_key_rejected(&out, "empty_known_hosts");
    // The files are left as they were (StrictHostKeyChecking=yes never writes them).
    assert_eq!(
        std::fs::read(&sshd.empty_known_hosts).expect("read empty_known_hosts"),
        b""
    );
    // The right key still works after the failures.
    let out = sshd.ssh("echo hi");
    assert!(out.status.success(), "ssh: {}", text(&out.stderr));
}

#[test]
fn stop_refuses_connections_and_restart_serves_the_same_port() {
    let mut sshd = Sshd::start();
    let port = sshd.port;

    // An open session, to check that stop() also breaks established connections.
    let mut session = sshd
        .ssh_command(&sshd.known_hosts, "echo started; sleep 30")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn a long ssh session");
    wait_until(Duration::from_secs(10), "the session to start", || {
        std::fs::read_to_string(sshd.dir.join("sshd.log"))
            .ok()
            .filter(|l| l.contains("Starting session: command"))
            .map(|_| ())
    });

    let t = Instant::now();
    sshd.stop();
    assert!(!sshd.is_running());
    let status = wait_until(Duration::from_secs(5), "the open session to break", || {
        session.try_wait().ok().flatten()
    });
    assert!(!status.success(), "the session survived stop()");
    let out = sshd.ssh("echo hi");
    assert!(!out.status.success(), "ssh worked with sshd stopped");
    assert!(
        text(&out.stderr).contains("Connection refused"),
        "{}",
        text(&out.stderr)
    );
    assert!(t.elapsed() < Duration::from_secs(10));

    sshd.restart();
    assert_eq!(sshd.port, port);
    assert!(sshd.is_running());
    let out = sshd.ssh("echo hi");
    assert!(
        out.status.success(),
        "ssh after restart: {}",
        text(&out.stderr)
    );
    assert_eq!(text(&out.stdout).trim(), "hi");

    // restart() on a running sshd replaces it.
    let pid = sshd.pid();
    sshd.restart();
    assert_ne!(sshd.pid(), pid);
    assert!(sshd.ssh("true").status.success());
}

#[test]
fn force_command_restricts_the_key_to_sftp() {
    let user = &login_user().name;
    let sshd = Sshd::start_with(&format!(
        "Match User {user}\n    ForceCommand internal-sftp\n"
    ));
    let out = sshd.ssh("echo hi");
    assert!(
        !printed_hi(&out),
        "the command ran despite ForceCommand internal-sftp: {}",
        text(&out.stdout)
    );
    let listed = sftp_ok(&sshd, &format!("ls \"{}\"\n", sshd.dir.display()));
    assert!(listed.contains("sshd_config"), "{listed}");
}

#[test]
fn drop_kills_sshd() {
    let sshd = Sshd::start();
    let pid = sshd.pid().expect("sshd runs");
    let dir = sshd.dir.clone();
    drop(sshd);
    assert!(!dir.exists(), "the private directory outlived the Sshd");
    // Reaped by drop, so the pid is gone (barring an unlikely reuse).
    let alive = std::fs::read_to_string(format!("/proc/{pid}/cmdline"))
        .is_ok_and(|c| c.contains("sshd_config"));
    assert!(!alive, "sshd {pid} outlived the Sshd");
}

#[test]
fn restart_waits_while_another_process_holds_the_port() {
    let mut sshd = Sshd::start();
    let port = sshd.port;
    sshd.stop();
    let squatter = std::net::TcpListener::bind(("127.0.0.1", port)).expect("bind the freed port");
    let release = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(1500));
        drop(squatter);
    });
    let t = Instant::now();
    sshd.restart();
    assert!(
        t.elapsed() >= Duration::from_millis(1000),
        "restart did not wait"
    );
    assert_eq!(sshd.port, port);
    release.join().expect("join the squatter thread");
    let out = sshd.ssh("echo hi");
    assert!(
        out.status.success(),
        "ssh after restart: {}",
        text(&out.stderr)
    );
    assert!(sshd.log_tail().contains("Address already in use"));
}

/// A login shell rc file that hangs (a stale pyenv shim lock in root's `~/.bashrc` stalled every
/// SSH login for up to 60 s) does not slow the harness: as root it logs in as a user whose shell
/// reads no rc file. The sessions get a HOME whose `.bashrc` and `.profile` sleep 30 s, which
/// would also hold up `start`'s readiness probe past its 10 s.
#[test]
fn logins_do_not_wait_for_a_slow_shell_rc_file() {
    if !login_user().dedicated {
        eprintln!("skipped: not root, the harness logs in as the runner with the runner's shell");
        return;
    }
    let home = support::login::traversable_tempdir();
    for rc in [".bashrc", ".profile", ".bash_profile"] {
        let path = home.path().join(rc);
        std::fs::write(&path, "sleep 30\n").expect("write a slow rc file");
        std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o644))
            .expect("chmod the rc file");
    }
    let home = home.path().display().to_string();
    let t = Instant::now();
    let sshd = Sshd::start_with(&format!("SetEnv HOME={home}\n"));
    let out = sshd.ssh("echo \"$HOME\"");
    assert!(out.status.success(), "ssh: {}", text(&out.stderr));
    // The session saw the slow HOME: a shell reading rc files from HOME would have slept.
    assert_eq!(text(&out.stdout).trim(), home);
    assert!(
        t.elapsed() < Duration::from_secs(15),
        "logins waited for the rc file: {:?}",
        t.elapsed()
    );
}
