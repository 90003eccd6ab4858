//! Where claims live inside a client directory: `<dir>/.sqd/claim/<worker>-<epoch>/`, renamed
//! to `<worker>-<epoch>.released` when its worker stopped gracefully. The one place these
//! names are built and parsed.

use std::path::{Path, PathBuf};

use super::{SQD_DIR, name_path};

/// Suffix a worker gives its claim dir when it stops serving a client gracefully: what is
/// left inside was never committed, so any later owner may take it at once.
const RELEASED_SUFFIX: &str = ".released";

/// A claim directory's identity: its owner, the epoch it was claimed under, its state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ClaimDir {
    pub(crate) worker: String,
    pub(crate) epoch: u64,
    pub(crate) released: bool,
}

impl ClaimDir {
    /// The live claim dir of (worker, epoch).
    pub(crate) fn live(worker: &str, epoch: u64) -> ClaimDir {
        ClaimDir {
            worker: worker.to_owned(),
            epoch,
            released: false,
        }
    }

    /// Its directory name.
    pub(crate) fn name(&self) -> String {
        let suffix = if self.released { RELEASED_SUFFIX } else { "" };
        format!("{}-{}{suffix}", self.worker, self.epoch)
    }

    /// Parses a listed claim directory name back into its owner, epoch and state.
    pub(crate) fn parse(name: &[u8]) -> Option<ClaimDir> {
        let name = std::str::from_utf8(name).ok()?;
        let (name, released) = match name.strip_suffix(RELEASED_SUFFIX) {
            Some(n) => (n, true),
            None => (name, false),
        };
        let (worker, epoch) = name.rsplit_once('-')?;
        Some(ClaimDir {
            worker: worker.to_owned(),
            epoch: epoch.parse().ok()?,
            released,
        })
    }
}

/// The claim area of one client directory.
#[derive(Debug, Clone)]
pub(crate) struct ClaimLayout {
    dir: PathBuf,
}

impl ClaimLayout {
    pub(crate) fn new(dir: impl Into<PathBuf>) -> ClaimLayout {
        ClaimLayout { dir: dir.into() }
    }

    /// The client directory itself.
    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }

    /// `<dir>/.sqd`.
    pub(crate) fn sqd_dir(&self) -> PathBuf {
        self.dir.join(SQD_DIR)
    }

    /// `<dir>/.sqd/claim`, where every worker's claim dirs sit side by side.
    pub(crate) fn root(&self) -> PathBuf {
        self.dir.join(Self::root_rel())
    }

    fn root_rel() -> PathBuf {
        Path::new(SQD_DIR).join("claim")
    }

    /// The path of a claim dir.
    pub(crate) fn path(&self, claim: &ClaimDir) -> PathBuf {
        self.dir.join(Self::relative(claim))
    }

    /// A claim dir's path relative to the client directory (batch scripts `cd` there first).
    pub(crate) fn relative(claim: &ClaimDir) -> PathBuf {
        Self::root_rel().join(claim.name())
    }

    /// The path of a claim dir under the name it was listed with (kept byte for byte).
    pub(crate) fn listed(&self, name: &[u8]) -> PathBuf {
        self.root().join(name_path(name))
    }

    /// Where a listed claim dir goes once released.
    pub(crate) fn released(&self, name: &[u8]) -> PathBuf {
        let mut released = name.to_vec();
        released.extend_from_slice(RELEASED_SUFFIX.as_bytes());
        self.root().join(name_path(&released))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn claim_dir_names_round_trip() {
        let d = ClaimDir::parse(ClaimDir::live("w-1", 42).name().as_bytes()).unwrap();
        assert_eq!((d.worker.as_str(), d.epoch, d.released), ("w-1", 42, false));
        let r = ClaimDir::parse(b"w-1-42.released").unwrap();
        assert_eq!((r.worker.as_str(), r.epoch, r.released), ("w-1", 42, true));
        assert_eq!(r.name(), "w-1-42.released");
        assert_eq!(ClaimDir::parse(b"junk"), None);
        assert_eq!(ClaimDir::parse(b"w-x"), None);
    }

    #[test]
    fn the_layout_puts_claims_under_the_hidden_sqd_dir() {
        let l = ClaimLayout::new("/data/stats");
        let mine = ClaimDir::live("w1", 7);
        assert_eq!(l.path(&mine), Path::new("/data/stats/.sqd/claim/w1-7"));
        assert_eq!(ClaimLayout::relative(&mine), Path::new(".sqd/claim/w1-7"));
        assert_eq!(l.root(), Path::new("/data/stats/.sqd/claim"));
        assert_eq!(l.sqd_dir(), Path::new("/data/stats/.sqd"));
        assert_eq!(
            l.released(b"w1-7"),
            Path::new("/data/stats/.sqd/claim/w1-7.released")
        );
    }
}
