use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use futures_util::future::BoxFuture;

use super::*;
use crate::stats::cluster::{CHUNK_SERIES, Chunker, partials_bytes};
use crate::stats::partial::Agg;
use crate::stats::query::fold;

#[derive(Clone, Copy, PartialEq)]
enum Behaviour {
    Answers,
    /// Never answers (a SIGSTOPped worker).
    Hangs,
    /// Refuses the connection.
    Refuses,
    /// Sends its first chunk, then hangs.
    Stalls,
}

struct MemShard {
    id: String,
    data: Vec<SeriesPartials>,
    behaviour: Behaviour,
}

impl Shard for MemShard {
    fn id(&self) -> &str {
        &self.id
    }

    fn query(&self, selector: &Selector, _: &Range) -> Opening<Vec<SeriesPartials>> {
        let mut chunker = Chunker::default();
        let mut out = Vec::new();
        for s in self
            .data
            .iter()
            .filter(|s| selector.matches("m", &s.labels))
        {
            out.extend(chunker.push(s.clone(), partials_bytes(s)));
        }
        out.extend(chunker.finish());
        let behaviour = self.behaviour;
        Box::pin(async move {
            match behaviour {
                Behaviour::Answers => {
                    Ok(futures_util::stream::iter(out.into_iter().map(Ok)).boxed())
                }
                Behaviour::Hangs => std::future::pending().await,
                Behaviour::Refuses => Err("connection refused".to_owned()),
                Behaviour::Stalls => {
                    Ok(futures_util::stream::iter(out.into_iter().take(1).map(Ok))
                        .chain(futures_util::stream::pending())
                        .boxed())
                }
            }
        })
    }

    fn series(&self, _: Option<&Selector>, _: Option<Span>) -> Opening<Vec<SeriesKey>> {
        let keys: Vec<SeriesKey> = (self.data.iter())
            .map(|s| SeriesKey {
                metric: "m".into(),
                labels: s.labels.clone(),
            })
            .collect();
        Box::pin(async move { Ok(futures_util::stream::iter([Ok(keys)]).boxed()) })
    }

    fn metrics(&self) -> Opening<Vec<String>> {
        Box::pin(async move { Ok(futures_util::stream::iter([Ok(vec!["m".to_owned()])]).boxed()) })
    }
}

struct Fixed(Vec<Arc<dyn Shard>>);

impl ShardSource for Fixed {
    fn shards(&self) -> BoxFuture<'_, Result<Vec<Arc<dyn Shard>>, ClusterError>> {
        let shards = self.0.clone();
        Box::pin(async move { Ok(shards) })
    }
}

fn range() -> Range {
    Range::new(0, 1_000, 100).unwrap_or_else(|e| panic!("{e}"))
}

/// `series` series, sample `k` of series `s` on shard `k % shards`.
fn shard_data(series: usize, shards: usize) -> Vec<Vec<SeriesPartials>> {
    (0..shards)
        .map(|shard| {
            (0..series)
                .filter_map(|s| {
                    let labels = vec![("s".to_owned(), format!("{s:04}"))];
                    let samples = (0..20)
                        .filter(|k| k % shards == shard)
                        .map(|k| (k as i64 * 50, (s * k) as f64));
                    fold(labels, &range(), samples)
                })
                .collect()
        })
        .collect()
}

fn fanout(behaviours: &[Behaviour], series: usize) -> Fanout<Fixed> {
    let data = shard_data(series, behaviours.len());
    let shards = behaviours
        .iter()
        .zip(data)
        .enumerate()
        .map(|(i, (b, data))| {
            Arc::new(MemShard {
                id: format!("w{i}"),
                data,
                behaviour: *b,
            }) as Arc<dyn Shard>
        })
        .collect();
    Fanout::new(Fixed(shards))
}

fn selector() -> Selector {
    Selector {
        metric: "m".into(),
        matchers: vec![],
    }
}

