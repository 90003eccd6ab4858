//! What every sqd daemon shares: the pid/lock file that keeps one instance per directory and
//! lets `sqd --mode M stop` find it, shutdown on SIGINT/SIGTERM, and logging setup.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use tokio::sync::watch;

use crate::config::{LogConfig, LogFormat};

/// Failures of the pid/lock file and of stopping a daemon. Each message carries its cause
/// (the fields are not `source`s, so a printed chain does not repeat it).
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error(
        "another {what} is already running on {dir} (pid {pid}); stop it with `sqd --mode {what} stop` or use another directory"
    )]
    AlreadyRunning {
        what: String,
        dir: PathBuf,
        pid: String,
    },
    #[error("cannot create the {what}'s directory {dir}: {error}")]
    CreateDir {
        what: String,
        dir: PathBuf,
        error: std::io::Error,
    },
    #[error("cannot use {path}: {error}")]
    Io {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("no {what} is running for {path} (no pid file, or it is not locked)")]
    NotRunning { what: String, path: PathBuf },
    #[error(
        "pid file {path} holds {content:?}, not a process id; remove it if no {what} is running"
    )]
    BadPid {
        what: String,
        path: PathBuf,
        content: String,
    },
    #[error("cannot signal {what} pid {pid}: {error}")]
    Signal {
        what: String,
        pid: i32,
        error: nix::Error,
    },
    #[error(
        "{what} pid {pid} did not stop within {secs} s; it may still be finishing work, or kill it with `kill -9 {pid}`"
    )]
    StopTimeout { what: String, pid: i32, secs: u64 },
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> DaemonError + '_ {
    move |error| DaemonError::Io {
        path: path.to_owned(),
        error,
    }
}

/// An exclusive lock on `<dir>/<what>.pid` holding this process's id; released on drop (or
/// by the kernel when the process dies, so `kill -9` leaves no stale lock).
#[derive(Debug)]
pub(crate) struct PidLock {
    _file: File,
}

impl PidLock {
    /// Creates `dir` (with its parents) if missing, then takes the lock in it.
    pub(crate) fn acquire(dir: &Path, what: &str) -> Result<Self, DaemonError> {
        std::fs::create_dir_all(dir).map_err(|error| DaemonError::CreateDir {
            what: what.to_owned(),
            dir: dir.to_owned(),
            error,
        })?;
        let path = pid_path(dir, what);
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(io_err(&path))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                let mut pid = String::new();
                let _ = file.read_to_string(&mut pid);
                return Err(DaemonError::AlreadyRunning {
                    what: what.to_owned(),
                    dir: dir.to_owned(),
                    pid: pid.trim().to_owned(),
                });
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(io_err(&path)(e)),
        }
        file.set_len(0).map_err(io_err(&path))?;
        file.seek(SeekFrom::Start(0)).map_err(io_err(&path))?;
        writeln!(file, "{}", std::process::id()).map_err(io_err(&path))?;
        file.sync_all().map_err(io_err(&path))?;
        Ok(PidLock { _file: file })
    }
}

fn pid_path(dir: &Path, what: &str) -> PathBuf {
    dir.join(format!("{what}.pid"))
}

