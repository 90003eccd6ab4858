//! Writing staged files: hashing the bytes as they arrive and getting them to disk at the
//! least CPU cost, so the group commit's `syncfs` finds little left to do.
//!
//! Small files go through a plain buffered writer: the page cache gathers them and one
//! `syncfs` per batch makes them durable. A file of at least [`DIRECT_MIN`] bytes is written
//! with `O_DIRECT` by one writer thread per batch, in aligned blocks of up to 1 MiB, while the
//! stream's reader goes on reading and hashing; only an unaligned tail goes through the page
//! cache. Copying into the page cache costs far more CPU than the disk write itself (on the
//! development VM 0.65-1.2 core-s per GB buffered, 0.1-0.2 direct) and that copy is never read
//! before the commit; on a machine whose cores also run the SSH decryption, that CPU is
//! throughput. Where the filesystem refuses `O_DIRECT` (tmpfs, some FUSE filesystems) files
//! fall back to buffered writes, with writeback started every [`WRITEBACK_EVERY`] bytes.
//!
//! Every write is done when [`StagingWriter::wait`] returns; only then may the batch commit.

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::os::fd::AsFd;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError, mpsc};
use std::thread::JoinHandle;

use nix::fcntl::{FcntlArg, OFlag, fcntl};

/// Files at least this large are written with `O_DIRECT` (smaller ones would each wait for
/// the disk on their own; the page cache batches them better).
pub(crate) const DIRECT_MIN: u64 = 128 << 10;
/// Size of a direct write; also the largest block queued for the writer thread.
const BLOCK: usize = 1 << 20;
/// `O_DIRECT` needs buffers, offsets and lengths aligned to the device's logical block size;
/// 4 KiB covers 512-byte and 4 KiB devices alike.
const ALIGN: usize = 4096;
/// Blocks queued for the writer thread besides the one it writes and the one being filled.
const QUEUED_BLOCKS: usize = 3;
/// Spent blocks kept for reuse: enough for a full queue plus the ones being filled and written.
const POOLED_BLOCKS: usize = QUEUED_BLOCKS + 2;
/// Buffered large files (no `O_DIRECT`): start writeback after this much new data.
pub(crate) const WRITEBACK_EVERY: u64 = 32 << 20;

/// A heap buffer with a [`BLOCK`]-byte window aligned to [`ALIGN`], in safe code: the vector is
/// over-allocated by one alignment and the window starts at the first aligned byte.
struct AlignedBlock {
    raw: Vec<u8>,
    start: usize,
    len: usize,
}

impl AlignedBlock {
    fn new() -> AlignedBlock {
        let raw = vec![0u8; BLOCK + ALIGN];
        let start = raw.as_ptr().align_offset(ALIGN).min(ALIGN);
        AlignedBlock { raw, start, len: 0 }
    }
    fn filled(&self) -> &[u8] {
        &self.raw[self.start..self.start + self.len]
    }
    /// A placeholder that owns no memory (after a file's last block was handed off).
    fn empty() -> AlignedBlock {
        AlignedBlock {
            raw: Vec::new(),
            start: 0,
            len: 0,
        }
    }
    fn free_space(&mut self) -> &mut [u8] {
        &mut self.raw[self.start + self.len..self.start + BLOCK]
    }
}

/// One write for the writer thread: `block` goes to `file` at `at` (a multiple of [`BLOCK`]).
/// A `last` block may end unaligned: its aligned part is written direct, the rest buffered.
struct Job {
    file: Arc<File>,
    block: AlignedBlock,
    at: u64,
    last: bool,
}

/// The writer thread of a batch and the blocks it hands back for reuse.
struct Thread {
    jobs: mpsc::SyncSender<Job>,
    handle: JoinHandle<()>,
}

/// Creates the staged files of one batch and owns the writer thread of their direct writes
/// (started with the first large file).
#[derive(Default)]
pub(crate) struct StagingWriter {
    /// Never use `O_DIRECT` (see [`StagingWriter::buffered`]).
    buffered_only: bool,
    thread: Option<Thread>,
    spare: Arc<Mutex<Vec<AlignedBlock>>>,
    /// The first failed direct write: it fails the batch.
    failed: Arc<Mutex<Option<io::Error>>>,
}

