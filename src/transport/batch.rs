//! Batch mode's wire protocol, without I/O: the shell script one batch sends to the helper
//! shell on the producing host, and the reader of its reply.
//!
//! Where the client's key may run commands and the host has GNU tar and coreutils, a worker
//! starts one `sh -s` per connection (the login shell and its rc files run once, not per
//! batch). Each batch is then one script: remove the durable files of the previous batch
//! (`rm -f`), claim this batch (`mv -n`, an atomic rename that never replaces), stream the
//! claimed files (`tar`). Per file that is three local syscalls on the host instead of six
//! SFTP round trips. The reply on stdout is framed by marker lines carrying a per-batch nonce:
//!
//! ```text
//! sqd:CLAIMED:<nonce>
//! sqd:BEGIN:<nonce>                     (per tar section)
//! <GNU tar archive, zero-padded to its record size>
//! \nsqd:END:<nonce>:<tar status>
//! sqd:REMOVED:<nonce>:<rm status>      (when there was something to remove: the removals
//!                                       run in the background meanwhile)
//! sqd:DONE:<nonce>
//! ```
//! or `sqd:NODIR:<nonce>` then `sqd:DONE:<nonce>` when the directory cannot be entered.

use std::io::{self, BufRead};

use crate::store::StoreError;

/// The command the probe runs, and what its output must contain.
pub(crate) const PROBE: &str = "tar --version; mv --version";
pub(crate) const PROBE_MARKERS: [&str; 2] = ["GNU tar", "GNU coreutils"];
/// The long-lived helper: a POSIX shell reading the batch scripts on stdin.
pub(crate) const HELPER: &str = "exec sh -s";

/// Most names per remote command line, and most bytes of quoted names (far below ARG_MAX).
const NAMES_PER_COMMAND: usize = 500;
const BYTES_PER_COMMAND: usize = 96 * 1024;
/// Removals run as parallel `rm` commands of this many names: an unlink waits on the
/// host's disk (journal, discard), and several in flight finish far sooner (measured: 1,000
/// files in 43 ms by four, 101 ms by one).
const NAMES_PER_REMOVAL: usize = 250;

/// One batch: what to remove, claim and stream.
#[derive(Debug, Clone, Copy)]
pub(crate) struct BatchPlan<'a> {
    /// The client's directory (relative paths start at the login directory, as over SFTP).
    pub dir: &'a str,
    /// The claim directory, relative to `dir`.
    pub claim_dir: &'a str,
    /// Names in the claim dir whose commit is durable.
    pub remove: &'a [&'a [u8]],
    /// Names in `dir` to move into the claim dir.
    pub claim: &'a [&'a [u8]],
    /// Names in the claim dir to stream (after the claim).
    pub stream: &'a [&'a [u8]],
}

/// One regular file of the stream, in archive order.
pub(crate) struct StreamedFile<'a> {
    pub name: &'a [u8],
    /// Size and mtime as the host's `tar` saw them right before reading the file.
    pub size: u64,
    pub mtime: i64,
    pub content: &'a mut dyn io::Read,
}

