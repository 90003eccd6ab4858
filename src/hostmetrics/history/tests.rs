use super::*;
use crate::stats::query::{MatchOp, Matcher};

fn values(cpu: f64) -> HostValues {
    HostValues {
        cpu_percent: cpu,
        ram_mb: 100.0 + cpu,
        disk_mb: 5.0,
        load1: None,
        store_free_mb: Some(9.0),
    }
}

#[test]
fn a_batch_names_series_by_metric_host_and_role() {
    let points = [
        Point {
            host: "w1".into(),
            role: Role::Worker,
            at_ms: 10,
            values: values(1.0),
        },
        Point {
            host: "w1".into(),
            role: Role::Worker,
            at_ms: 20,
            values: values(2.0),
        },
        Point {
            host: "a1".into(),
            role: Role::Agent,
            at_ms: 15,
            values: values(3.0),
        },
    ];
    let file = batch(&points);
    // cpu, ram, disk, store free (no load) for two hosts.
    assert_eq!(file.series.len(), 8);
    let key = SeriesKey {
        metric: super::super::CPU_SERIES.into(),
        labels: vec![
            ("host".into(), "w1".into()),
            ("role".into(), "worker".into()),
        ],
    };
    let cpu = file.series.get(&key).unwrap_or_else(|| panic!("w1 cpu"));
    assert_eq!(cpu.ts, [10, 20]);
    assert_eq!(cpu.vals, [1.0, 2.0]);
}

async fn cpu_of(shard: &LeaderShard, host: &str) -> Vec<(i64, f64)> {
    let selector = Selector {
        metric: super::super::CPU_SERIES.into(),
        matchers: vec![Matcher::new("host", MatchOp::Eq, host).unwrap_or_else(|e| panic!("{e}"))],
    };
    let range = Range::new(1000, 2000, 1).unwrap_or_else(|e| panic!("{e}"));
    let mut chunks = shard
        .query(&selector, &range)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let mut out = Vec::new();
    while let Some(chunk) = chunks.next().await {
        for series in chunk.unwrap_or_else(|e| panic!("{e}")) {
            for p in series.buckets.into_values() {
                out.push((p.last_ts, p.last));
            }
        }
    }
    out.sort_by_key(|x| x.0);
    out
}

#[tokio::test]
async fn appended_points_are_read_back_through_the_shard_and_survive_a_reopen() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let history = History::open(dir.path()).unwrap_or_else(|e| panic!("{e}"));
    let shard = history.shard();
    assert_eq!(shard.id(), "leader");
    for i in 0..5 {
        assert!(history.append(Point {
            host: "w1".into(),
            role: Role::Worker,
            at_ms: 1000 + i * 100,
            values: values(i as f64),
        }));
    }
    let want: Vec<(i64, f64)> = (0..5).map(|i| (1000 + i * 100, i as f64)).collect();
    let deadline = Instant::now() + Duration::from_secs(10);
    while cpu_of(&shard, "w1").await != want {
        assert!(Instant::now() < deadline, "points not written in 10 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(cpu_of(&shard, "nobody").await.is_empty());
    drop(history);
    let again = History::open(dir.path()).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(cpu_of(&again.shard(), "w1").await, want);
}
