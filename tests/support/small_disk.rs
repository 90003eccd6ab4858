//! A small tmpfs mounted for one test (a full disk on demand), and running mount as root.
#![allow(dead_code)]

use std::path::Path;

use super::text;

/// `program` as root: directly when we are root, else through `sudo -n` (as scripts/test.sh
/// installs packages).
pub fn as_root(program: &str) -> std::process::Command {
    use std::os::unix::fs::MetadataExt;
    // /proc/self belongs to this process's effective user.
    if std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0) {
        std::process::Command::new(program)
    } else {
        let mut sudo = std::process::Command::new("sudo");
        sudo.args(["-n", program]);
        sudo
    }
}

/// A tmpfs of a given size mounted on its own temporary directory for one test, unmounted
/// (lazily, so a file still open cannot keep it) and removed when dropped.
pub struct SmallDisk {
    mount_point: tempfile::TempDir,
}

impl SmallDisk {
    pub fn mount(size: &str) -> SmallDisk {
        let mount_point = tempfile::tempdir().expect("mount point");
        let out = as_root("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=1777"),
                "tmpfs",
            ])
            .arg(mount_point.path())
            .output()
            .expect("run mount");
        assert!(
            out.status.success(),
            "mounting a {size} tmpfs for the store failed (this test needs root or \
             passwordless sudo, as scripts/test.sh does): {}",
            text(&out.stderr)
        );
        SmallDisk { mount_point }
    }

    pub fn path(&self) -> &Path {
        self.mount_point.path()
    }

    pub fn resize(&self, size: &str) {
        let out = as_root("mount")
            .args(["-o", &format!("remount,size={size}")])
            .arg(self.path())
            .output()
            .expect("run mount");
        assert!(out.status.success(), "remount: {}", text(&out.stderr));
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        // Before the field's own drop removes the (then empty) directory.
        let _ = as_root("umount").arg("-l").arg(self.path()).output();
    }
}
