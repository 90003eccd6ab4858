//! `<state-dir>/alerts.jsonl`: one notification per line, fsync'd before anyone is told,
//! rotated by size into `alerts.jsonl.1` (the older file kept, the one before it dropped).
//! The SQLite log is the source of truth: at start the file is completed from it, so a crash
//! between the commit and the write loses no line and repeats none.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

/// Size at which the file is rotated.
pub(crate) const ROTATE_BYTES: u64 = 64 << 20;

#[derive(Debug, thiserror::Error)]
#[error("alert log {path}: {source}; check the state dir's disk (space, permissions)")]
pub struct JournalError {
    path: PathBuf,
    source: std::io::Error,
}

pub(crate) struct Journal {
    path: PathBuf,
    file: File,
    size: u64,
    rotate_bytes: u64,
}

impl Journal {
    /// Opens (creates) the file, cutting a torn last line a crash may have left.
    pub(crate) fn open(dir: &Path, rotate_bytes: u64) -> Result<Self, JournalError> {
        let path = dir.join("alerts.jsonl");
        let fail = |source| JournalError {
            path: path.clone(),
            source,
        };
        let mut file = OpenOptions::new()
            .create(true)
            .read(true)
            .append(true)
            .open(&path)
            .map_err(fail)?;
        let keep = complete_len(&mut file).map_err(fail)?;
        file.set_len(keep).map_err(fail)?;
        Ok(Journal {
            path,
            file,
            size: keep,
            rotate_bytes: rotate_bytes.max(1),
        })
    }

    /// The id of the last line written (in this file, else in the rotated one), 0 if none.
    pub(crate) fn last_id(&self) -> u64 {
        let rotated = self.path.with_extension("jsonl.1");
        [self.path.as_path(), rotated.as_path()]
            .into_iter()
            .find_map(|p| last_line(p).and_then(|l| id_of(&l)))
            .unwrap_or(0)
    }

    /// Appends `lines` (JSON objects without newline) and fsyncs; rotates first when the
    /// file is full.
    pub(crate) fn append<'a>(
        &mut self,
        lines: impl IntoIterator<Item = &'a str>,
    ) -> Result<(), JournalError> {
        let mut buf = String::new();
        for line in lines {
            buf.push_str(line);
            buf.push('\n');
        }
        if buf.is_empty() {
            return Ok(());
        }
        if self.size > 0 && self.size + buf.len() as u64 > self.rotate_bytes {
            self.rotate()?;
        }
        let fail = |source| JournalError {
            path: self.path.clone(),
            source,
        };
        self.file.write_all(buf.as_bytes()).map_err(fail)?;
        self.file.sync_data().map_err(fail)?;
        self.size += buf.len() as u64;
        Ok(())
    }

    fn rotate(&mut self) -> Result<(), JournalError> {
        let fail = |source| JournalError {
            path: self.path.clone(),
            source,
        };
        std::fs::rename(&self.path, self.path.with_extension("jsonl.1")).map_err(fail)?;
        self.file = OpenOptions::new()
            .create(true)
            .read(true)
            .append(true)
            .open(&self.path)
            .map_err(fail)?;
        // The rename must be durable before lines go to the new file.
        if let Some(dir) = self.path.parent() {
            File::open(dir).and_then(|d| d.sync_all()).map_err(fail)?;
        }
        self.size = 0;
        Ok(())
    }
}

/// The length up to and including the last newline.
fn complete_len(file: &mut File) -> std::io::Result<u64> {
    let len = file.metadata()?.len();
    let start = len.saturating_sub(64 << 10);
    file.seek(SeekFrom::Start(start))?;
    let mut tail = Vec::new();
    file.read_to_end(&mut tail)?;
    Ok(match tail.iter().rposition(|&b| b == b'\n') {
        Some(at) => start + at as u64 + 1,
        // No newline in the tail: a file of one torn line, or a line longer than the tail
        // (never written by sqd); keep it rather than guess.
        None if start > 0 => len,
        None => 0,
    })
}

fn last_line(path: &Path) -> Option<String> {
    let mut file = File::open(path).ok()?;
    let len = file.metadata().ok()?.len();
    file.seek(SeekFrom::Start(len.saturating_sub(64 << 10)))
        .ok()?;
    let mut tail = String::new();
    file.read_to_string(&mut tail).ok()?;
    tail.lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .map(str::to_owned)
}

fn id_of(line: &str) -> Option<u64> {
    #[derive(serde::Deserialize)]
    struct Id {
        id: u64,
    }
    serde_json::from_str::<Id>(line).ok().map(|i| i.id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn appends_rotates_keeping_the_older_file_and_cuts_a_torn_line() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut j = Journal::open(dir.path(), 40).expect("open");
        assert_eq!(j.last_id(), 0);
        j.append([r#"{"id":1,"x":"aaaaaaaa"}"#]).expect("1");
        j.append([r#"{"id":2,"x":"bbbbbbbb"}"#]).expect("2");
        j.append([r#"{"id":3,"x":"cccccccc"}"#]).expect("3");
        let read = |name: &str| std::fs::read_to_string(dir.path().join(name)).unwrap_or_default();
        assert_eq!(read("alerts.jsonl"), "{\"id\":3,\"x\":\"cccccccc\"}\n");
        assert_eq!(read("alerts.jsonl.1"), "{\"id\":2,\"x\":\"bbbbbbbb\"}\n");
        assert_eq!(j.last_id(), 3);
        drop(j);
        let mut f = OpenOptions::new()
            .append(true)
            .open(dir.path().join("alerts.jsonl"))
            .expect("reopen");
        f.write_all(b"{\"id\":4,\"x\"").expect("torn");
        let j = Journal::open(dir.path(), 1 << 20).expect("open again");
        assert_eq!(j.last_id(), 3);
        assert_eq!(read("alerts.jsonl"), "{\"id\":3,\"x\":\"cccccccc\"}\n");
    }
}
