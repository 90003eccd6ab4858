//! One multiplexed SSH session per client with SFTP on top (openssh `native-mux` over the
//! system OpenSSH client): host keys checked strictly against a pinned known_hosts (D5), key
//! files with group/other permissions refused, every failure classified into an error that
//! says what to fix. Where the host lets the key run commands and has the GNU tools, whole
//! batches are claimed, streamed and removed by one remote process each ("batch mode", see
//! docs/ARCHITECTURE.md) instead of several SFTP requests per file.

use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use std::sync::Arc;

use bytes::BytesMut;
use futures_util::StreamExt;
use openssh::{ControlPersist, KnownHosts, Session, SessionBuilder, Stdio};
use tokio::io::AsyncWriteExt;

use super::batch;
pub(crate) use super::batch::{BatchEnd, BatchPlan, StreamSink, StreamedFile, sink_failed};
use openssh_sftp_client::{Sftp, SftpOptions};

pub use crate::files::{EntryKind, RemoteEntry};
use crate::spec::SshTarget;
use crate::store::StoreError;

/// What a worker needs to reach one client.
#[derive(Debug, Clone)]
pub struct SshParams {
    pub target: SshTarget,
    pub key_file: Option<PathBuf>,
    pub known_hosts: Option<PathBuf>,
    /// Where the control sockets live (short path: unix sockets are limited to ~100 bytes).
    pub control_dir: PathBuf,
    pub connect_timeout: Duration,
    /// Whether batch mode may be used when the host supports it.
    pub transfer: TransferMode,
}

/// How files travel (worker key `transfer`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TransferMode {
    /// Batch mode when the key may run `tar`, `mv` and `xargs` (GNU) on the host, else SFTP.
    #[default]
    Auto,
    /// SFTP requests only (for keys that must not run commands, or to compare).
    Sftp,
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum TransportError {
    #[error(
        "host key of {host} is not in {known_hosts}; verify the host's fingerprint, then add it (ssh-keyscan -p PORT HOST >> FILE)"
    )]
    HostKeyUnknown { host: String, known_hosts: String },
    #[error(
        "host key of {host} CHANGED (does not match {known_hosts}); refusing to connect: verify the host, then fix the known_hosts entry"
    )]
    HostKeyChanged { host: String, known_hosts: String },
    #[error(
        "authentication to {target} failed (key {key}); install the worker's public key in the user's authorized_keys"
    )]
    Auth { target: String, key: String },
    #[error("key file {path} is readable by group or others; run chmod 600 {path}")]
    KeyPermissions { path: String },
    #[error("key file {path} cannot be read: {reason}")]
    KeyUnreadable { path: String, reason: String },
    #[error("cannot connect to {target}: {reason}")]
    Connect { target: String, reason: String },
    /// Nothing accepted a TCP connection at the host's ssh port (checked before `ssh` runs).
    #[error(
        "{target} is unreachable: {reason}; check the host is up and its sshd listens there, or fix the client's --ssh"
    )]
    Unreachable { target: String, reason: String },
    #[error(
        "remote directory {path} does not exist on {target}; create it or fix the client's --path"
    )]
    DirMissing { target: String, path: String },
    /// A file sqd was working on is gone (the directory itself is still there).
    #[error("file {path} vanished at {target} while it was being read or moved")]
    Vanished { target: String, path: String },
    #[error(
        "permission denied on {path} at {target}; the SSH user needs read, rename and delete rights there"
    )]
    PermissionDenied { target: String, path: String },
    #[error("the SSH connection to {target} was lost: {reason}")]
    Lost { target: String, reason: String },
    /// Where the streamed files go failed (the store's disk), not the transfer.
    #[error("{0}")]
    Sink(Arc<StoreError>),
    #[error("sftp error on {path} at {target}: {reason}")]
    Sftp {
        target: String,
        path: String,
        reason: String,
    },
}