#[tokio::test]
async fn every_shard_answering_gives_the_one_shard_answer() {
    let series = CHUNK_SERIES * 2 + 7;
    let whole = shard_data(series, 1).remove(0);
    let f = fanout(&[Behaviour::Answers; 3], series);
    let answer = f
        .query(selector(), range(), Duration::from_secs(5))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(!answer.report.partial());
    assert_eq!(answer.report.answered, ["w0", "w1", "w2"]);
    assert_eq!(answer.value.len(), whole.len());
    for (a, b) in answer.value.iter().zip(&whole) {
        assert_eq!(a.labels, b.labels);
        for ((ta, pa), (tb, pb)) in a.buckets.iter().zip(&b.buckets) {
            assert_eq!(ta, tb);
            for agg in Agg::ALL {
                assert!((pa.value(agg) - pb.value(agg)).abs() < 1e-9, "{agg}");
            }
        }
    }
    let keys = f
        .series(None, None, Duration::from_secs(5))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(keys.value.len(), series, "deduplicated across shards");
    let names = f
        .metrics(Duration::from_secs(5))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(names.value, ["m"]);
}

#[tokio::test]
async fn a_hung_and_a_refusing_shard_are_named_and_the_deadline_holds() {
    let f = fanout(
        &[
            Behaviour::Answers,
            Behaviour::Hangs,
            Behaviour::Refuses,
            Behaviour::Stalls,
        ],
        3,
    );
    let started = std::time::Instant::now();
    let answer = f
        .query(selector(), range(), Duration::from_millis(300))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(300) && took < Duration::from_millis(330),
        "{took:?}"
    );
    let r = &answer.report;
    assert!(r.partial());
    assert_eq!(r.answered, ["w0"]);
    assert_eq!(r.timed_out, ["w1", "w3"]);
    assert_eq!(
        r.failed.get("w2").map(String::as_str),
        Some("connection refused")
    );
    assert_eq!(answer.value.len(), 3);
}

#[tokio::test]
async fn no_shards_is_an_empty_whole_answer() {
    let f = Fanout::new(Fixed(vec![]));
    let answer = f
        .query(selector(), range(), Duration::from_secs(1))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(answer.value.is_empty() && !answer.report.partial() && answer.report.asked.is_empty());
}

/// Sets its flag when dropped: tells whether a shard's stream was let go.
struct Dropped(Arc<std::sync::atomic::AtomicBool>);

impl Drop for Dropped {
    fn drop(&mut self) {
        self.0.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

struct Endless(Arc<std::sync::atomic::AtomicBool>);

impl Shard for Endless {
    fn id(&self) -> &str {
        "endless"
    }
    fn query(&self, _: &Selector, _: &Range) -> Opening<Vec<SeriesPartials>> {
        let guard = Dropped(self.0.clone());
        Box::pin(async move {
            let stream = futures_util::stream::pending::<Result<Vec<SeriesPartials>, String>>()
                .map(move |x| {
                    let _keep = &guard;
                    x
                });
            Ok(stream.boxed())
        })
    }
    fn series(&self, _: Option<&Selector>, _: Option<Span>) -> Opening<Vec<SeriesKey>> {
        Box::pin(async { Err("unused".to_owned()) })
    }
    fn metrics(&self) -> Opening<Vec<String>> {
        Box::pin(async { Err("unused".to_owned()) })
    }
}

#[tokio::test]
async fn a_cancelled_read_drops_the_shard_streams() {
    let dropped = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let f = Fanout::new(Fixed(vec![Arc::new(Endless(dropped.clone()))]));
    let read = f.query(selector(), range(), Duration::from_secs(60));
    assert!(
        tokio::time::timeout(Duration::from_millis(100), read)
            .await
            .is_err()
    );
    // The abort lands when the runtime next polls the aborted task.
    for _ in 0..100 {
        if dropped.load(std::sync::atomic::Ordering::SeqCst) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("the shard's stream outlived the cancelled read");
}