/// Where the streamed files go (on a blocking thread: it writes local files).
pub(crate) trait StreamSink: Send + 'static {
    /// The claim commands have run (the files now sit in the claim dir).
    fn claimed(&mut self) {}
    /// Takes one file of the stream. A failure of the sink itself (not of reading `file`)
    /// should be returned as [`sink_failed`], so it is not taken for a broken stream.
    fn file(&mut self, file: StreamedFile<'_>) -> io::Result<()>;
    /// The archive ended: what the sink still has in flight must be done, or fail the batch.
    fn finished(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The sink's own failure (e.g. the local disk is full), carried through the stream reader.
#[derive(Debug, thiserror::Error)]
#[error(transparent)]
struct SinkFailed(StoreError);

/// Marks a store error as the sink's own failure.
pub(crate) fn sink_failed(error: StoreError) -> io::Error {
    io::Error::other(SinkFailed(error))
}

/// The store error inside `e` when `e` is the sink's own failure, else `e` itself.
pub(crate) fn sink_failure(e: io::Error) -> Result<StoreError, io::Error> {
    match e.get_ref().map(|inner| inner.is::<SinkFailed>()) {
        Some(true) => match e.into_inner().map(|inner| inner.downcast::<SinkFailed>()) {
            Some(Ok(failed)) => Ok(failed.0),
            // Checked just above; kept total rather than unwrapped.
            Some(Err(inner)) => Err(io::Error::other(inner)),
            None => Err(io::Error::other("sink failure without its error")),
        },
        _ => Err(e),
    }
}

/// How a batch ended on the host.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct BatchEnd {
    /// Whether every removal succeeded (`None`: nothing to remove).
    pub removed: Option<bool>,
    /// Every `tar` exited 0: GNU tar saw no file change size or ctime while reading it and
    /// found every name. Otherwise the caller checks the received files again.
    pub clean: bool,
    /// The client's directory could not be entered.
    pub dir_missing: bool,
}

/// `s` as one shell word: single-quoted, any bytes but NUL (a `'` is closed, escaped and
/// reopened).
pub(crate) fn shell_quote(out: &mut Vec<u8>, s: &[u8]) {
    out.push(b'\'');
    for &b in s {
        if b == b'\'' {
            out.extend_from_slice(b"'\\''");
        } else {
            out.push(b);
        }
    }
    out.push(b'\'');
}

/// Command lines `head ARG...` with `args` spread over as many lines as the limits need
/// (at most `per_line` names each).
fn commands(out: &mut Vec<u8>, head: &str, tail: &str, args: &[Vec<u8>], per_line: usize) {
    let mut start = 0;
    while start < args.len() {
        let mut end = start;
        let mut bytes = 0;
        while end < args.len()
            && end - start < per_line.min(NAMES_PER_COMMAND)
            && (end == start || bytes + args[end].len() <= BYTES_PER_COMMAND)
        {
            bytes += args[end].len() + 1;
            end += 1;
        }
        out.extend_from_slice(head.as_bytes());
        for a in &args[start..end] {
            out.push(b' ');
            out.extend_from_slice(a);
        }
        out.extend_from_slice(tail.as_bytes());
        out.push(b'\n');
        start = end;
    }
}

/// Quoted `prefix/name` words.
fn words(prefix: &[u8], names: &[&[u8]]) -> Vec<Vec<u8>> {
    names
        .iter()
        .map(|n| {
            let mut path = prefix.to_vec();
            path.push(b'/');
            path.extend_from_slice(n);
            let mut w = Vec::with_capacity(path.len() + 2);
            shell_quote(&mut w, &path);
            w
        })
        .collect()
}

/// Waits for the background removals (pids in "$@"); `r` turns 1 if any failed. Waiting
/// twice is harmless: `wait` on a reaped pid fails, but `r` already holds its status.
const WAIT_REMOVALS: &[u8] = b"for p; do wait \"$p\" || r=1; done; set --\n";

/// Whether a name is both removed and claimed or streamed by `plan`.
fn removal_meets_batch(plan: &BatchPlan<'_>) -> bool {
    let removed: std::collections::HashSet<&[u8]> = plan.remove.iter().copied().collect();
    plan.claim
        .iter()
        .chain(plan.stream)
        .any(|n| removed.contains(n))
}

/// The script of one batch (see the module doc for its reply).
pub(crate) fn script(plan: &BatchPlan<'_>, nonce: &str) -> Vec<u8> {
    let mut out = Vec::new();
    let mut claim = Vec::new();
    shell_quote(&mut claim, plan.claim_dir.as_bytes());
    let claim = String::from_utf8_lossy(&claim).into_owned();
    out.extend_from_slice(b"if cd && cd -- ");
    shell_quote(&mut out, plan.dir.as_bytes());
    out.extend_from_slice(b" </dev/null; then\n");
    if !plan.remove.is_empty() {
        // In parallel; their pids collect in "$@", then each one's status is checked.
        out.extend_from_slice(b"r=0\nset --\n");
        commands(
            &mut out,
            "rm -f --",
            " </dev/null & set -- \"$@\" $!",
            &words(plan.claim_dir.as_bytes(), plan.remove),
            NAMES_PER_REMOVAL,
        );
        if removal_meets_batch(plan) {
            // A name both removed and claimed: the removal must be over before the claim.
            out.extend_from_slice(WAIT_REMOVALS);
        }
    }
    if !plan.claim.is_empty() {
        commands(
            &mut out,
            &format!("mv -n -t {claim} --"),
            " </dev/null 2>/dev/null",
            &words(b".", plan.claim),
            NAMES_PER_COMMAND,
        );
    }
    out.extend_from_slice(format!("printf 'sqd:CLAIMED:{nonce}\\n'\n").as_bytes());
    if !plan.stream.is_empty() {
        // gnu format: integer mtimes and long names in 'L' records; --hard-dereference: a
        // file linked twice comes in full both times; --no-recursion: a name that turned into
        // a directory is not walked; --no-unquote: a backslash in a name is just a byte.
        commands(
            &mut out,
            &format!(
                "printf 'sqd:BEGIN:{nonce}\\n'; tar --format=gnu --hard-dereference --no-recursion --no-unquote -b 256 -C {claim} -cf - --"
            ),
            &format!(" </dev/null; printf '\\nsqd:END:{nonce}:%d\\n' \"$?\""),
            &words(b".", plan.stream),
            NAMES_PER_COMMAND,
        );
    }
    if !plan.remove.is_empty() {
        // The removals ran meanwhile; their statuses are collected last.
        out.extend_from_slice(WAIT_REMOVALS);
        out.extend_from_slice(format!("printf 'sqd:REMOVED:{nonce}:%d\\n' \"$r\"\n").as_bytes());
    }
    out.extend_from_slice(
        format!("else\nprintf 'sqd:NODIR:{nonce}\\n'\nfi\nprintf 'sqd:DONE:{nonce}\\n'\n")
            .as_bytes(),
    );
    out
}

/// The line the helper prints once before its first reply.
pub(crate) fn ready_line(nonce: &str) -> String {
    format!("printf 'sqd:READY:{nonce}\\n'\n")
}

/// Most output of the login shell's rc files skipped before the helper's first reply.
const NOISE_LIMIT: usize = 1 << 20;

/// Skips what the login shell's rc files printed (a `.bashrc` may greet even a
/// non-interactive shell) up to the helper's ready line.
pub(crate) fn skip_until_ready<R: BufRead>(input: &mut R, nonce: &str) -> io::Result<()> {
    let ready = format!("sqd:READY:{nonce}");
    let mut skipped = 0;
    let mut line = Vec::new();
    loop {
        line.clear();
        let n = input.read_until(b'\n', &mut line)?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the helper shell on the host ended before it was ready",
            ));
        }
        if line.trim_ascii_end() == ready.as_bytes() {
            return Ok(());
        }
        skipped += n;
        if skipped > NOISE_LIMIT {
            return Err(invalid(
                "the login shell printed over 1 MiB before the helper was ready; quiet its rc files or set transfer = \"sftp\"".into(),
            ));
        }
    }
}