impl TransportError {
    /// A short, stable kind for metrics and tests.
    pub fn kind(&self) -> &'static str {
        match self {
            TransportError::HostKeyUnknown { .. } => "host_key_unknown",
            TransportError::HostKeyChanged { .. } => "host_key_changed",
            TransportError::Auth { .. } => "auth",
            TransportError::KeyPermissions { .. } | TransportError::KeyUnreadable { .. } => {
                "key_file"
            }
            TransportError::Connect { .. } => "connect",
            TransportError::Unreachable { .. } => "unreachable",
            TransportError::DirMissing { .. } => "dir_missing",
            TransportError::Vanished { .. } => "file_vanished",
            TransportError::PermissionDenied { .. } => "permission_denied",
            TransportError::Lost { .. } => "connection_lost",
            TransportError::Sink(_) => "store",
            TransportError::Sftp { .. } => "sftp",
        }
    }

    /// Whether the connection is unusable and must be re-established.
    pub(crate) fn needs_reconnect(&self) -> bool {
        matches!(
            self,
            TransportError::Lost { .. }
                | TransportError::Connect { .. }
                | TransportError::Unreachable { .. }
        )
    }
}

/// Refuses a key file that group or others can read (like sshd and garage do).
pub(crate) fn check_key_file(path: &Path) -> Result<(), TransportError> {
    let meta = std::fs::metadata(path).map_err(|e| TransportError::KeyUnreadable {
        path: path.display().to_string(),
        reason: e.to_string(),
    })?;
    if meta.permissions().mode() & 0o077 != 0 {
        return Err(TransportError::KeyPermissions {
            path: path.display().to_string(),
        });
    }
    Ok(())
}

/// Turns the OpenSSH client's complaint into an error that says what to do.
pub(crate) fn classify_connect_error(params: &SshParams, message: &str) -> TransportError {
    let host = format!("[{}]:{}", params.target.host, params.target.port);
    let known_hosts = params.known_hosts.as_ref().map_or_else(
        || "~/.ssh/known_hosts".to_owned(),
        |p| p.display().to_string(),
    );
    let target = format!(
        "{}@{}:{}",
        params.target.user, params.target.host, params.target.port
    );
    if message.contains("REMOTE HOST IDENTIFICATION HAS CHANGED")
        || message.contains("Host key for") && message.contains("has changed")
    {
        TransportError::HostKeyChanged { host, known_hosts }
    } else if message.contains("Host key verification failed")
        || message.contains("No ") && message.contains("host key is known")
    {
        TransportError::HostKeyUnknown { host, known_hosts }
    } else if message.contains("Permission denied (") {
        TransportError::Auth {
            target,
            key: params
                .key_file
                .as_ref()
                .map_or_else(|| "default".to_owned(), |p| p.display().to_string()),
        }
    } else {
        let reason = message
            .trim()
            .lines()
            .last()
            .unwrap_or("ssh failed")
            .to_owned();
        TransportError::Connect { target, reason }
    }
}

/// SFTP channels opened over one SSH connection. OpenSSH's sftp-server handles one request at
/// a time per channel, and per-file metadata calls (rename, unlink) wait on the disk; a few
/// channels let the producing host work on several at once (see docs/ARCHITECTURE.md).
pub(crate) const SFTP_LANES: usize = 4;

/// An open SSH connection to one client with [`SFTP_LANES`] SFTP channels on it.
pub struct Remote {
    session: Arc<Session>,
    lanes: Vec<Sftp>,
    next: std::sync::atomic::AtomicUsize,
    target: String,
    /// The host runs GNU tar and mv for us (probed at connect).
    batch: std::sync::atomic::AtomicBool,
    /// Batch helper shells, started on first use: one claims and streams, the other
    /// removes durable files meanwhile (unlinks wait on the host's disk).
    helpers: [tokio::sync::Mutex<Option<Helper>>; 2],
}

/// The long-lived `sh -s` of batch mode on the host.
struct Helper {
    /// Kept so the channel stays open; dropped with the helper.
    _child: openssh::Child<Arc<Session>>,
    stdin: openssh::ChildStdin,
    /// Its first reply came: whatever the rc files printed is behind us.
    greeted: bool,
    /// Taken by the blocking reader while a batch runs.
    stdout: Option<std::io::BufReader<std::fs::File>>,
}

const PROBE_TIMEOUT: Duration = Duration::from_secs(10);

