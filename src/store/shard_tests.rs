//! A batch's files and samples commit together, once (M1, hazard 28).

use super::super::conformance::{auto, stage};
use super::super::{LocalStore, Outcome, Sink};
use super::*;

/// Samples reachable through a stored series (blocks of a lost series id would not be).
fn samples(store: &LocalStore) -> i64 {
    store
        .conn()
        .query_row(
            "SELECT COALESCE(SUM(b.count), 0) FROM ts_blocks b JOIN ts_series s ON s.id = b.series",
            [],
            |r| r.get(0),
        )
        .unwrap()
}

fn files(store: &LocalStore) -> i64 {
    store
        .conn()
        .query_row("SELECT COUNT(*) FROM files", [], |r| r.get(0))
        .unwrap()
}

const A: &[u8] = b"{\"ts\": 1700000000, \"host\": \"a\", \"cpu\": 1.5, \"mem\": 2}\n{\"ts\": 1700000010, \"host\": \"a\", \"cpu\": 2.5}\n";
const B: &[u8] = b"{\"ts\": 1700000000, \"host\": \"b\", \"cpu\": 7}\nnot json\n";

#[test]
fn a_batch_commits_files_and_samples_together_and_a_recommit_adds_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let store = LocalStore::open(dir.path()).unwrap();
    let batch = vec![
        stage(&store, "c", b"a.jsonl", A, 1),
        stage(&store, "c", b"b.jsonl", B, 2),
    ];
    store.commit_batch("w", 1, batch, &auto()).unwrap();
    assert_eq!((files(&store), samples(&store)), (2, 4));
    let ingest = store.ingest("c").unwrap();
    assert_eq!((ingest.samples, ingest.parse_errors), (4, 1));
    assert_eq!(ingest.last_error.as_deref(), Some("line 2: not valid JSON"));
    // The same keys again (a crash between commit and source removal): nothing added.
    let again = vec![
        stage(&store, "c", b"a.jsonl", A, 3),
        stage(&store, "c", b"b.jsonl", B, 4),
    ];
    let out = store.commit_batch("w", 2, again, &auto()).unwrap();
    assert_eq!(out, vec![Outcome::AlreadyPresent; 2]);
    assert_eq!((files(&store), samples(&store)), (2, 4));
    assert_eq!(store.ingest("c").unwrap().samples, 4);
    // Reopened, the series are found again rather than created twice.
    drop(store);
    let store = LocalStore::open(dir.path()).unwrap();
    let more = b"{\"ts\": 1700000020, \"host\": \"a\", \"cpu\": 3}\n";
    store
        .commit_batch(
            "w",
            2,
            vec![stage(&store, "c", b"c.jsonl", more, 5)],
            &auto(),
        )
        .unwrap();
    let series: i64 = store
        .conn()
        .query_row("SELECT COUNT(*) FROM ts_series", [], |r| r.get(0))
        .unwrap();
    assert_eq!((samples(&store), series), (5, 3));
}

#[test]
fn a_rolled_back_batch_leaves_no_sample_and_its_retry_adds_each_once() {
    let dir = tempfile::tempdir().unwrap();
    let store = LocalStore::open(dir.path()).unwrap();
    // Fails the transaction after the catalog rows and the new series were written.
    store
        .conn()
        .execute_batch(
            "CREATE TEMP TRIGGER boom BEFORE INSERT ON ts_blocks BEGIN SELECT RAISE(ABORT, 'boom'); END",
        )
        .unwrap();
    let batch = vec![stage(&store, "c", b"a.jsonl", A, 1)];
    assert!(store.commit_batch("w", 1, batch, &auto()).is_err());
    assert_eq!((files(&store), samples(&store)), (0, 0));
    store.conn().execute_batch("DROP TRIGGER boom").unwrap();
    let retry = vec![stage(&store, "c", b"a.jsonl", A, 2)];
    store.commit_batch("w", 1, retry, &auto()).unwrap();
    // The series ids of the rolled-back transaction were forgotten, not reused.
    assert_eq!((files(&store), samples(&store)), (1, 3));
}

