//! A private OpenSSH server on 127.0.0.1 for end-to-end tests.
//!
//! Each [`Sshd`] owns a temporary directory with its own host key, a client key, an
//! `authorized_keys` file and an `sshd_config`, and runs `sshd -D -e` on a free loopback port
//! accepting only the login user of [`super::login`] (as root the dedicated `sqd-test` user,
//! whose shell reads no rc file; as an ordinary user sshd runs unprivileged and accepts that
//! user). Every wait is bounded; sshd and every process it forked for open connections are
//! killed (SIGKILL) by [`Sshd::stop`] and on drop.
#![allow(dead_code)]

use std::collections::{BTreeSet, HashMap};
use std::fs;
use std::io::{Read, Seek, SeekFrom};
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use super::login::login_user;

/// How long `start`/`restart` wait for sshd to accept the client key.
const READY_TIMEOUT: Duration = Duration::from_secs(10);
/// Upper bound for one helper command (ssh-keygen, `sshd -t`, a readiness probe, `ssh()`).
const COMMAND_TIMEOUT: Duration = Duration::from_secs(20);
/// Ports tried by `start` when the chosen free port is taken before sshd binds it.
const PORT_ATTEMPTS: usize = 5;
/// How long `restart` keeps retrying its port while something else holds it.
const REBIND_TIMEOUT: Duration = Duration::from_secs(5);

pub struct Sshd {
    /// Private directory holding keys, config, log and pid file (removed on drop); owned by the
    /// login user, as its home would be, so that sessions may write there too.
    pub dir: PathBuf,
    pub port: u16,
    /// The login user's name, the only user this sshd lets in.
    pub user: String,
    /// ed25519 private key accepted by this sshd, mode 0600.
    pub client_key: PathBuf,
    /// known_hosts pinning this sshd's host key for `[127.0.0.1]:PORT`.
    pub known_hosts: PathBuf,
    /// known_hosts with a different ed25519 key for `[127.0.0.1]:PORT` (a changed host key).
    pub wrong_known_hosts: PathBuf,
    /// An empty known_hosts file (an unknown host key).
    pub empty_known_hosts: PathBuf,
    child: Option<Child>,
    sshd_bin: PathBuf,
    config: PathBuf,
    log: PathBuf,
    extra_config: String,
    /// `PerSourcePenalties no` when this sshd knows the option (OpenSSH ≥ 9.8 would otherwise
    /// refuse connections from 127.0.0.1 after the failed logins tests provoke on purpose).
    penalties_off: bool,
    host_pub: String,
    wrong_pub: String,
    // Last field: dropped after `Drop::drop` killed sshd.
    _tmp: tempfile::TempDir,
}

enum LaunchError {
    /// sshd exited because its port was taken.
    AddrInUse,
}

impl Sshd {
    /// Generates host and client keys, writes sshd_config, starts sshd on 127.0.0.1:<free port>
    /// and waits (≤ 10 s) until `ssh -o BatchMode=yes ... true` with the client key and
    /// `known_hosts` logs in (ssh exits with the remote status rather than its own 255).
    pub fn start() -> Sshd {
        Sshd::start_with("")
    }