/// Whether the host's ssh port accepts a TCP connection within `timeout`: a host that is down
/// or refusing is told without starting an `ssh` process (about a thousandth of its cost).
/// A name that does not resolve here is left to `ssh`: it may be an alias of the worker's
/// `~/.ssh/config`.
pub(crate) async fn reachable(target: &SshTarget, timeout: Duration) -> Result<(), TransportError> {
    let shown = format!("{}:{}", crate::text::clip(&target.host), target.port);
    let unreachable = |reason: String| TransportError::Unreachable {
        target: shown.clone(),
        reason,
    };
    let resolve = tokio::net::lookup_host((target.host.as_str(), target.port));
    let addrs: Vec<std::net::SocketAddr> = match tokio::time::timeout(timeout, resolve).await {
        Ok(Ok(addrs)) => addrs.collect(),
        _ => return Ok(()),
    };
    let connect = tokio::net::TcpStream::connect(&addrs[..]);
    match tokio::time::timeout(timeout, connect).await {
        Ok(Ok(_stream)) => Ok(()),
        Ok(Err(e)) => Err(unreachable(crate::text::causes(&e))),
        Err(_) => Err(unreachable(format!(
            "no answer within {} s",
            timeout.as_secs()
        ))),
    }
}
/// The `openssh` crate puts the destination last without a `--`: a host or user starting with
/// '-' would reach `ssh` as an option (`-oProxyCommand=…`). `SshTarget::parse` refuses them;
/// this holds even for a target built another way.
fn refuse_option_like(target: &SshTarget) -> Result<(), TransportError> {
    if target.host.starts_with('-') || target.user.starts_with('-') {
        return Err(TransportError::Connect {
            target: crate::text::clip(&target.host),
            reason: "a user or host starting with '-' would be read by ssh as an option; fix the client's --ssh".to_owned(),
        });
    }
    Ok(())
}

/// Connects with strict host-key checking and the given key.
pub async fn connect(params: &SshParams) -> Result<Remote, TransportError> {
    refuse_option_like(&params.target)?;
    if let Some(key) = &params.key_file {
        check_key_file(key)?;
    }
    std::fs::create_dir_all(&params.control_dir).map_err(|e| TransportError::Connect {
        target: params.target.host.clone(),
        reason: format!(
            "cannot create control dir {}: {e}",
            params.control_dir.display()
        ),
    })?;
    let mut builder = SessionBuilder::default();
    builder
        .user(params.target.user.clone())
        .port(params.target.port)
        // Never trust a new or changed host key (the crate's default would accept new ones).
        .known_hosts_check(KnownHosts::Strict)
        .connect_timeout(params.connect_timeout)
        .server_alive_interval(Duration::from_secs(5))
        .control_directory(&params.control_dir)
        .clean_history_control_directory(true)
        // The master exits on its own once no session uses it, so a killed worker leaves no
        // ssh process behind for long.
        .control_persist(ControlPersist::IdleFor(
            std::num::NonZeroUsize::new(30).unwrap_or(std::num::NonZeroUsize::MIN),
        ));
    if let Some(key) = &params.key_file {
        builder.keyfile(key);
    }
    if let Some(kh) = &params.known_hosts {
        builder.user_known_hosts_file(kh);
    }
    let target = format!(
        "{}@{}:{}",
        params.target.user, params.target.host, params.target.port
    );
    let session = builder
        .connect_mux(&params.target.host)
        .await
        .map_err(|e| classify_connect_error(params, &error_text(&e)))?;
    let options = SftpOptions::new()
        .max_pending_requests(std::num::NonZeroU16::new(1024).unwrap_or(std::num::NonZeroU16::MIN));
    let session = std::sync::Arc::new(session);
    let open_lanes = async {
        let mut lanes = Vec::with_capacity(SFTP_LANES);
        for _ in 0..SFTP_LANES {
            let sftp = Sftp::from_clonable_session(session.clone(), options)
                .await
                .map_err(|e| TransportError::Connect {
                    target: target.clone(),
                    reason: format!("sftp subsystem failed: {e}"),
                })?;
            lanes.push(sftp);
        }
        Ok::<_, TransportError>(lanes)
    };
    // The probe waits on the host's login shell (its rc files): it runs while the SFTP
    // channels open.
    let probe =
        async { params.transfer == TransferMode::Auto && probe_batch_tools(&session).await };
    let (lanes, batch) = tokio::join!(open_lanes, probe);
    let remote = Remote {
        session,
        lanes: lanes?,
        next: std::sync::atomic::AtomicUsize::new(0),
        target,
        batch: std::sync::atomic::AtomicBool::new(batch),
        helpers: Default::default(),
    };
    if batch {
        // Started now, its shell gets ready while the directory is listed.
        let mut helper = remote.helpers[0].lock().await;
        *helper = Some(remote.start_helper().await?);
    }
    tracing::debug!(target = %remote.target, batch, "connected");
    Ok(remote)
}