fn invalid(what: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what)
}

/// Reads one batch's reply, handing each streamed regular file to `sink`. Entries that are
/// not regular files are skipped unread.
pub(crate) fn read_reply<R: BufRead>(
    input: &mut R,
    nonce: &str,
    sink: &mut dyn StreamSink,
) -> io::Result<BatchEnd> {
    let mut end = BatchEnd {
        clean: true,
        ..BatchEnd::default()
    };
    let mut line = Vec::new();
    loop {
        line.clear();
        if input.read_until(b'\n', &mut line)? == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the helper shell on the host ended mid-batch",
            ));
        }
        // A tar section ends with zero padding up to its record size, then the END line's
        // leading newline.
        let text = line.trim_ascii_end();
        let text = &text[text.iter().take_while(|b| **b == 0).count()..];
        if text.is_empty() {
            continue;
        }
        let text = std::str::from_utf8(text)
            .map_err(|_| invalid("the helper shell printed something unexpected".into()))?;
        let mut parts = text.splitn(4, ':');
        let (tag, kind, got, status) = (parts.next(), parts.next(), parts.next(), parts.next());
        if tag != Some("sqd") || got != Some(nonce) {
            return Err(invalid(format!(
                "the helper shell printed something unexpected: {:?}",
                text.chars().take(80).collect::<String>()
            )));
        }
        let ok = status == Some("0");
        match kind {
            Some("REMOVED") => end.removed = Some(ok),
            Some("CLAIMED") => sink.claimed(),
            Some("BEGIN") => {
                // tar that failed before writing anything leaves the END line right here.
                if input.fill_buf()?.first() != Some(&b'\n') {
                    read_archive(input, sink)?;
                }
            }
            Some("END") => end.clean &= ok,
            Some("NODIR") => end.dir_missing = true,
            Some("DONE") => {
                sink.finished()?;
                return Ok(end);
            }
            _ => return Err(invalid(format!("unknown reply line {text:?}"))),
        }
    }
}