    /// Like [`Sshd::start`], with `extra_config` appended to sshd_config (e.g. a `Match` block;
    /// it comes last, so it may end with one).
    pub fn start_with(extra_config: &str) -> Sshd {
        let tmp = tempfile::Builder::new()
            .prefix("sqd-sshd-")
            .tempdir()
            .expect("create a temporary directory for sshd");
        let dir = tmp.path().to_path_buf();
        let login = login_user();
        login.share_dir(&dir);
        let user = login.name.clone();
        let sshd_bin = find_sshd();
        ensure_privsep_dir();

        let host_key = dir.join("host_ed25519_key");
        let client_key = dir.join("client_ed25519_key");
        let wrong_key = dir.join("wrong_host_ed25519_key");
        keygen(&host_key, "sqd-test-host");
        keygen(&client_key, "sqd-test-client");
        keygen(&wrong_key, "sqd-test-wrong-host");
        let host_pub = public_key(&host_key);
        let wrong_pub = public_key(&wrong_key);
        let authorized_keys = dir.join("authorized_keys");
        fs::write(&authorized_keys, format!("{}\n", public_key(&client_key)))
            .expect("write authorized_keys");
        for f in [&host_key, &client_key, &wrong_key, &authorized_keys] {
            fs::set_permissions(f, fs::Permissions::from_mode(0o600)).expect("chmod 600 a key");
        }
        // sshd reads authorized_keys with the login user's identity.
        login.give(&authorized_keys);
        let empty_known_hosts = dir.join("empty_known_hosts");
        fs::write(&empty_known_hosts, "").expect("write empty_known_hosts");

        let mut sshd = Sshd {
            port: free_port(),
            user,
            client_key,
            known_hosts: dir.join("known_hosts"),
            wrong_known_hosts: dir.join("wrong_known_hosts"),
            empty_known_hosts,
            child: None,
            sshd_bin,
            config: dir.join("sshd_config"),
            log: dir.join("sshd.log"),
            extra_config: extra_config.to_owned(),
            penalties_off: true,
            host_pub,
            wrong_pub,
            dir,
            _tmp: tmp,
        };
        sshd.check_config();

        for attempt in 1..=PORT_ATTEMPTS {
            if attempt > 1 {
                sshd.port = free_port();
            }
            match sshd.launch() {
                Ok(()) => return sshd,
                Err(LaunchError::AddrInUse) => {
                    eprintln!(
                        "sshd harness: port {} was taken (attempt {attempt}/{PORT_ATTEMPTS}), trying another",
                        sshd.port
                    );
                }
            }
        }
        panic!(
            "sshd could not bind a free port in {PORT_ATTEMPTS} attempts; log:\n{}",
            sshd.log_tail()
        );
    }