/// Whether the key may run commands and the host has GNU tar and coreutils. A key forced to
/// `internal-sftp` answers nothing here (the SFTP server sees end of input).
async fn probe_batch_tools(session: &Arc<Session>) -> bool {
    let mut cmd = session.clone().arc_raw_command(batch::PROBE);
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    match tokio::time::timeout(PROBE_TIMEOUT, cmd.output()).await {
        Ok(Ok(out)) => {
            let text = String::from_utf8_lossy(&out.stdout);
            batch::PROBE_MARKERS.iter().all(|m| text.contains(m))
        }
        _ => false,
    }
}

fn error_text(e: &dyn std::error::Error) -> String {
    crate::text::causes(e)
}

/// What an SFTP request worked on: "no such file" means a missing directory (the client's
/// `--path` is wrong) only for directory requests; for a file it means the file went away.
#[derive(Debug, Clone, Copy)]
enum Subject {
    Dir,
    File,
}

/// The SFTP status codes we act on (draft-ietf-secsh-filexfer-02).
fn sftp_error(
    target: &str,
    path: &Path,
    subject: Subject,
    e: openssh_sftp_client::Error,
) -> TransportError {
    use openssh_sftp_client::error::{Error as E, SftpErrorKind};
    let shown = path.display().to_string();
    match (&e, subject) {
        (E::SftpError(SftpErrorKind::NoSuchFile, _), Subject::Dir) => TransportError::DirMissing {
            target: target.to_owned(),
            path: shown,
        },
        (E::SftpError(SftpErrorKind::NoSuchFile, _), Subject::File) => TransportError::Vanished {
            target: target.to_owned(),
            path: shown,
        },
        (E::SftpError(SftpErrorKind::PermDenied, _), _) => TransportError::PermissionDenied {
            target: target.to_owned(),
            path: shown,
        },
        (E::SftpError(..), _) => TransportError::Sftp {
            target: target.to_owned(),
            path: shown,
            reason: error_text(&e),
        },
        _ => TransportError::Lost {
            target: target.to_owned(),
            reason: error_text(&e),
        },
    }
}

/// Whether an error means "it is not there" (for idempotent cleanup).
pub(crate) fn is_not_found(e: &TransportError) -> bool {
    matches!(
        e,
        TransportError::DirMissing { .. } | TransportError::Vanished { .. }
    )
}

impl Remote {
    /// The channel for the next request, round robin.
    fn lane(&self) -> &Sftp {
        let i = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        &self.lanes[i % self.lanes.len()]
    }

    /// A file request's failure, except that a file not there (any more) yields `gone`.
    fn or_gone<T>(
        &self,
        path: &Path,
        e: openssh_sftp_client::Error,
        gone: T,
    ) -> Result<T, TransportError> {
        let err = sftp_error(&self.target, path, Subject::File, e);
        if is_not_found(&err) {
            Ok(gone)
        } else {
            Err(err)
        }
    }

    pub(crate) fn target(&self) -> &str {
        &self.target
    }