impl StagingWriter {
    /// A writer that only writes through the page cache. For the SFTP path, where a file's
    /// chunks arrive on async tasks with hundreds of files in flight: a queue that can block
    /// would stall the runtime, and a block buffer per file in flight would cost memory.
    pub(crate) fn buffered() -> StagingWriter {
        StagingWriter {
            buffered_only: true,
            ..StagingWriter::default()
        }
    }

    /// Creates `path` (never replacing a file). `expected` is the listed size: it only picks
    /// the write mode.
    pub(crate) fn create(&mut self, path: &Path, expected: u64) -> io::Result<StagingFile> {
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(path)?;
        let mode = match self.direct_queue(&file, expected) {
            Some(jobs) => Mode::Direct(DirectFile {
                file: Arc::new(file),
                filling: self.spare_block(),
                offset: 0,
                jobs,
                spare: self.spare.clone(),
                failed: self.failed.clone(),
            }),
            None => Mode::Buffered {
                out: BufWriter::with_capacity(256 * 1024, file),
                since_writeback: 0,
            },
        };
        Ok(StagingFile {
            hasher: blake3::Hasher::new(),
            written: 0,
            mode,
        })
    }

    /// The writer thread's queue when `file` should be written direct and can be.
    fn direct_queue(&mut self, file: &File, expected: u64) -> Option<mpsc::SyncSender<Job>> {
        if self.buffered_only || expected < DIRECT_MIN {
            return None;
        }
        if self.thread.is_none() {
            let (jobs, queue) = mpsc::sync_channel::<Job>(QUEUED_BLOCKS);
            let spare = self.spare.clone();
            let failed = self.failed.clone();
            // No thread to be had (resource limits): this file goes through the page cache.
            let handle = std::thread::Builder::new()
                .name("sqd-stage-write".into())
                .spawn(move || write_jobs(queue, &spare, &failed))
                .ok()?;
            self.thread = Some(Thread { jobs, handle });
        }
        // Last, so a file that gets no queue never has `O_DIRECT` set.
        set_direct(file, true).ok()?;
        self.thread.as_ref().map(|t| t.jobs.clone())
    }

    fn spare_block(&self) -> AlignedBlock {
        let reused = lock(&self.spare).pop();
        let mut block = reused.unwrap_or_else(AlignedBlock::new);
        block.len = 0;
        block
    }