    /// Kills sshd and every process it forked for open connections (SIGKILL), and waits for sshd
    /// to exit: like a host going down, established connections break too. The port is kept
    /// for [`Sshd::restart`]. Does nothing when sshd is not running.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            kill_tree(&mut child);
        }
    }

    /// Starts sshd again on the same port with the same keys (stopping it first if it runs) and
    /// waits until it accepts the client key.
    pub fn restart(&mut self) {
        self.stop();
        let deadline = Instant::now() + REBIND_TIMEOUT;
        loop {
            match self.launch() {
                Ok(()) => return,
                Err(LaunchError::AddrInUse) => {
                    assert!(
                        Instant::now() < deadline,
                        "sshd could not rebind 127.0.0.1:{} within {REBIND_TIMEOUT:?}; log:\n{}",
                        self.port,
                        self.log_tail()
                    );
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
        }
    }

    /// Whether the sshd process is running.
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// The pid of the listening sshd, when started.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Prefixes the client key in authorized_keys with `options` (e.g. `restrict`), as an
    /// operator locks a puller's key down; sshd reads the file at every login.
    pub fn set_client_key_options(&self, options: &str) {
        let path = self.dir.join("authorized_keys");
        fs::write(
            &path,
            format!("{options} {}\n", public_key(&self.client_key)),
        )
        .expect("rewrite authorized_keys");
    }

    /// Creates `dir` if missing and hands it to the login user: a directory the tests serve
    /// through this sshd (see [`super::login::LoginUser::share_dir`]).
    pub fn share_dir(&self, dir: &Path) {
        login_user().share_dir(dir);
    }

    /// `USER@127.0.0.1:PORT`
    pub fn target(&self) -> String {
        format!("{}@127.0.0.1:{}", self.user, self.port)
    }

    /// The client options shared by `ssh` and `sftp` (everything but the port and destination):
    /// BatchMode, strict host key checking against `known_hosts`, only the client key.
    pub fn client_options(&self, known_hosts: &Path) -> Vec<String> {
        vec![
            "-o".into(),
            "BatchMode=yes".into(),
            "-o".into(),
            "StrictHostKeyChecking=yes".into(),
            "-o".into(),
            // Quoted: ssh splits this option's value on whitespace.
            format!("UserKnownHostsFile=\"{}\"", known_hosts.display()),
            "-o".into(),
            "GlobalKnownHostsFile=/dev/null".into(),
            "-o".into(),
            "IdentitiesOnly=yes".into(),
            "-o".into(),
            "ConnectTimeout=5".into(),
            "-i".into(),
            self.client_key.display().to_string(),
        ]
    }

    /// Runs `command` on the sshd host through ssh (BatchMode, the client key, `known_hosts`),
    /// stdin from /dev/null, killed after 20 s; for test setup only.
    pub fn ssh(&self, command: &str) -> Output {
        self.ssh_with(&self.known_hosts, command)
    }

    /// Like [`Sshd::ssh`] but checking the host key against `known_hosts`.
    pub fn ssh_with(&self, known_hosts: &Path, command: &str) -> Output {
        run_bounded(self.ssh_command(known_hosts, command), COMMAND_TIMEOUT)
    }

    /// The `ssh` command [`Sshd::ssh_with`] runs, for tests that need to spawn it themselves.
    pub fn ssh_command(&self, known_hosts: &Path, command: &str) -> Command {
        let mut cmd = Command::new("ssh");
        cmd.args(self.client_options(known_hosts))
            .arg("-p")
            .arg(self.port.to_string())
            .arg(format!("{}@127.0.0.1", self.user))
            .arg(command);
        cmd
    }

    /// Runs `sftp -b` with `batch` (one sftp command a line) through the same options as
    /// [`Sshd::ssh`]; killed after 20 s.
    pub fn sftp_batch(&self, batch: &str) -> Output {
        let file = tempfile::Builder::new()
            .prefix("sftp-batch-")
            .tempfile_in(&self.dir)
            .expect("create an sftp batch file");
        fs::write(file.path(), batch).expect("write the sftp batch file");
        let mut cmd = Command::new("sftp");
        cmd.arg("-b")
            .arg(file.path())
            .args(self.client_options(&self.known_hosts))
            .arg("-P")
            .arg(self.port.to_string())
            .arg(format!("{}@127.0.0.1", self.user));
        run_bounded(cmd, COMMAND_TIMEOUT)
    }

    /// The last 40 lines of sshd's log (all runs), for assertion messages.
    pub fn log_tail(&self) -> String {
        let text = fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    fn config_text(&self) -> String {
        let q = |p: &Path| format!("\"{}\"", p.display());
        // StrictModes no: the private directory lives under /tmp, whose mode (1777) StrictModes
        // refuses on the path to authorized_keys.
        let mut c = format!(
            "# written by tests/support/sshd.rs\n\
             Port {port}\n\
             ListenAddress 127.0.0.1\n\
             HostKey {host_key}\n\
             PidFile {pid_file}\n\
             AuthorizedKeysFile {authorized_keys}\n\
             StrictModes no\n\
             PubkeyAuthentication yes\n\
             PasswordAuthentication no\n\
             KbdInteractiveAuthentication no\n\
             UsePAM no\n\
             PermitRootLogin prohibit-password\n\
             AllowUsers {user}\n\
             Subsystem sftp internal-sftp\n\
             MaxSessions 100\n\
             MaxStartups 100:30:200\n\
             UseDNS no\n\
             PrintMotd no\n\
             PrintLastLog no\n\
             X11Forwarding no\n\
             LogLevel VERBOSE\n",
            port = self.port,
            host_key = q(&self.dir.join("host_ed25519_key")),
            pid_file = q(&self.dir.join("sshd.pid")),
            authorized_keys = q(&self.dir.join("authorized_keys")),
            user = self.user,
        );
        if self.penalties_off {
            c.push_str("PerSourcePenalties no\n");
        }
        if !self.extra_config.is_empty() {
            c.push_str(&self.extra_config);
            c.push('\n');
        }
        c
    }

    /// Validates the config (`sshd -t`), dropping `PerSourcePenalties` when this sshd predates it.
    fn check_config(&mut self) {
        let mut out = self.test_config();
        if !out.status.success() && text(&out.stderr).contains("PerSourcePenalties") {
            self.penalties_off = false;
            out = self.test_config();
        }
        assert!(
            out.status.success(),
            "sshd rejected its config ({}): {}\n--- config ---\n{}",
            out.status,
            text(&out.stderr).trim(),
            self.config_text()
        );
    }

    fn test_config(&self) -> Output {
        fs::write(&self.config, self.config_text()).expect("write sshd_config");
        let mut cmd = Command::new(&self.sshd_bin);
        cmd.arg("-t").arg("-f").arg(&self.config);
        run_bounded(cmd, COMMAND_TIMEOUT)
    }

    /// Writes the config and known_hosts files for `self.port`, spawns sshd and waits until it
    /// accepts the client key. Panics on anything but a taken port.
    fn launch(&mut self) -> Result<(), LaunchError> {
        fs::write(&self.config, self.config_text()).expect("write sshd_config");
        let host = format!("[127.0.0.1]:{}", self.port);
        fs::write(&self.known_hosts, format!("{host} {}\n", self.host_pub))
            .expect("write known_hosts");
        fs::write(
            &self.wrong_known_hosts,
            format!("{host} {}\n", self.wrong_pub),
        )
        .expect("write wrong_known_hosts");

        let mut log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("open sshd.log");
        let log_start = log.seek(SeekFrom::End(0)).expect("seek sshd.log");
        let stderr = log.try_clone().expect("clone sshd.log");
        let child = Command::new(&self.sshd_bin)
            .arg("-D")
            .arg("-e")
            .arg("-f")
            .arg(&self.config)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(stderr)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {}: {e}", self.sshd_bin.display()));
        self.child = Some(child);

        let deadline = Instant::now() + READY_TIMEOUT;
        let mut last_probe = String::new();
        loop {
            if let Some(status) = self.exit_status() {
                self.child = None;
                let this_run = read_from(&self.log, log_start);
                if this_run.contains("Address already in use") {
                    return Err(LaunchError::AddrInUse);
                }
                panic!(
                    "sshd exited at start ({status}) on port {}; log:\n{}",
                    self.port,
                    self.log_tail()
                );
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                self.stop();
                panic!(
                    "sshd on 127.0.0.1:{} did not accept the client key within {READY_TIMEOUT:?}; \
                     last ssh probe: {}\nlog:\n{}",
                    self.port,
                    last_probe.trim(),
                    self.log_tail()
                );
            }
            let probe = run_bounded(
                self.ssh_command(&self.known_hosts, "true"),
                left.max(Duration::from_secs(1)),
            );
            // ssh exits 255 for its own errors (connection, host key, authentication) and with
            // the remote command's status otherwise: a forced command (e.g. `ForceCommand
            // internal-sftp`) may fail `true`, yet the login worked.
            if probe.status.code().is_some_and(|c| c != 255) {
                return Ok(());
            }
            last_probe = format!("{}: {}", probe.status, text(&probe.stderr));
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn exit_status(&mut self) -> Option<ExitStatus> {
        self.child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        self.stop();
        if std::thread::panicking() {
            eprintln!(
                "----- last lines of sshd.log ({}) -----",
                self.dir.display()
            );
            eprintln!("{}", self.log_tail());
        }
    }
}

/// sshd must be run by absolute path: PATH first, then the usual places.
fn find_sshd() -> PathBuf {
    let from_path = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default();
    let usual = ["/usr/sbin", "/usr/local/sbin", "/sbin", "/usr/bin"].map(PathBuf::from);
    from_path
        .into_iter()
        .filter(|d| d.is_absolute())
        .chain(usual)
        .map(|d| d.join("sshd"))
        .find(|p| fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0))
        .expect(
            "sshd not found in PATH, /usr/sbin, /usr/local/sbin or /sbin (install openssh-server)",
        )
}

/// sshd running as root refuses to start without its privilege-separation directory. Creating it
/// fails harmlessly for an ordinary user, whose sshd does not need it.
fn ensure_privsep_dir() {
    let dir = Path::new("/run/sshd");
    if dir.is_dir() {
        return;
    }
    if fs::create_dir_all(dir).is_ok() {
        let _ = fs::set_permissions(dir, fs::Permissions::from_mode(0o755));
    }
}

fn keygen(path: &Path, comment: &str) {
    let mut cmd = Command::new("ssh-keygen");
    cmd.args(["-q", "-t", "ed25519", "-N", "", "-C", comment, "-f"])
        .arg(path);
    let out = run_bounded(cmd, COMMAND_TIMEOUT);
    assert!(
        out.status.success(),
        "ssh-keygen -f {}: {}",
        path.display(),
        text(&out.stderr)
    );
}

/// "ssh-ed25519 AAAA..." (the comment dropped) from `<private key>.pub`.
fn public_key(private_key: &Path) -> String {
    let mut pub_path = private_key.as_os_str().to_owned();
    pub_path.push(".pub");
    let line = fs::read_to_string(&pub_path).expect("read a generated public key");
    let fields: Vec<&str> = line.split_whitespace().take(2).collect();
    assert_eq!(fields.len(), 2, "malformed public key: {line:?}");
    fields.join(" ")
}

/// A loopback port that was free a moment ago (sshd may still lose a race for it; callers retry).
fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    listener
        .local_addr()
        .expect("local address of a bound listener")
        .port()
}

fn read_from(path: &Path, offset: u64) -> String {
    let mut s = String::new();
    if let Ok(mut f) = fs::File::open(path)
        && f.seek(SeekFrom::Start(offset)).is_ok()
    {
        let _ = f.read_to_string(&mut s);
    }
    s
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Runs `cmd` (stdin from /dev/null) and collects its output, killing it after `timeout`; a
/// timeout is reported by a non-success status and a note at the end of stderr.
pub fn run_bounded(mut cmd: Command, timeout: Duration) -> Output {
    let program = format!("{:?}", cmd.get_program());
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {program}: {e}"));
    let out_rx = drain(child.stdout.take());
    let err_rx = drain(child.stderr.take());
    let deadline = Instant::now() + timeout;
    let mut timed_out = false;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(10)),
            _ => {
                timed_out = true;
                let _ = child.kill();
                break child.wait().expect("wait for a killed child");
            }
        }
    };
    // A grandchild that inherited the pipes could keep them open: bound the reads too.
    let stdout = out_rx
        .recv_timeout(Duration::from_secs(2))
        .unwrap_or_default();
    let mut stderr = err_rx
        .recv_timeout(Duration::from_secs(2))
        .unwrap_or_default();
    if timed_out {
        stderr.extend_from_slice(
            format!("\n[sshd harness: {program} killed after {timeout:?}]\n").as_bytes(),
        );
    }
    Output {
        status,
        stdout,
        stderr,
    }
}