    /// Lists a directory with lstat semantics.
    pub async fn list(&self, dir: &Path) -> Result<Vec<RemoteEntry>, TransportError> {
        let mut fs = self.lane().fs();
        let handle = fs
            .open_dir(dir)
            .await
            .map_err(|e| sftp_error(&self.target, dir, Subject::Dir, e))?;
        let mut stream = std::pin::pin!(handle.read_dir());
        let mut entries = Vec::new();
        while let Some(entry) = stream.next().await {
            let entry = entry.map_err(|e| sftp_error(&self.target, dir, Subject::Dir, e))?;
            let name = entry.filename().as_os_str().as_bytes().to_vec();
            if name == b"." || name == b".." {
                continue;
            }
            let meta = entry.metadata();
            let kind = match meta.file_type() {
                Some(t) if t.is_file() => EntryKind::File,
                Some(t) if t.is_dir() => EntryKind::Dir,
                _ => EntryKind::Other,
            };
            entries.push(RemoteEntry {
                name,
                kind,
                size: meta.len().unwrap_or(0),
                mtime: meta.modified().map_or(0, |t| i64::from(t.into_raw())),
            });
        }
        Ok(entries)
    }

    /// Creates a directory; an existing one is fine.
    pub async fn mkdir(&self, path: &Path) -> Result<(), TransportError> {
        let mut fs = self.lane().fs();
        match fs.create_dir(path).await {
            Ok(()) => Ok(()),
            Err(e) => match fs.metadata(path).await {
                Ok(m) if m.file_type().is_some_and(|t| t.is_dir()) => Ok(()),
                _ => Err(sftp_error(&self.target, path, Subject::Dir, e)),
            },
        }
    }

    /// Renames without replacing (OpenSSH's SFTP rename fails if `to` exists): the atomic
    /// claim. Returns false when `from` vanished (someone else claimed it).
    pub async fn rename(&self, from: &Path, to: &Path) -> Result<bool, TransportError> {
        let mut fs = self.lane().fs();
        match fs.rename(from, to).await {
            Ok(()) => Ok(true),
            Err(e) => self.or_gone(from, e, false),
        }
    }

    /// Removes a file; one already gone is fine.
    pub async fn remove(&self, path: &Path) -> Result<(), TransportError> {
        let mut fs = self.lane().fs();
        match fs.remove_file(path).await {
            Ok(()) => Ok(()),
            Err(e) => self.or_gone(path, e, ()),
        }
    }

    /// Removes an empty directory; a missing or non-empty one is left alone.
    pub(crate) async fn remove_dir(&self, path: &Path) -> bool {
        self.lane().fs().remove_dir(path).await.is_ok()
    }

    /// Streams a file's content to `consume` and returns (bytes read, size, mtime) where size
    /// and mtime come from an fstat after the last read, so a change during the copy shows.
    /// Reading stops at end of file, or once `expected` bytes arrived: the fstat then tells
    /// whether that was all (it saves a round trip per small file).
    pub async fn read_file(
        &self,
        path: &Path,
        expected: u64,
        mut consume: impl FnMut(&[u8]) -> std::io::Result<()>,
    ) -> Result<(u64, u64, i64), TransportError> {
        let lane = self.lane();
        let mut file = lane
            .open(path)
            .await
            .map_err(|e| sftp_error(&self.target, path, Subject::File, e))?;
        // `read` clamps to the server's limit (OpenSSH: 255 KiB), so ask for a large chunk.
        let chunk: u32 = 256 * 1024;
        let mut read = 0u64;
        let mut buf = BytesMut::with_capacity(chunk as usize);
        while read < expected || expected == 0 {
            buf.clear();
            match file
                .read(chunk, buf)
                .await
                .map_err(|e| sftp_error(&self.target, path, Subject::File, e))?
            {
                Some(data) => {
                    read += data.len() as u64;
                    consume(&data).map_err(|e| match batch::sink_failure(e) {
                        Ok(store) => TransportError::Sink(Arc::new(store)),
                        Err(e) => TransportError::Sftp {
                            target: self.target.clone(),
                            path: path.display().to_string(),
                            reason: format!("local write failed: {e}"),
                        },
                    })?;
                    buf = data;
                }
                None => break,
            }
        }
        let meta = file
            .metadata()
            .await
            .map_err(|e| sftp_error(&self.target, path, Subject::File, e))?;
        let _ = file.close().await;
        Ok((
            read,
            meta.len().unwrap_or(u64::MAX),
            meta.modified().map_or(0, |t| i64::from(t.into_raw())),
        ))
    }

