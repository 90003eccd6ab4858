//! The file model shared by the worker and the client agent: what a listed directory entry is,
//! which entries may be pulled at all (D3, D4), when a file has settled ([`SettleTracker`]),
//! and where sqd keeps its claims inside a client directory ([`ClaimLayout`]). Pure: no I/O.

mod claim;
mod settle;

use std::path::Path;

pub(crate) use claim::{ClaimDir, ClaimLayout};
pub(crate) use settle::SettleTracker;

/// sqd's own area inside a client directory (claims; the agent's pid file). Hidden, so it is
/// never a candidate itself.
pub(crate) const SQD_DIR: &str = ".sqd";

/// A remote directory entry, as listed (lstat: links are not followed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteEntry {
    /// Opaque bytes; never used to build a local path.
    pub name: Vec<u8>,
    pub kind: EntryKind,
    pub size: u64,
    pub mtime: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryKind {
    File,
    Dir,
    /// Symlink, FIFO, socket, device, or unknown: never read.
    Other,
}

/// Name suffixes of files that are still being written by convention.
const PARTIAL_SUFFIXES: [&[u8]; 2] = [b".tmp", b".part"];

/// Whether a listed entry may be pulled at all: a regular file, not hidden, not a temp file,
/// matching the client's pattern.
pub(crate) fn is_candidate(entry: &RemoteEntry, pattern: Option<&glob::Pattern>) -> bool {
    entry.kind == EntryKind::File && is_candidate_name(&entry.name, pattern)
}

/// [`is_candidate`] for a name alone (the agent sees names of files it knows are regular).
pub(crate) fn is_candidate_name(name: &[u8], pattern: Option<&glob::Pattern>) -> bool {
    if name.is_empty() || name.starts_with(b".") {
        return false;
    }
    if PARTIAL_SUFFIXES.iter().any(|s| name.ends_with(s)) {
        return false;
    }
    // Never a path: readdir names cannot hold '/', but a hostile server could send one.
    if name.contains(&b'/') || name.contains(&0) {
        return false;
    }
    match pattern {
        None => true,
        Some(p) => p.matches(&String::from_utf8_lossy(name)),
    }
}

/// A remote name as a path component (bytes, never interpreted).
pub(crate) fn name_path(name: &[u8]) -> &Path {
    use std::os::unix::ffi::OsStrExt;
    Path::new(std::ffi::OsStr::from_bytes(name))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(name: &[u8]) -> RemoteEntry {
        RemoteEntry {
            name: name.to_vec(),
            kind: EntryKind::File,
            size: 1,
            mtime: 1,
        }
    }

    #[test]
    fn only_plain_visible_complete_files_are_candidates() {
        let p = glob::Pattern::new("*.jsonl").unwrap();
        assert!(is_candidate(&file(b"a.jsonl"), Some(&p)));
        assert!(!is_candidate(&file(b"a.csv"), Some(&p)));
        assert!(is_candidate(&file(b"a.csv"), None));
        for bad in [&b".hidden"[..], b"x.tmp", b"x.part", b"", b"a/b", b"a\0b"] {
            assert!(!is_candidate(&file(bad), None), "{bad:?}");
        }
        let mut link = file(b"link");
        link.kind = EntryKind::Other;
        assert!(!is_candidate(&link, None));
        let mut dir = file(b"d");
        dir.kind = EntryKind::Dir;
        assert!(!is_candidate(&dir, None));
        // Non-UTF-8 names are opaque bytes, still pulled.
        assert!(is_candidate(&file(b"\xff\xfe.jsonl"), Some(&p)));
    }
}