/// Stops the daemon holding `<dir>/<what>.pid` with SIGTERM and waits for it to exit.
pub fn stop(dir: &Path, what: &str, wait: Duration) -> Result<i32, DaemonError> {
    let path = pid_path(dir, what);
    let not_running = || DaemonError::NotRunning {
        what: what.to_owned(),
        path: path.clone(),
    };
    let mut file = match File::open(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(not_running()),
        Err(e) => return Err(io_err(&path)(e)),
    };
    if file.try_lock_shared().is_ok() {
        // Nobody holds the lock: the daemon is gone, whatever the file says.
        return Err(not_running());
    }
    let mut content = String::new();
    file.read_to_string(&mut content).map_err(io_err(&path))?;
    let pid: i32 = content.trim().parse().map_err(|_| DaemonError::BadPid {
        what: what.to_owned(),
        path: path.clone(),
        content: content.trim().to_owned(),
    })?;
    let target = nix::unistd::Pid::from_raw(pid);
    nix::sys::signal::kill(target, nix::sys::signal::Signal::SIGTERM).map_err(|error| {
        DaemonError::Signal {
            what: what.to_owned(),
            pid,
            error,
        }
    })?;
    let deadline = Instant::now() + wait;
    while Instant::now() < deadline {
        if file.try_lock_shared().is_ok() {
            return Ok(pid);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Err(DaemonError::StopTimeout {
        what: what.to_owned(),
        pid,
        secs: wait.as_secs(),
    })
}

/// A receiver that turns true on SIGINT or SIGTERM.
pub fn shutdown_signal() -> watch::Receiver<bool> {
    let (tx, rx) = watch::channel(false);
    tokio::spawn(async move {
        let term = async {
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(mut s) => {
                    s.recv().await;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot listen for SIGTERM; use SIGINT to stop");
                    std::future::pending::<()>().await;
                }
            }
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT received, shutting down"),
            _ = term => tracing::info!("SIGTERM received, shutting down"),
        }
        let _ = tx.send(true);
    });
    rx
}

/// Waits until `rx` turns true (or its sender is gone).
pub(crate) async fn wait_for(mut rx: watch::Receiver<bool>) {
    let _ = rx.wait_for(|stop| *stop).await;
}

/// Writes the address a daemon actually bound (`ADDR\n`), so scripts and tests that asked
/// for port 0 can find it.
pub(crate) fn write_addr_file(path: &Path, addr: std::net::SocketAddr) -> Result<(), DaemonError> {
    std::fs::write(path, format!("{addr}\n")).map_err(|error| DaemonError::Io {
        path: path.to_owned(),
        error,
    })
}

/// Why logging could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum LogSetupError {
    #[error("RUST_LOG={value:?}: {error}")]
    RustLog {
        value: String,
        error: tracing_subscriber::filter::ParseError,
    },
    #[error("log_level {value:?}: {error}")]
    LogLevel {
        value: String,
        error: tracing_subscriber::filter::ParseError,
    },
    #[error("cannot set up logging: {0}")]
    Init(Box<dyn std::error::Error + Send + Sync>),
}

/// Sets up `tracing`: `RUST_LOG` wins over the configured level; text or JSON lines on stderr.
pub fn init_logging(log: &LogConfig) -> Result<(), LogSetupError> {
    use tracing_subscriber::EnvFilter;
    let filter = match std::env::var("RUST_LOG") {
        Ok(value) if !value.is_empty() => {
            EnvFilter::try_new(&value).map_err(|error| LogSetupError::RustLog { value, error })?
        }
        _ => EnvFilter::try_new(&log.level).map_err(|error| LogSetupError::LogLevel {
            value: log.level.clone(),
            error,
        })?,
    };
    // Colour only for a person at a terminal: files and journald get plain text.
    let colour = std::io::IsTerminal::is_terminal(&std::io::stderr())
        && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(colour)
        .with_target(false);
    let result = match log.format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
    result.map_err(LogSetupError::Init)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_on_the_same_dir_is_refused_with_the_pid() {
        let dir = tempfile::tempdir().unwrap();
        let first = PidLock::acquire(dir.path(), "leader").unwrap();
        let err = PidLock::acquire(dir.path(), "leader").unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains(&std::process::id().to_string()), "{msg}");
        assert!(msg.contains("already running"), "{msg}");
        drop(first);
        assert!(PidLock::acquire(dir.path(), "leader").is_ok());
    }

    #[test]
    fn stop_without_a_daemon_says_so() {
        let dir = tempfile::tempdir().unwrap();
        assert!(matches!(
            stop(dir.path(), "worker", Duration::from_millis(10)),
            Err(DaemonError::NotRunning { .. })
        ));
    }
}
