use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use futures_util::future::BoxFuture;
use proptest::prelude::*;
use rusqlite::Connection;

use super::merge::{Gathered, Ledger, Line, Missed};
use super::*;
use crate::leader::fanout::Chunks;
use crate::stats::cluster::ClusterError;
use crate::stats::query::{Range, Selector, SeriesPartials, Span};
use crate::stats::tsdb::SeriesKey;
use crate::store::rollup;

fn c(files: u64) -> Counters {
    Counters {
        files,
        bytes: files * 100,
        samples: files * 7,
        parse_errors: files % 2,
        pull_errors: 0,
    }
}

fn row(collection: u64, client: &str, files: u64) -> Row {
    Row {
        collection,
        client: client.into(),
        counters: c(files),
    }
}

#[test]
fn a_line_sums_the_answers_and_names_who_is_missing() {
    let ledger = Ledger::default();
    let got = Gathered {
        asked: vec!["w1".into(), "w2".into(), "w3".into()],
        answered: BTreeMap::from([
            ("w1".into(), vec![row(5, "a", 1), row(5, "b", 2)]),
            ("w2".into(), vec![row(3, "a", 4), row(5, "a", 1)]),
        ]),
    };
    let line = ledger.line(5, 1_500, 60_000, &got);
    let mut a = c(4);
    a.add(&c(1));
    a.add(&c(1));
    assert_eq!(line.clients["a"], a);
    assert_eq!(line.clients["b"], c(2));
    assert_eq!(line.totals.files, 8);
    assert_eq!(line.missing_workers, vec!["w3".to_owned()]);
    assert_eq!(
        line.through,
        BTreeMap::from([("w1".into(), 5), ("w2".into(), 5)])
    );
    assert_eq!((line.ts, line.interval_s), (1.5, 60.0));
}

/// An answer repeated after a crash between the line and its acknowledgement adds nothing:
/// rows at or below the worker's watermark are in the log already.
#[test]
fn rows_the_log_already_holds_are_skipped() {
    let mut ledger = Ledger::default();
    let first = Gathered {
        asked: vec!["w".into()],
        answered: BTreeMap::from([("w".into(), vec![row(10, "a", 3)])]),
    };
    let line = ledger.line(10, 0, 1_000, &first);
    ledger.written(&line);
    let resumed = Ledger::resume(Some(&line));
    assert_eq!(resumed, ledger);
    assert_eq!(resumed.ack_through("w"), 10);
    let again = Gathered {
        asked: vec!["w".into()],
        answered: BTreeMap::from([("w".into(), vec![row(10, "a", 3), row(11, "a", 1)])]),
    };
    let line = resumed.line(11, 0, 1_000, &again);
    assert_eq!(line.clients["a"], c(1));
    assert_eq!(resumed.next_collection(5), 11);
    assert_eq!(resumed.next_collection(50), 50);
}

#[test]
fn missed_counts_grow_per_miss_and_reset_on_an_answer() {
    let mut m = Missed::default();
    let asked = ["a".to_owned(), "b".to_owned()];
    m.update(&asked, &["b".into()]);
    m.update(&asked, &["b".into()]);
    m.update(&asked, &["a".into(), "b".into()]);
    assert_eq!(
        m.counts(),
        &BTreeMap::from([("a".into(), 1), ("b".into(), 3)])
    );
    m.update(&["b".to_owned()], &[]);
    assert_eq!(m.counts(), &BTreeMap::from([("b".into(), 0)]));
}

fn line(collection: u64) -> Line {
    Ledger::default().line(collection, 0, 1_000, &Gathered::default())
}

#[test]
fn the_log_resumes_from_its_last_line_and_cuts_a_torn_one() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (mut log, last) = RollupLog::open(dir.path()).unwrap();
        assert!(last.is_none());
        for id in 1..=3 {
            log.append(&line(id)).unwrap();
        }
    }
    let path = dir.path().join(FILE_NAME);
    let whole = std::fs::read(&path).unwrap();
    std::fs::write(&path, [&whole[..], b"{\"ts\": 1, \"coll"].concat()).unwrap();
    let (_, last) = RollupLog::open(dir.path()).unwrap();
    assert_eq!(last.map(|l| l.collection), Some(3));
    assert_eq!(std::fs::read(&path).unwrap(), whole);
    let tail: Vec<u64> = (last_lines(&path, 2).unwrap().iter())
        .map(|l| serde_json::from_str::<Line>(l).unwrap().collection)
        .collect();
    assert_eq!(tail, vec![2, 3]);
    assert_eq!(last_lines(&path, 10).unwrap().len(), 3);
}

#[test]
fn the_tail_is_found_across_blocks() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("x");
    let lines: Vec<String> = (0..50)
        .map(|i| format!("{i}:{}", "x".repeat(9_000)))
        .collect();
    std::fs::write(&path, lines.join("\n") + "\n").unwrap();
    assert_eq!(last_lines(&path, 9).unwrap(), lines[41..].to_vec());
    assert_eq!(last_lines(&path, 80).unwrap(), lines);
}