    /// Waits until every queued write is done; the first write that failed, if any. Every
    /// [`StagingFile`] this writer created must be finished or dropped first (each holds the
    /// queue open).
    pub(crate) fn wait(&mut self) -> io::Result<()> {
        if let Some(Thread { jobs, handle }) = self.thread.take() {
            drop(jobs);
            if handle.join().is_err() {
                return Err(io::Error::other("the staging writer thread panicked"));
            }
        }
        match lock(&self.failed).take() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The writer thread: writes each job in order; after a failure it only drains the queue
/// (the batch fails as a whole).
fn write_jobs(
    queue: mpsc::Receiver<Job>,
    spare: &Mutex<Vec<AlignedBlock>>,
    failed: &Mutex<Option<io::Error>>,
) {
    for job in queue {
        if lock(failed).is_none()
            && let Err(e) = write_job(&job)
        {
            *lock(failed) = Some(e);
        }
        let mut pool = lock(spare);
        if pool.len() < POOLED_BLOCKS && !job.block.raw.is_empty() {
            pool.push(job.block);
        }
    }
}

fn write_job(job: &Job) -> io::Result<()> {
    let bytes = job.block.filled();
    let aligned = if job.last {
        bytes.len() / ALIGN * ALIGN
    } else {
        bytes.len()
    };
    if aligned > 0 {
        write_direct(&job.file, &bytes[..aligned], job.at)?;
    }
    if aligned < bytes.len() {
        // The unaligned tail through the page cache; the commit's `syncfs` makes it durable.
        set_direct(&job.file, false)?;
        job.file
            .write_all_at(&bytes[aligned..], job.at + aligned as u64)?;
    }
    Ok(())
}

/// One aligned direct write; a filesystem that turns out to refuse it (EINVAL) gets the same
/// bytes through the page cache instead.
fn write_direct(file: &File, bytes: &[u8], at: u64) -> io::Result<()> {
    match file.write_all_at(bytes, at) {
        Err(e) if e.raw_os_error() == Some(nix::libc::EINVAL) => {
            set_direct(file, false)?;
            file.write_all_at(bytes, at)
        }
        other => other,
    }
}

fn set_direct(file: &File, on: bool) -> io::Result<()> {
    let flags = fcntl(file.as_fd(), FcntlArg::F_GETFL).map_err(io::Error::from)?;
    let mut flags = OFlag::from_bits_retain(flags);
    flags.set(OFlag::O_DIRECT, on);
    fcntl(file.as_fd(), FcntlArg::F_SETFL(flags)).map_err(io::Error::from)?;
    Ok(())
}

enum Mode {
    Buffered {
        out: BufWriter<File>,
        since_writeback: u64,
    },
    Direct(DirectFile),
}

/// A file written through the writer thread: blocks are filled here and queued there.
struct DirectFile {
    file: Arc<File>,
    filling: AlignedBlock,
    /// Offset in the file of `filling`'s first byte.
    offset: u64,
    jobs: mpsc::SyncSender<Job>,
    spare: Arc<Mutex<Vec<AlignedBlock>>>,
    failed: Arc<Mutex<Option<io::Error>>>,
}

impl DirectFile {
    fn write(&mut self, mut bytes: &[u8]) -> io::Result<()> {
        while !bytes.is_empty() {
            let room = self.filling.free_space();
            let n = room.len().min(bytes.len());
            room[..n].copy_from_slice(&bytes[..n]);
            self.filling.len += n;
            bytes = &bytes[n..];
            if self.filling.len == BLOCK {
                self.hand_off(false)?;
            }
        }
        Ok(())
    }

    /// Queues the block being filled for the writer thread and takes a spare one.
    fn hand_off(&mut self, last: bool) -> io::Result<()> {
        if let Some(e) = lock(&self.failed).as_ref() {
            // Stop early (a full disk fails every later write too); `wait` has the error.
            return Err(io::Error::new(e.kind(), e.to_string()));
        }
        let next = if last {
            AlignedBlock::empty()
        } else {
            let mut next = lock(&self.spare).pop().unwrap_or_else(AlignedBlock::new);
            next.len = 0;
            next
        };
        let block = std::mem::replace(&mut self.filling, next);
        let at = self.offset;
        self.offset += block.len as u64;
        self.jobs
            .send(Job {
                file: self.file.clone(),
                block,
                at,
                last,
            })
            .map_err(|_| io::Error::other("the staging writer thread stopped"))
    }

    /// Queues what is left, the file's last block; an empty one goes back to the pool.
    fn finish(&mut self) -> io::Result<()> {
        if self.filling.len > 0 {
            self.hand_off(true)
        } else {
            let unused = std::mem::replace(&mut self.filling, AlignedBlock::empty());
            let mut pool = lock(&self.spare);
            if pool.len() < POOLED_BLOCKS {
                pool.push(unused);
            }
            Ok(())
        }
    }
}

/// A staging file being written: [`StagingWriter::create`], `write` the bytes in order,
/// `finish`; durable once the writer's `wait` returned and the commit synced.
pub(crate) struct StagingFile {
    hasher: blake3::Hasher,
    written: u64,
    mode: Mode,
}

impl StagingFile {
    pub(crate) fn write(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.hasher.update(bytes);
        self.written += bytes.len() as u64;
        match &mut self.mode {
            Mode::Buffered {
                out,
                since_writeback,
            } => {
                out.write_all(bytes)?;
                *since_writeback += bytes.len() as u64;
                if *since_writeback >= WRITEBACK_EVERY {
                    out.flush()?;
                    start_writeback(out.get_ref());
                    *since_writeback = 0;
                }
                Ok(())
            }
            Mode::Direct(direct) => direct.write(bytes),
        }
    }

    /// Bytes written so far.
    #[cfg(test)]
    pub(crate) fn written(&self) -> u64 {
        self.written
    }

    /// Hands the rest to the file (not to disk: that is the commit's `syncfs`) and returns
    /// the size and the BLAKE3 hash of the content. Direct writes may still be queued until
    /// [`StagingWriter::wait`].
    pub(crate) fn finish(mut self) -> io::Result<(u64, [u8; 32])> {
        match &mut self.mode {
            Mode::Buffered { out, .. } => {
                out.flush()?;
                if self.written >= WRITEBACK_EVERY {
                    start_writeback(out.get_ref());
                }
            }
            Mode::Direct(direct) => direct.finish()?,
        }
        Ok((self.written, *self.hasher.finalize().as_bytes()))
    }
}

/// Starts writeback of the file's dirty pages without waiting for it (Linux does that for
/// `POSIX_FADV_DONTNEED`, which then drops the pages already clean). Best effort.
fn start_writeback(file: &File) {
    let _ = nix::fcntl::posix_fadvise(
        file.as_fd(),
        0,
        0,
        nix::fcntl::PosixFadviseAdvice::POSIX_FADV_DONTNEED,
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn pattern(len: usize, seed: u8) -> Vec<u8> {
        (0..len)
            .map(|i| (i as u32).wrapping_mul(2_654_435_761).to_le_bytes()[3] ^ seed)
            .collect()
    }

    /// Stages each (name, content, expected size) through one writer, written in `piece`-byte
    /// writes; checks every file's bytes and hash once the writer is done.
    fn stage_all(dir: &Path, files: &[(&str, Vec<u8>, u64)], piece: usize) {
        let mut writer = StagingWriter::default();
        let mut hashes = Vec::new();
        for (name, content, expected) in files {
            let mut f = writer.create(&dir.join(name), *expected).unwrap();
            for chunk in content.chunks(piece.max(1)) {
                f.write(chunk).unwrap();
            }
            assert_eq!(f.written(), content.len() as u64);
            let (size, hash) = f.finish().unwrap();
            assert_eq!(size, content.len() as u64);
            hashes.push(hash);
        }
        writer.wait().unwrap();
        for ((name, content, _), hash) in files.iter().zip(hashes) {
            assert_eq!(&std::fs::read(dir.join(name)).unwrap(), content, "{name}");
            assert_eq!(hash, *blake3::hash(content).as_bytes(), "{name}");
        }
    }

    #[test]
    fn large_files_arrive_intact_through_direct_writes() {
        let dir = tempfile::tempdir().unwrap();
        let sized = |name, len: usize, seed| (name, pattern(len, seed), len as u64);
        stage_all(
            dir.path(),
            &[
                // Many blocks, a full queue and an unaligned tail.
                sized("big", 9 * BLOCK + 12_345, 7),
                // A whole number of blocks: no tail.
                sized("exact", 2 * BLOCK, 9),
                // Shorter than one block, aligned and not.
                sized("medium", 256 << 10, 1),
                sized("odd", (200 << 10) + 1, 2),
                // Small: through the page cache, between direct ones.
                sized("small", 4096, 3),
                sized("after", 3 * BLOCK - 1, 4),
            ],
            65_537,
        );
    }

    #[test]
    fn an_existing_staging_name_is_never_replaced() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("x"), b"old").unwrap();
        let mut writer = StagingWriter::default();
        assert!(writer.create(&dir.path().join("x"), DIRECT_MIN).is_err());
        writer.wait().unwrap();
        assert_eq!(std::fs::read(dir.path().join("x")).unwrap(), b"old");
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]
        #[test]
        fn any_sizes_and_write_patterns_stage_the_same_bytes(
            lens in proptest::collection::vec(0usize..(3 << 20), 1..4),
            piece in 1usize..300_000,
            direct in any::<bool>(),
        ) {
            let dir = tempfile::tempdir().unwrap();
            // `expected` only picks the mode, so the direct path is exercised at any size.
            let files: Vec<(String, Vec<u8>, u64)> = lens
                .iter()
                .enumerate()
                .map(|(i, &len)| (format!("f{i}"), pattern(len, i as u8), if direct { DIRECT_MIN } else { 0 }))
                .collect();
            let files: Vec<(&str, Vec<u8>, u64)> =
                files.iter().map(|(n, c, e)| (n.as_str(), c.clone(), *e)).collect();
            stage_all(dir.path(), &files, piece);
        }
    }
}