#[test]
fn unparsable_huge_and_files_only_batches_commit_as_files() {
    let dir = tempfile::tempdir().unwrap();
    let store = LocalStore::open(dir.path()).unwrap();
    let junk = stage(&store, "c", b"noext", b"\x00\x01\x02 binary\n", 1);
    let none = stage(&store, "c", b"a.jsonl", A, 2);
    store.commit_batch("w", 1, vec![junk], &auto()).unwrap();
    store
        .commit_batch("w", 1, vec![none], &ParseSettings::files_only())
        .unwrap();
    assert_eq!((files(&store), samples(&store)), (2, 0));
    let ingest = store.ingest("c").unwrap();
    assert_eq!(ingest.parse_errors, 1);
    assert!(ingest.last_error.unwrap().contains("not recognised"));
    let mut big = stage(&store, "c", b"big.jsonl", A, 3);
    big.meta.size = MAX_PARSE_BYTES + 1;
    let parsed = parse_batch(&[big], &auto());
    assert!(
        parsed[0]
            .as_ref()
            .unwrap()
            .last_error
            .as_ref()
            .unwrap()
            .contains("parse limit")
    );
}

#[test]
fn maintenance_seals_and_keeps_every_sample() {
    let dir = tempfile::tempdir().unwrap();
    let store = LocalStore::open(dir.path()).unwrap();
    let now = 1_700_000_000_000i64;
    let mut lines = String::new();
    for i in 0..600 {
        // Ten hours at one minute: most of it is older than the one-hour window.
        let ts = now / 1000 - 36_000 + i * 60;
        lines.push_str(&format!("{{\"ts\": {ts}, \"cpu\": {i}}}\n"));
    }
    let s = stage(&store, "c", b"m.jsonl", lines.as_bytes(), 1);
    store.commit_batch("w", 1, vec![s], &auto()).unwrap();
    let m = store.maintain(now).unwrap();
    assert_eq!(m.sealed_series, 1);
    assert!(m.sealed_samples > 0);
    assert_eq!(samples(&store), 600);
    // Far later: retention drops the lot.
    let m = store.maintain(now + 31 * 86_400_000).unwrap();
    assert!(m.dropped_blocks > 0);
    assert_eq!(samples(&store), 0);
    // The cache forgot the dropped series: new samples land in a stored series.
    let s = stage(
        &store,
        "c",
        b"n.jsonl",
        b"{\"ts\": 1700000000, \"cpu\": 1}\n",
        2,
    );
    store.commit_batch("w", 1, vec![s], &auto()).unwrap();
    assert_eq!(samples(&store), 1);
}

#[test]
fn a_batch_of_small_files_writes_one_block_per_series_and_only_new_files_count() {
    let dir = tempfile::tempdir().unwrap();
    let store = LocalStore::open(dir.path()).unwrap();
    let file = |i: i64| {
        format!(
            "{{\"ts\": {}, \"host\": \"a\", \"cpu\": {i}, \"mem\": 1}}\n",
            1_700_000_000 + i
        )
    };
    let first: Vec<_> = (0..10)
        .map(|i| {
            stage(
                &store,
                "c",
                format!("{i}.jsonl").as_bytes(),
                file(i).as_bytes(),
                i as u64,
            )
        })
        .collect();
    store.commit_batch("w", 1, first, &auto()).unwrap();
    let blocks = |store: &LocalStore| -> i64 {
        store
            .conn()
            .query_row("SELECT COUNT(*) FROM ts_blocks", [], |r| r.get(0))
            .unwrap()
    };
    // Two series (cpu, mem), ten files: one raw block per series.
    assert_eq!(
        (files(&store), samples(&store), blocks(&store)),
        (10, 20, 2)
    );
    // Half of the next batch was committed before: only the new files' samples are added.
    let second: Vec<_> = (5..15)
        .map(|i| {
            stage(
                &store,
                "c",
                format!("{i}.jsonl").as_bytes(),
                file(i).as_bytes(),
                100 + i as u64,
            )
        })
        .collect();
    store.commit_batch("w", 2, second, &auto()).unwrap();
    assert_eq!(
        (files(&store), samples(&store), blocks(&store)),
        (15, 30, 4)
    );
    assert_eq!(store.ingest("c").unwrap().samples, 30);
}