#[test]
fn an_unreadable_last_line_is_refused_with_what_to_do() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join(FILE_NAME), "not json\n").unwrap();
    let e = RollupLog::open(dir.path()).err().unwrap().to_string();
    assert!(e.contains("move the file aside"), "{e}");
}

/// What a worker does with a roll-up request in the model below.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Fate {
    Answers,
    /// The request never arrives (worker down).
    Refused,
    /// The worker files and answers, but the stream breaks after its first chunk.
    Breaks,
    /// The worker files and answers its first chunk, then hangs past the deadline.
    Hangs,
}

/// A worker's shard over a real roll-up table (`store::rollup`), answering in chunks of
/// `chunk` rows.
struct TestShard {
    id: String,
    db: Arc<Mutex<Connection>>,
    fate: Arc<Mutex<(Fate, usize)>>,
}

impl Shard for TestShard {
    fn id(&self) -> &str {
        &self.id
    }
    fn query(&self, _: &Selector, _: &Range) -> Opening<Vec<SeriesPartials>> {
        Box::pin(async { Err("no".to_owned()) })
    }
    fn series(&self, _: Option<&Selector>, _: Option<Span>) -> Opening<Vec<SeriesKey>> {
        Box::pin(async { Err("no".to_owned()) })
    }
    fn metrics(&self) -> Opening<Vec<String>> {
        Box::pin(async { Err("no".to_owned()) })
    }
    fn rollup(&self, collection: u64, ack_through: u64) -> Opening<Vec<Row>> {
        let (fate, chunk) = *self.fate.lock().unwrap();
        let db = self.db.clone();
        Box::pin(async move {
            if fate == Fate::Refused {
                return Err("connection refused".to_owned());
            }
            let rows = rollup::collect(&mut db.lock().unwrap(), collection, ack_through)
                .map_err(|e| e.to_string())?;
            let mut chunks: Vec<Vec<Row>> =
                rows.chunks(chunk.max(1)).map(<[Row]>::to_vec).collect();
            let stream: Chunks<Vec<Row>> = match fate {
                Fate::Answers => futures_util::stream::iter(chunks.into_iter().map(Ok)).boxed(),
                Fate::Breaks => {
                    chunks.truncate(1);
                    let first = chunks.into_iter().map(Ok);
                    futures_util::stream::iter(first.chain([Err("reset".to_owned())])).boxed()
                }
                _ => {
                    chunks.truncate(1);
                    futures_util::stream::iter(chunks.into_iter().map(Ok))
                        .chain(futures_util::stream::pending())
                        .boxed()
                }
            };
            Ok(stream)
        })
    }
}

struct Fixed(Vec<Arc<dyn Shard>>);

impl ShardSource for Fixed {
    fn shards(&self) -> BoxFuture<'_, Result<Vec<Arc<dyn Shard>>, ClusterError>> {
        Box::pin(async move { Ok(self.0.clone()) })
    }
}

#[derive(Debug, Clone)]
enum Event {
    /// A commit on worker `w` of client `c` with `files` files.
    Commit {
        w: usize,
        c: usize,
        files: u64,
    },
    PullError {
        w: usize,
        c: usize,
    },
    /// One collection; each worker's fate and chunk size.
    Collect(Vec<(Fate, usize)>),
    /// The leader restarts (optionally after a crash that tore the line it was writing).
    Restart {
        torn: bool,
    },
}

fn fate() -> impl Strategy<Value = Fate> {
    prop_oneof![
        4 => Just(Fate::Answers),
        1 => Just(Fate::Refused),
        1 => Just(Fate::Breaks),
        1 => Just(Fate::Hangs),
    ]
}

fn event(workers: usize) -> impl Strategy<Value = Event> {
    prop_oneof![
        4 => (0..workers, 0..4usize, 1..5u64).prop_map(|(w, c, files)| Event::Commit { w, c, files }),
        1 => (0..workers, 0..4usize).prop_map(|(w, c)| Event::PullError { w, c }),
        3 => proptest::collection::vec((fate(), 1..4usize), workers).prop_map(Event::Collect),
        1 => any::<bool>().prop_map(|torn| Event::Restart { torn }),
    ]
}

const INTERVAL: Duration = Duration::from_millis(50);

fn collector(dir: &std::path::Path, shards: &[Arc<dyn Shard>]) -> Collector<Fixed> {
    Collector::open(
        dir,
        INTERVAL,
        Fixed(shards.to_vec()),
        RollupMetrics::default(),
    )
    .unwrap()
}

type Worker = (Arc<Mutex<Connection>>, Arc<Mutex<(Fate, usize)>>);

/// `n` workers over roll-up tables in `dir`: their databases and fates, and their shards.
fn workers(dir: &std::path::Path, n: usize) -> (Vec<Worker>, Vec<Arc<dyn Shard>>) {
    let mut out = Vec::new();
    let mut shards: Vec<Arc<dyn Shard>> = Vec::new();
    for w in 0..n {
        let db = Arc::new(Mutex::new(
            rollup::open(&dir.join(format!("w{w}.sqlite"))).unwrap(),
        ));
        let fate = Arc::new(Mutex::new((Fate::Answers, 1)));
        shards.push(Arc::new(TestShard {
            id: format!("w{w}"),
            db: db.clone(),
            fate: fate.clone(),
        }));
        out.push((db, fate));
    }
    (out, shards)
}