    /// Whether batch mode is on for this connection.
    pub(crate) fn batch_capable(&self) -> bool {
        self.batch.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Runs one batch (see [`batch`]) through the connection's helper shell, started on
    /// first use; returns `sink` back with how the batch ended. Any failure ends the helper
    /// (the next batch starts a new one), as its reply stream can no longer be trusted.
    pub(crate) async fn batch<S: StreamSink>(
        &self,
        plan: &BatchPlan<'_>,
        sink: S,
    ) -> Result<(S, BatchEnd), TransportError> {
        // Removals take the second helper only while the first one is busy streaming.
        let removal_only = plan.claim.is_empty() && plan.stream.is_empty();
        let mut helper = match self.helpers[0].try_lock() {
            Ok(free) => free,
            Err(_) => self.helpers[usize::from(removal_only)].lock().await,
        };
        let result = self.batch_with(&mut helper, plan, sink).await;
        if let Err(e) = &result {
            *helper = None;
            // The connection still works, so batch mode itself failed on this host (a shell
            // that is not POSIX, tools that behave differently): SFTP from now on, for this
            // connection; the next connection probes again.
            if !matches!(e, TransportError::Sink(_)) && self.session.check().await.is_ok() {
                self.batch
                    .store(false, std::sync::atomic::Ordering::Relaxed);
                tracing::warn!(target = %self.target, error = %e, "batch mode failed on this host; using SFTP for this connection (set transfer = \"sftp\" to stop trying)");
            }
        }
        let (sink, end) = result?;
        if end.dir_missing {
            return Err(TransportError::DirMissing {
                target: self.target.clone(),
                path: plan.dir.to_owned(),
            });
        }
        Ok((sink, end))
    }

    async fn batch_with<S: StreamSink>(
        &self,
        helper: &mut Option<Helper>,
        plan: &BatchPlan<'_>,
        mut sink: S,
    ) -> Result<(S, BatchEnd), TransportError> {
        if helper.is_none() {
            *helper = Some(self.start_helper().await?);
        }
        let Some(h) = helper.as_mut() else {
            return Err(self.stream_broke("no helper shell"));
        };
        let Some(mut stdout) = h.stdout.take() else {
            return Err(self.stream_broke("the helper's output was lost"));
        };
        let nonce = format!(
            "{}-{}",
            std::process::id(),
            self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        );
        let mut script = Vec::new();
        let greet = !h.greeted;
        if greet {
            // Whatever the login shell's rc files printed comes before this line.
            script.extend_from_slice(batch::ready_line(&nonce).as_bytes());
        }
        script.extend_from_slice(&batch::script(plan, &nonce));
        let reader = tokio::task::spawn_blocking(move || {
            let end = if greet {
                batch::skip_until_ready(&mut stdout, &nonce)
                    .and_then(|()| batch::read_reply(&mut stdout, &nonce, &mut sink))
            } else {
                batch::read_reply(&mut stdout, &nonce, &mut sink)
            };
            (stdout, sink, end)
        });
        let write = async {
            h.stdin.write_all(&script).await?;
            h.stdin.flush().await
        };
        let (written, read) = tokio::join!(write, reader);
        let (stdout, sink, end) =
            read.map_err(|e| self.stream_broke(&format!("reader failed: {e}")))?;
        written.map_err(|e| self.stream_broke(&format!("cannot send the batch: {e}")))?;
        let end = end.map_err(|e| match batch::sink_failure(e) {
            Ok(store) => TransportError::Sink(Arc::new(store)),
            Err(e) => self.stream_broke(&e.to_string()),
        })?;
        h.stdout = Some(stdout);
        h.greeted = true;
        Ok((sink, end))
    }

    async fn start_helper(&self) -> Result<Helper, TransportError> {
        let mut child = self
            .session
            .clone()
            .arc_raw_command(batch::HELPER)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .await
            .map_err(|e| self.lost(&e))?;
        let (Some(stdin), Some(stdout)) = (child.stdin().take(), child.stdout().take()) else {
            return Err(self.stream_broke("the helper shell has no pipes"));
        };
        let stdout = stdout
            .into_owned_fd()
            .map_err(|e| self.stream_broke(&format!("cannot read the helper: {e}")))?;
        // A 1 MiB pipe (64 KiB by default) lets ssh hand over more of the stream per wake-up
        // of the reader. Best effort: an unprivileged user may be over its pipe budget.
        let _ = nix::fcntl::fcntl(
            std::os::fd::AsFd::as_fd(&stdout),
            nix::fcntl::FcntlArg::F_SETPIPE_SZ(1 << 20),
        );
        if let Some(stderr) = child.stderr().take() {
            let target = self.target.clone();
            tokio::spawn(async move {
                use tokio::io::AsyncBufReadExt;
                let mut lines = tokio::io::BufReader::new(stderr).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    tracing::debug!(target = %target, said = %line, "helper shell");
                }
            });
        }
        tracing::debug!(target = %self.target, "batch helper shell started");
        Ok(Helper {
            _child: child,
            greeted: false,
            stdin,
            stdout: Some(std::io::BufReader::with_capacity(
                256 * 1024,
                std::fs::File::from(stdout),
            )),
        })
    }