/// Reads one tar archive up to its end-of-archive block.
fn read_archive<R: BufRead>(input: &mut R, sink: &mut dyn StreamSink) -> io::Result<()> {
    let mut archive = tar::Archive::new(input);
    for entry in archive.entries()? {
        let mut entry = entry?;
        if !entry.header().entry_type().is_file() {
            continue;
        }
        let path = entry.path_bytes().into_owned();
        let name = path.strip_prefix(b"./").unwrap_or(&path);
        let size = entry.size();
        let mtime = entry.header().mtime().unwrap_or(0);
        sink.file(StreamedFile {
            name,
            size,
            mtime: i64::try_from(mtime).unwrap_or(i64::MAX),
            content: &mut entry,
        })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::os::unix::ffi::OsStrExt;

    #[derive(Default)]
    struct Collect {
        claimed: bool,
        files: Vec<(Vec<u8>, Vec<u8>, u64)>,
    }
    impl StreamSink for Collect {
        fn claimed(&mut self) {
            self.claimed = true;
        }
        fn file(&mut self, f: StreamedFile<'_>) -> io::Result<()> {
            let mut data = Vec::new();
            f.content.read_to_end(&mut data)?;
            self.files.push((f.name.to_vec(), data, f.size));
            Ok(())
        }
    }

    #[test]
    fn a_sink_failure_keeps_its_store_error_through_the_reader() {
        let full = std::io::Error::from_raw_os_error(nix::libc::ENOSPC);
        let e = sink_failed(StoreError::io(std::path::Path::new("/s"), full));
        let store = sink_failure(e).expect("the sink's own failure");
        assert!(matches!(store, StoreError::DiskFull { .. }), "{store}");
        let broken = io::Error::new(io::ErrorKind::UnexpectedEof, "stream ended");
        let back = sink_failure(broken).expect_err("not the sink's");
        assert_eq!(back.kind(), io::ErrorKind::UnexpectedEof);
    }

    #[test]
    fn quoting_survives_quotes_and_newlines() {
        let mut out = Vec::new();
        shell_quote(&mut out, b"it's\na");
        assert_eq!(out, b"'it'\\''s\na'");
    }

    #[test]
    fn long_lists_are_split_into_several_commands() {
        let args: Vec<Vec<u8>> = (0..1200).map(|i| format!("'f{i}'").into_bytes()).collect();
        let mut out = Vec::new();
        commands(&mut out, "rm -f --", "", &args, NAMES_PER_COMMAND);
        let lines = out.split(|b| *b == b'\n').filter(|l| !l.is_empty()).count();
        assert_eq!(lines, 3);
        let words: usize = out
            .split(|b| *b == b'\n')
            .map(|l| l.split(|b| *b == b' ').count().saturating_sub(3))
            .sum();
        assert_eq!(words, 1200);
    }

    fn gnu_tools_here() -> bool {
        std::process::Command::new("sh")
            .arg("-c")
            .arg(PROBE)
            .output()
            .map(|o| {
                let t = String::from_utf8_lossy(&o.stdout).into_owned();
                PROBE_MARKERS.iter().all(|m| t.contains(m))
            })
            .unwrap_or(false)
    }

    /// Runs the script through a local `sh -s` (as the helper would) and reads the reply.
    fn run(plan: &BatchPlan<'_>) -> (BatchEnd, Collect) {
        let mut child = std::process::Command::new("sh")
            .arg("-s")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("sh");
        let script = script(plan, "n1");
        let mut stdin = child.stdin.take().expect("stdin");
        let writer = std::thread::spawn(move || stdin.write_all(&script));
        let mut out = io::BufReader::new(child.stdout.take().expect("stdout"));
        let mut sink = Collect::default();
        let end = read_reply(&mut out, "n1", &mut sink).expect("reply");
        writer.join().expect("join").expect("write");
        let _ = child.kill();
        let _ = child.wait();
        (end, sink)
    }

    #[test]
    fn a_batch_claims_streams_and_removes_hostile_names_through_a_real_shell() {
        if !gnu_tools_here() {
            eprintln!("skipped: GNU tar and coreutils are not installed here");
            return;
        }
        let tmp = tempfile::tempdir().expect("tmp");
        let dir = tmp.path().join("it's a dir");
        let claim = ".sqd/claim/w-1";
        std::fs::create_dir_all(dir.join(claim)).expect("mkdir");
        let long = vec![b'L'; 200];
        let names: Vec<Vec<u8>> = vec![
            b"plain.jsonl".to_vec(),
            b"-starts-with-dash".to_vec(),
            b"new\nline".to_vec(),
            b"quote'and\\backslash".to_vec(),
            b"\xff\xfe non-utf8".to_vec(),
            b"*glob?[x]".to_vec(),
            long,
        ];
        for (i, n) in names.iter().enumerate() {
            std::fs::write(
                dir.join(std::ffi::OsStr::from_bytes(n)),
                vec![i as u8; 1000 * i],
            )
            .expect("write");
        }
        let all: Vec<&[u8]> = names.iter().map(Vec::as_slice).collect();
        let missing: &[u8] = b"vanished";
        let mut claim_these = all.clone();
        claim_these.push(missing);
        let dir_text = dir.to_str().expect("utf-8 temp dir");
        let plan = BatchPlan {
            dir: dir_text,
            claim_dir: claim,
            remove: &[],
            claim: &claim_these,
            stream: &claim_these,
        };
        let (end, got) = run(&plan);
        assert!(got.claimed);
        assert!(!end.clean, "a missing name makes tar exit non-zero");
        assert_eq!(end.removed, None);
        assert_eq!(got.files.len(), names.len());
        for (i, n) in names.iter().enumerate() {
            let (_, data, size) = got
                .files
                .iter()
                .find(|(name, _, _)| name == n)
                .unwrap_or_else(|| panic!("{:?} not streamed", String::from_utf8_lossy(n)));
            assert_eq!(*data, vec![i as u8; 1000 * i]);
            assert_eq!(*size, 1000 * i as u64);
            assert!(
                dir.join(claim)
                    .join(std::ffi::OsStr::from_bytes(n))
                    .exists(),
                "claimed into the claim dir"
            );
        }

        // Next batch: remove the durable ones, nothing else.
        let plan = BatchPlan {
            dir: dir_text,
            claim_dir: claim,
            remove: &all,
            claim: &[],
            stream: &[],
        };
        let (end, got) = run(&plan);
        assert_eq!(end.removed, Some(true));
        assert!(end.clean && got.files.is_empty());
        assert_eq!(
            std::fs::read_dir(dir.join(claim)).expect("ls").count(),
            0,
            "claim dir empty"
        );
    }

    /// A client directory with files already in its claim dir and files waiting.
    fn client_dir(
        claim: &str,
        claimed: &[(&str, &[u8])],
        waiting: &[(&str, &[u8])],
    ) -> tempfile::TempDir {
        let tmp = tempfile::tempdir().expect("tmp");
        std::fs::create_dir_all(tmp.path().join(claim)).expect("mkdir");
        for (name, content) in claimed {
            std::fs::write(tmp.path().join(claim).join(name), content).expect("claimed");
        }
        for (name, content) in waiting {
            std::fs::write(tmp.path().join(name), content).expect("waiting");
        }
        tmp
    }

    #[test]
    fn a_claim_never_replaces_a_file_already_claimed() {
        if !gnu_tools_here() {
            return;
        }
        let claim = ".sqd/claim/w-1";
        let tmp = client_dir(claim, &[("x", b"old")], &[("x", b"new")]);
        let names: &[&[u8]] = &[b"x"];
        let plan = BatchPlan {
            dir: tmp.path().to_str().expect("utf-8"),
            claim_dir: claim,
            remove: &[],
            claim: names,
            stream: names,
        };
        let (_, got) = run(&plan);
        assert_eq!(got.files[0].1, b"old");
        assert_eq!(
            std::fs::read(tmp.path().join("x")).expect("new stays"),
            b"new"
        );
    }

    #[test]
    fn a_name_removed_and_claimed_in_one_batch_keeps_the_new_file() {
        if !gnu_tools_here() {
            return;
        }
        let claim = ".sqd/claim/w-1";
        // "x" of the last batch is durable; the producer wrote a new "x" since.
        let tmp = client_dir(claim, &[("x", b"old"), ("y", b"old y")], &[("x", b"new")]);
        let names: &[&[u8]] = &[b"x"];
        let plan = BatchPlan {
            dir: tmp.path().to_str().expect("utf-8"),
            claim_dir: claim,
            remove: &[b"x", b"y"],
            claim: names,
            stream: names,
        };
        assert!(removal_meets_batch(&plan));
        let (end, got) = run(&plan);
        assert_eq!(end.removed, Some(true));
        assert_eq!(got.files.len(), 1);
        assert_eq!(got.files[0].1, b"new");
        assert!(!tmp.path().join(claim).join("y").exists());
    }

    #[test]
    fn a_missing_directory_is_reported() {
        let plan = BatchPlan {
            dir: "/nonexistent/sqd-test",
            claim_dir: ".sqd/claim/w-1",
            remove: &[],
            claim: &[b"a"],
            stream: &[b"a"],
        };
        let (end, got) = run(&plan);
        assert!(end.dir_missing);
        assert!(got.files.is_empty() && !got.claimed);
    }

    #[test]
    fn what_rc_files_print_before_the_first_reply_is_skipped() {
        let mut sink = Collect::default();
        let mut input = io::Cursor::new(
            b"Welcome!\nsqd:DONE:n\nsqd:READY:n\nsqd:CLAIMED:n\nsqd:DONE:n\n".to_vec(),
        );
        skip_until_ready(&mut input, "n").expect("ready");
        let end = read_reply(&mut input, "n", &mut sink).expect("reply");
        assert!(sink.claimed && end.clean);
        let mut input = io::Cursor::new(b"Welcome!\n".to_vec());
        assert!(skip_until_ready(&mut input, "n").is_err());
    }

    #[test]
    fn garbage_in_the_reply_is_an_error() {
        let mut sink = Collect::default();
        let mut input = io::Cursor::new(b"hello from .bashrc\n".to_vec());
        assert!(read_reply(&mut input, "n", &mut sink).is_err());
        let mut input = io::Cursor::new(b"sqd:CLAIMED:other\n".to_vec());
        assert!(read_reply(&mut input, "n", &mut sink).is_err());
        let mut input = io::Cursor::new(b"sqd:CLAIMED:n\n".to_vec());
        assert!(
            read_reply(&mut input, "n", &mut sink).is_err(),
            "EOF mid-batch"
        );
    }
}
