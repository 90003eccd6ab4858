//! The account the private sshd lets in, and the directories it must reach.
//!
//! As root the harness logs in as a dedicated system user, `sqd-test`, whose shell is `/bin/sh`
//! and whose home is its own empty directory: sshd runs every command through the login user's
//! shell, and bash reads `~/.bashrc` for each of them, so logging in as root made every test
//! wait on whatever root's rc file does (a stale pyenv shim lock stalled each login for up to
//! 60 s). A non-interactive `sh -c` reads no rc file at all. As an ordinary user the harness
//! logs in as that user, as before.
//!
//! That user must reach what it serves: [`LoginUser::share_dir`] hands a directory over to it,
//! [`traversable_tempdir`] makes a temporary directory its parents can be reached through.
#![allow(dead_code)]

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use super::sshd::run_bounded;

/// The dedicated login user created when the tests run as root.
pub const TEST_USER: &str = "sqd-test";
/// Its home: empty, owned by it (sshd starts each session there).
const TEST_HOME: &str = "/var/lib/sqd-test";
/// Upper bound for `getent`, `id` and `useradd`.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(20);
/// `useradd` attempts while another test process may hold the passwd lock.
const CREATE_ATTEMPTS: usize = 10;

/// Who the private sshd lets in.
#[derive(Debug, Clone)]
pub struct LoginUser {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
    /// Whether this is the dedicated [`TEST_USER`] (the tests run as root), not the runner.
    pub dedicated: bool,
}

/// The login user for this process, created on first use when missing (see the module doc).
pub fn login_user() -> &'static LoginUser {
    static USER: OnceLock<LoginUser> = OnceLock::new();
    USER.get_or_init(|| {
        let me = fs::metadata("/proc/self").expect("stat /proc/self");
        let user = if me.uid() == 0 {
            ensure_test_user()
        } else {
            LoginUser {
                name: current_user(),
                uid: me.uid(),
                gid: me.gid(),
                dedicated: false,
            }
        };
        if user.dedicated {
            readable_umask();
        }
        user
    })
}

impl LoginUser {
    /// Creates `dir` (and its parents) if missing and hands it to the login user: owned by it,
    /// mode 0755, so that it can rename claims into its own subdirectories and unlink sources
    /// that the tests (root) wrote there. Panics when a parent cannot be traversed by that
    /// user (make it with [`traversable_tempdir`]).
    pub fn share_dir(&self, dir: &Path) {
        fs::create_dir_all(dir).unwrap_or_else(|e| panic!("create {}: {e}", dir.display()));
        self.give(dir);
        fs::set_permissions(dir, fs::Permissions::from_mode(0o755))
            .unwrap_or_else(|e| panic!("chmod 755 {}: {e}", dir.display()));
        self.assert_reachable(dir);
    }

    /// Makes the login user own `path` (nothing to do when it is the runner).
    pub fn give(&self, path: &Path) {
        if self.dedicated {
            std::os::unix::fs::chown(path, Some(self.uid), Some(self.gid))
                .unwrap_or_else(|e| panic!("chown {} {}: {e}", self.name, path.display()));
        }
    }

    /// Panics unless the login user may search every parent of `path`.
    pub fn assert_reachable(&self, path: &Path) {
        for dir in path
            .ancestors()
            .skip(1)
            .filter(|d| !d.as_os_str().is_empty())
        {
            let m = fs::metadata(dir).unwrap_or_else(|e| panic!("stat {}: {e}", dir.display()));
            let mode = m.mode();
            let search = if m.uid() == self.uid {
                mode & 0o100
            } else if m.gid() == self.gid {
                mode & 0o010
            } else {
                mode & 0o001
            };
            assert!(
                search != 0,
                "the SSH login user {} cannot traverse {} (mode {:o}) to reach {}; \
                 create test directories with support::login::traversable_tempdir()",
                self.name,
                dir.display(),
                mode & 0o7777,
                path.display()
            );
        }
    }
}

/// A temporary directory that others may traverse (mode 0711; tempdirs are 0700), for a tree
/// that holds directories served by the private sshd.
pub fn traversable_tempdir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("create a temporary directory");
    fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o711))
        .expect("chmod 711 a temporary directory");
    dir
}

/// The runner's name (`id -un`).
pub fn current_user() -> String {
    let mut id = Command::new("id");
    id.arg("-un");
    let out = run_bounded(id, COMMAND_TIMEOUT);
    assert!(out.status.success(), "id -un: {}", text(&out.stderr));
    let user = text(&out.stdout).trim().to_owned();
    assert!(!user.is_empty(), "id -un printed nothing");
    user
}

/// (uid, gid) of `name` from the passwd database, None when there is no such user.
fn passwd_ids(name: &str) -> Option<(u32, u32)> {
    let mut getent = Command::new("getent");
    getent.args(["passwd", name]);
    let out = run_bounded(getent, COMMAND_TIMEOUT);
    let line = text(&out.stdout);
    // name:password:uid:gid:gecos:home:shell
    let fields: Vec<&str> = line.trim().split(':').collect();
    match fields.as_slice() {
        [n, _, uid, gid, ..] if *n == name => Some((uid.parse().ok()?, gid.parse().ok()?)),
        _ => None,
    }
}

/// Finds or creates [`TEST_USER`] and its home. Concurrent test processes may race to create
/// it: `useradd` then fails for all but one, and the user exists afterwards.
fn ensure_test_user() -> LoginUser {
    let mut last_error = String::new();
    for _ in 0..CREATE_ATTEMPTS {
        if let Some((uid, gid)) = passwd_ids(TEST_USER) {
            let user = LoginUser {
                name: TEST_USER.to_owned(),
                uid,
                gid,
                dedicated: true,
            };
            let home = Path::new(TEST_HOME);
            fs::create_dir_all(home).unwrap_or_else(|e| panic!("create {TEST_HOME}: {e}"));
            user.give(home);
            fs::set_permissions(home, fs::Permissions::from_mode(0o755))
                .unwrap_or_else(|e| panic!("chmod 755 {TEST_HOME}: {e}"));
            return user;
        }
        let mut useradd = Command::new("useradd");
        // `*`, not useradd's default `!`: with UsePAM no, sshd refuses accounts whose password
        // field starts with `!` (locked), even for key logins. `*` only rules out passwords.
        useradd.args(["--system", "--shell", "/bin/sh", "--home-dir", TEST_HOME]);
        useradd.args(["--no-create-home", "--password", "*", TEST_USER]);
        let out = run_bounded(useradd, COMMAND_TIMEOUT);
        if !out.status.success() {
            last_error = text(&out.stderr);
            std::thread::sleep(Duration::from_millis(200));
        }
    }
    panic!("could not create the SSH login user {TEST_USER} with useradd: {last_error}");
}

/// Files the tests write into shared directories must stay readable by the login user, whatever
/// umask the runner has: clears the group and other read bits of the process umask.
fn readable_umask() {
    use nix::sys::stat::{Mode, umask};
    let old = umask(Mode::from_bits_truncate(0o022));
    umask(old & !Mode::from_bits_truncate(0o044));
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}