/// The roll-up counters move with the commit: the files, bytes, samples and parse errors of
/// newly committed files, nothing for a re-committed key; pull errors on their own.
#[test]
fn roll_up_counters_count_what_a_commit_inserted() {
    let dir = tempfile::tempdir().unwrap();
    let store = LocalStore::open(dir.path()).unwrap();
    let batch = vec![
        stage(&store, "c", b"a.jsonl", A, 1),
        stage(&store, "d", b"b.jsonl", B, 2),
    ];
    store.commit_batch("w", 1, batch, &auto()).unwrap();
    let again = vec![stage(&store, "c", b"a.jsonl", A, 3)];
    store.commit_batch("w", 1, again, &auto()).unwrap();
    store.pull_error("c").unwrap();
    let rows = crate::store::rollup::collect(&mut store.conn(), 7, 0).unwrap();
    let by: std::collections::BTreeMap<_, _> = rows
        .iter()
        .map(|r| (r.client.as_str(), r.counters))
        .collect();
    let c = by["c"];
    assert_eq!(
        (c.files, c.bytes, c.samples, c.parse_errors, c.pull_errors),
        (1, A.len() as u64, 3, 0, 1)
    );
    let d = by["d"];
    assert_eq!(
        (d.files, d.bytes, d.samples, d.parse_errors, d.pull_errors),
        (1, B.len() as u64, 1, 1, 0)
    );
}

/// What the remote-write outbox holds: (queued samples, dropped samples).
fn outbox_counts(store: &LocalStore) -> (u64, u64) {
    let s = super::super::outbox::stats(&store.conn()).unwrap();
    (s.queued_samples, s.dropped_samples)
}

#[test]
fn the_outbox_gets_exactly_the_samples_a_commit_added() {
    use super::super::outbox::QueueLimits;
    let dir = tempfile::tempdir().unwrap();
    let limits = QueueLimits {
        max_bytes: 1 << 20,
        piece_samples: 2,
    };
    let store = LocalStore::open(dir.path())
        .unwrap()
        .with_remote_queue(limits);
    let batch = vec![
        stage(&store, "c", b"a.jsonl", A, 1),
        stage(&store, "c", b"b.jsonl", B, 2),
    ];
    store.commit_batch("w", 1, batch, &auto()).unwrap();
    assert_eq!(
        outbox_counts(&store),
        (4, 0),
        "the shard's 4 samples, queued"
    );
    let pieces: i64 = store
        .conn()
        .query_row("SELECT COUNT(*) FROM rw_outbox", [], |r| r.get(0))
        .unwrap();
    assert_eq!(pieces, 2, "cut at piece_samples");
    // A re-committed file adds nothing to the shard, so nothing to the queue.
    let again = vec![stage(&store, "c", b"a.jsonl", A, 3)];
    store.commit_batch("w", 2, again, &auto()).unwrap();
    assert_eq!(outbox_counts(&store), (4, 0));
    // Without the queue turned on (remote-write off), commits queue nothing.
    drop(store);
    let store = LocalStore::open(dir.path()).unwrap();
    let more = b"{\"ts\": 1700000020, \"host\": \"a\", \"cpu\": 3}\n";
    let batch = vec![stage(&store, "c", b"c.jsonl", more, 5)];
    store.commit_batch("w", 3, batch, &auto()).unwrap();
    assert_eq!(outbox_counts(&store), (4, 0));
}

#[test]
fn a_full_outbox_drops_counted_while_the_shard_keeps_the_samples() {
    use super::super::outbox::QueueLimits;
    let dir = tempfile::tempdir().unwrap();
    // Too small for any piece: everything is dropped from the export, and counted.
    let limits = QueueLimits {
        max_bytes: 1,
        piece_samples: 100,
    };
    let store = LocalStore::open(dir.path())
        .unwrap()
        .with_remote_queue(limits);
    let batch = vec![stage(&store, "c", b"a.jsonl", A, 1)];
    store.commit_batch("w", 1, batch, &auto()).unwrap();
    assert_eq!(samples(&store), 3);
    assert_eq!(outbox_counts(&store), (0, 3));
}