fn read_lines(state: &std::path::Path) -> Vec<Line> {
    (last_lines(&state.join(FILE_NAME), usize::MAX)
        .unwrap()
        .iter())
    .map(|l| serde_json::from_str(l).unwrap())
    .collect()
}

/// Runs the model; returns (committed per client, every line of the log).
fn simulate(n: usize, events: &[Event]) -> (BTreeMap<String, Counters>, Vec<Line>) {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("leader");
    std::fs::create_dir_all(&state).unwrap();
    let (ws, shards) = workers(dir.path(), n);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .unwrap();
    let mut committed: BTreeMap<String, Counters> = BTreeMap::new();
    let mut leader = collector(&state, &shards);
    let mut expect_missing: Vec<Vec<String>> = Vec::new();
    for e in events {
        match e {
            Event::Commit { w, c: k, files } => {
                let client = format!("c{k}");
                let add = BTreeMap::from([(client.clone(), c(*files))]);
                rollup::add(&ws[*w].0.lock().unwrap(), &add).unwrap();
                committed.entry(client).or_default().add(&c(*files));
            }
            Event::PullError { w, c } => {
                let client = format!("c{c}");
                rollup::add_pull_error(&ws[*w].0.lock().unwrap(), &client).unwrap();
                committed.entry(client).or_default().pull_errors += 1;
            }
            Event::Collect(plan) => {
                for ((_, f), p) in ws.iter().zip(plan) {
                    *f.lock().unwrap() = *p;
                }
                rt.block_on(leader.collect_once()).unwrap();
                expect_missing.push(
                    (0..n)
                        .filter(|w| plan[*w].0 != Fate::Answers)
                        .map(|w| format!("w{w}"))
                        .collect(),
                );
            }
            Event::Restart { torn } => {
                drop(leader);
                if *torn {
                    let path = state.join(FILE_NAME);
                    let mut text = std::fs::read(&path).unwrap();
                    text.extend_from_slice(b"{\"ts\":12,\"interval_s\":0.05,\"totals\":{");
                    std::fs::write(&path, text).unwrap();
                }
                leader = collector(&state, &shards);
            }
        }
    }
    // Everyone answers: whatever was held back comes in.
    ws.iter()
        .for_each(|(_, f)| *f.lock().unwrap() = (Fate::Answers, 2));
    rt.block_on(leader.collect_once()).unwrap();
    expect_missing.push(Vec::new());
    let lines = read_lines(&state);
    let missing: Vec<Vec<String>> = lines.iter().map(|l| l.missing_workers.clone()).collect();
    assert_eq!(missing, expect_missing);
    (committed, lines)
}

fn sum(lines: &[Line]) -> BTreeMap<String, Counters> {
    let mut out: BTreeMap<String, Counters> = BTreeMap::new();
    for l in lines {
        for (client, c) in &l.clients {
            out.entry(client.clone()).or_default().add(c);
        }
        let mut totals = Counters::default();
        l.clients.values().for_each(|c| totals.add(c));
        assert_eq!(totals, l.totals);
    }
    out.retain(|_, c| !c.is_zero());
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(40))]
    /// Any split of commits across workers, any chunking, collections missed (refused,
    /// broken, timed out) and leader restarts (with a torn line): the lines sum to what was
    /// committed per client, and each line names exactly the workers that did not answer.
    #[test]
    fn the_lines_sum_to_what_was_committed(
        (workers, events) in (1..4usize).prop_flat_map(|w| (Just(w), proptest::collection::vec(event(w), 0..30)))
    ) {
        let (committed, lines) = simulate(workers, &events);
        prop_assert_eq!(sum(&lines), committed);
    }
}

#[test]
fn missed_in_a_row_is_kept_per_worker() {
    let dir = tempfile::tempdir().unwrap();
    let db = Arc::new(Mutex::new(
        rollup::open(&dir.path().join("w.sqlite")).unwrap(),
    ));
    let fate = Arc::new(Mutex::new((Fate::Refused, 1)));
    let shard: Arc<dyn Shard> = Arc::new(TestShard {
        id: "w".into(),
        db,
        fate: fate.clone(),
    });
    let mut leader = collector(dir.path(), &[shard]);
    let health = leader.health();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .unwrap();
    for _ in 0..3 {
        rt.block_on(leader.collect_once()).unwrap();
    }
    assert_eq!(health.missed_in_a_row(), BTreeMap::from([("w".into(), 3)]));
    *fate.lock().unwrap() = (Fate::Answers, 1);
    rt.block_on(leader.collect_once()).unwrap();
    assert_eq!(health.missed_in_a_row(), BTreeMap::from([("w".into(), 0)]));
}