fn drain(pipe: Option<impl Read + Send + 'static>) -> mpsc::Receiver<Vec<u8>> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        if let Some(mut p) = pipe {
            let _ = p.read_to_end(&mut buf);
        }
        let _ = tx.send(buf);
    });
    rx
}

/// Parent pid of every process, from /proc/<pid>/stat.
fn parent_map() -> HashMap<i32, Vec<i32>> {
    let mut children: HashMap<i32, Vec<i32>> = HashMap::new();
    let Ok(entries) = fs::read_dir("/proc") else {
        return children;
    };
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<i32>().ok())
        else {
            continue;
        };
        let Ok(stat) = fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        // "pid (comm) state ppid ...": comm may contain spaces and parentheses.
        let Some(rest) = stat.rfind(')').map(|i| &stat[i + 1..]) else {
            continue;
        };
        if let Some(ppid) = rest
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse::<i32>().ok())
        {
            children.entry(ppid).or_default().push(pid);
        }
    }
    children
}

fn descendants(root: i32) -> BTreeSet<i32> {
    let children = parent_map();
    let mut found = BTreeSet::new();
    let mut todo = vec![root];
    while let Some(p) = todo.pop() {
        for &c in children.get(&p).into_iter().flatten() {
            if found.insert(c) {
                todo.push(c);
            }
        }
    }
    found
}

/// SIGKILLs sshd and its descendants (per-connection sshd processes, sessions, commands), then
/// reaps sshd. The tree is frozen with SIGSTOP first so nothing forks away during the walk.
fn kill_tree(child: &mut Child) {
    if let Ok(root) = i32::try_from(child.id())
        && matches!(child.try_wait(), Ok(None))
    {
        let _ = kill(Pid::from_raw(root), Signal::SIGSTOP);
        let mut stopped = BTreeSet::new();
        for _ in 0..20 {
            let fresh: Vec<i32> = descendants(root)
                .into_iter()
                .filter(|p| !stopped.contains(p))
                .collect();
            if fresh.is_empty() {
                break;
            }
            for p in fresh {
                let _ = kill(Pid::from_raw(p), Signal::SIGSTOP);
                stopped.insert(p);
            }
        }
        for p in stopped {
            let _ = kill(Pid::from_raw(p), Signal::SIGKILL);
        }
    }
    let _ = child.kill();
    let _ = child.wait();
}
