//! `<state-dir>/rollups.jsonl`: one JSON line per collection, appended and fsync'd before the
//! workers are told (the next request's acknowledgement). A line torn by a crash (no final
//! newline) was never acknowledged: it is cut off on open and its counters come again.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use super::merge::Line;

pub(crate) const FILE_NAME: &str = "rollups.jsonl";

/// Bytes read at a time when looking for the last lines from the end.
const TAIL_BLOCK: u64 = 64 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("roll-up log {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "roll-up log {path}: its last line is not a roll-up ({source}); move the file aside to start a new log (counters the workers still hold are then written to the new one)"
    )]
    BadLine {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("roll-up line cannot be encoded: {0}")]
    Encode(serde_json::Error),
}

pub(crate) struct RollupLog {
    path: PathBuf,
    file: File,
}

impl RollupLog {
    /// Opens (creating) the log in `state_dir`, cuts a torn last line, and returns the last
    /// complete line, from which the leader resumes.
    pub(crate) fn open(state_dir: &Path) -> Result<(RollupLog, Option<Line>), LogError> {
        let path = state_dir.join(FILE_NAME);
        let io = |source| LogError::Io {
            path: path.clone(),
            source,
        };
        let created = !path.exists();
        let mut file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(&path)
            .map_err(io)?;
        if created {
            // The file's name must survive a crash too.
            File::open(state_dir)
                .and_then(|d| d.sync_all())
                .map_err(io)?;
        }
        let len = file.metadata().map_err(io)?.len();
        let (lines, complete) = tail(&mut file, len, 1).map_err(io)?;
        if complete < len {
            file.set_len(complete).map_err(io)?;
            file.sync_all().map_err(io)?;
            tracing::warn!(path = %path.display(), cut = len - complete, "roll-up log ended in a torn line (a crash while writing it); cut off, its counters come again");
        }
        let last = match lines.last() {
            Some(text) => Some(
                serde_json::from_str(text).map_err(|source| LogError::BadLine {
                    path: path.clone(),
                    source,
                })?,
            ),
            None => None,
        };
        Ok((RollupLog { path, file }, last))
    }

    /// Appends `line` and makes it durable.
    pub(crate) fn append(&mut self, line: &Line) -> Result<(), LogError> {
        let mut text = serde_json::to_string(line).map_err(LogError::Encode)?;
        text.push('\n');
        let io = |source| LogError::Io {
            path: self.path.clone(),
            source,
        };
        let before = self.file.metadata().map_err(io)?.len();
        let written = (self.file.write_all(text.as_bytes())).and_then(|()| self.file.sync_data());
        if let Err(e) = written {
            // A part of the line (disk full) would glue onto the next one: cut it off.
            let _ = self.file.set_len(before);
            return Err(io(e));
        }
        Ok(())
    }
}

/// The last `n` complete lines of the log at `path` (oldest first), for `sqdctl rollups`.
pub(crate) fn last_lines(path: &Path, n: usize) -> std::io::Result<Vec<String>> {
    let mut file = File::open(path)?;
    let len = file.metadata()?.len();
    Ok(tail(&mut file, len, n)?.0)
}

/// The last `n` newline-terminated lines of the first `len` bytes of `file`, read backwards
/// in blocks (the log grows without bound), and where the complete lines end.
fn tail(file: &mut File, len: u64, n: usize) -> std::io::Result<(Vec<String>, u64)> {
    let mut buf: Vec<u8> = Vec::new();
    let mut start = len;
    // Where the last newline is, once found: bytes after it are a torn line.
    let mut complete: Option<u64> = None;
    loop {
        let newlines = buf.iter().filter(|&&b| b == b'\n').count();
        if start == 0 || (complete.is_some() && newlines > n) {
            break;
        }
        let from = start.saturating_sub(TAIL_BLOCK);
        let mut block = vec![0; usize::try_from(start - from).unwrap_or(0)];
        file.seek(SeekFrom::Start(from))?;
        file.read_exact(&mut block)?;
        block.extend_from_slice(&buf);
        buf = block;
        start = from;
        if complete.is_none() {
            complete = buf
                .iter()
                .rposition(|&b| b == b'\n')
                .map(|i| start + i as u64 + 1);
        }
    }
    let end = complete.unwrap_or(0);
    let text = &buf[..usize::try_from(end - start).unwrap_or(0)];
    let mut lines: Vec<String> = (text.split(|&b| b == b'\n'))
        .filter(|l| !l.is_empty())
        .map(|l| String::from_utf8_lossy(l).into_owned())
        .collect();
    // With the whole file read there is no partial first line; otherwise the first piece may
    // be one and is dropped.
    if start > 0 && !lines.is_empty() {
        lines.remove(0);
    }
    let keep = lines.len().saturating_sub(n);
    Ok((lines.split_off(keep), end))
}