    fn stream_broke(&self, reason: &str) -> TransportError {
        TransportError::Lost {
            target: self.target.clone(),
            reason: format!("batch stream broke off: {reason}"),
        }
    }

    fn lost(&self, e: &openssh::Error) -> TransportError {
        TransportError::Lost {
            target: self.target.clone(),
            reason: error_text(e),
        }
    }

    /// Size and mtime of a file (lstat), or `None` when it is gone.
    pub(crate) async fn stat(&self, path: &Path) -> Result<Option<(u64, i64)>, TransportError> {
        match self.lane().fs().symlink_metadata(path).await {
            Ok(m) => Ok(Some((
                m.len().unwrap_or(u64::MAX),
                m.modified().map_or(0, |t| i64::from(t.into_raw())),
            ))),
            Err(e) => self.or_gone(path, e, None),
        }
    }

    /// Ends the session. Dropping is deliberate: `Sftp::close` in openssh-sftp-client 0.15
    /// unwraps internally and panics when the connection had already failed.
    pub(crate) fn close(self) {
        drop(self.lanes);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params() -> SshParams {
        SshParams {
            target: SshTarget {
                user: "u".into(),
                host: "127.0.0.1".into(),
                port: 2222,
            },
            key_file: Some("/k".into()),
            known_hosts: Some("/kh".into()),
            control_dir: "/tmp".into(),
            connect_timeout: Duration::from_secs(1),
            transfer: TransferMode::Auto,
        }
    }

    #[test]
    fn ssh_complaints_become_actionable_errors() {
        let p = params();
        let e = classify_connect_error(
            &p,
            "No ED25519 host key is known for [127.0.0.1]:2222 and you have requested strict checking.\r\nHost key verification failed.",
        );
        assert_eq!(e.kind(), "host_key_unknown");
        assert!(e.to_string().contains("/kh"));
        let e = classify_connect_error(
            &p,
            "@@@ WARNING: REMOTE HOST IDENTIFICATION HAS CHANGED! @@@\nHost key verification failed.",
        );
        assert_eq!(e.kind(), "host_key_changed");
        let e = classify_connect_error(&p, "u@127.0.0.1: Permission denied (publickey).");
        assert_eq!(e.kind(), "auth");
        let e = classify_connect_error(
            &p,
            "ssh: connect to host 127.0.0.1 port 2222: Connection refused",
        );
        assert_eq!(e.kind(), "connect");
        assert!(e.to_string().contains("Connection refused"));
    }

    #[test]
    fn key_files_open_to_others_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("id");
        std::fs::write(&key, "k").unwrap();
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert_eq!(check_key_file(&key).unwrap_err().kind(), "key_file");
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert!(check_key_file(&key).is_ok());
        assert!(check_key_file(&dir.path().join("missing")).is_err());
    }
}
