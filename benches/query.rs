//! Bench set `query`, driven by `scripts/bench.sh` (one JSON object on stdout): real workers
//! whose stores were filled beforehand (`--series` series, `--hours` of samples every
//! `--interval-s`, sealed as a running worker seals them, split across `--workers` shards), a
//! real leader; `--queries` cluster queries over the whole span at `--step-s` through the admin
//! API's `Query` (the fan-out, merge and streamed answer; no rendering): p50/p99, the leader's
//! RSS growth (VmHWM after − VmRSS before); then one shard SIGSTOPped and the time a query with
//! a `--timeout-s` deadline takes to come back partial. The same queries through the leader's
//! Prometheus-compatible `/api/v1/query_range` (`avg_over_time(cpu[step])`, JSON rendering
//! included): `http_p50_ms`/`http_p99_ms`.
#![allow(clippy::expect_used, clippy::unwrap_used)]

#[path = "../tests/support/mod.rs"]
mod support;

use std::path::Path;
use std::time::Instant;

use serde_json::json;
use sqd::proto::{self, admin_service_client::AdminServiceClient};
use sqd::stats::block::Samples;
use sqd::stats::tsdb::{self, FileSamples, Limits, SeriesCache, SeriesKey};
use support::Cluster;
use tonic::transport::Endpoint;

fn opt(args: &[String], key: &str, default: i64) -> i64 {
    args.iter()
        .position(|a| a == &format!("--{key}"))
        .and_then(|i| args.get(i + 1))
        .map_or(default, |v| v.parse().expect("a number"))
}

/// Fills the shard of one store: every series of this shard, an hour per transaction (one
/// "file"), then sealed like the worker's maintenance does.
fn fill(store: &Path, series: &[usize], from_ms: i64, hours: i64, interval_ms: i64) {
    std::fs::create_dir_all(store).expect("store dir");
    let mut conn = rusqlite::Connection::open(store.join("catalog.sqlite")).expect("catalog");
    conn.execute_batch("PRAGMA journal_mode=WAL;").expect("wal");
    conn.execute_batch(tsdb::SCHEMA).expect("schema");
    let mut cache = SeriesCache::default();
    let limits = Limits {
        max_series: 1_000_000,
    };
    for h in 0..hours {
        let mut file = FileSamples::default();
        for &i in series {
            let key = SeriesKey {
                metric: "cpu".into(),
                labels: vec![
                    ("client".into(), format!("c{:03}", i / 10)),
                    ("host".into(), format!("h{i:04}")),
                ],
            };
            let mut s = Samples::default();
            let start = from_ms + h * 3_600_000;
            let mut ts = start;
            while ts < start + 3_600_000 {
                s.push(ts, ((ts / interval_ms + i as i64) % 100) as f64 / 3.0);
                ts += interval_ms;
            }
            file.series.insert(key, s);
        }
        let tx = conn.transaction().expect("tx");
        tsdb::write_file(&tx, &mut cache, "bench", &file, limits).expect("write");
        tx.commit().expect("commit");
        cache.committed();
    }
    tsdb::seal(&mut conn, 3_600_000).expect("seal");
}

fn mem_kb(pid: u32, field: &str) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0.0)
}

fn percentile(values: &[f64], p: f64) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let rank = ((p / 100.0) * v.len() as f64).ceil() as usize;
    v[rank.clamp(1, v.len()) - 1]
}

/// One cluster query; (series, points, partial, seconds).
async fn query(
    leader: &str,
    from_ms: i64,
    to_ms: i64,
    step_ms: i64,
    timeout_ms: u32,
) -> (usize, usize, bool, f64) {
    let channel = Endpoint::from_shared(format!("http://{leader}"))
        .expect("endpoint")
        .connect()
        .await
        .expect("connect");
    let mut client = AdminServiceClient::new(channel).max_decoding_message_size(64 << 20);
    let started = Instant::now();
    let request = proto::QueryRequest {
        selector: Some(proto::Selector {
            metric: "cpu".into(),
            matchers: vec![],
        }),
        from_ms,
        to_ms,
        step_ms,
        by: vec![],
        timeout_ms,
        deny_partial: false,
        // count + sum: what `sqdctl query --agg avg` asks for.
        fields: 0b11,
    };
    let mut stream = client.query(request).await.expect("query").into_inner();
    let (mut series, mut points, mut partial) = (0, 0, false);
    while let Some(chunk) = stream.message().await.expect("chunk") {
        series += chunk.series.len();
        points += chunk
            .series
            .iter()
            .map(|s| {
                s.columns
                    .as_ref()
                    .map_or(s.buckets.len(), |c| c.count.len())
            })
            .sum::<usize>();
        if let Some(r) = chunk.report {
            partial = !r.failed.is_empty() || !r.timed_out.is_empty();
        }
    }
    (series, points, partial, started.elapsed().as_secs_f64())
}

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    let workers = opt(&args, "workers", 3) as usize;
    let n_series = opt(&args, "series", 1000) as usize;
    let hours = opt(&args, "hours", 24);
    let interval_ms = opt(&args, "interval-s", 10) * 1000;
    let queries = opt(&args, "queries", 50) as usize;
    let step_ms = opt(&args, "step-s", 60) * 1000;
    let timeout_ms = opt(&args, "timeout-s", 2) * 1000;

    let mut cluster = Cluster::start_with(500, 1500, &["--query-listen", "127.0.0.1:0"]);
    let to_ms = sqd::clock::unix_ms() / 3_600_000 * 3_600_000;
    let from_ms = to_ms - hours * 3_600_000;
    let fill_started = Instant::now();
    let ids: Vec<String> = (1..=workers).map(|k| format!("w{k}")).collect();
    std::thread::scope(|s| {
        for (k, id) in ids.iter().enumerate() {
            let store = cluster.store_dir(id);
            let mine: Vec<usize> = (0..n_series).filter(|i| i % workers == k).collect();
            s.spawn(move || fill(&store, &mine, from_ms, hours, interval_ms));
        }
    });
    let fill_s = fill_started.elapsed().as_secs_f64();
    eprintln!("query bench: filled {workers} shards in {fill_s:.1} s");
    for id in &ids {
        cluster.spawn_worker_with(id, &[], &[]);
    }
    cluster.wait_alive(workers);
    let leader_pid = cluster.leader.as_ref().expect("leader").pid();
    let leader = cluster.leader_addr.clone();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let whole = u32::try_from(timeout_ms.max(60_000)).unwrap_or(u32::MAX);
    // A first query warms the page cache and the leader's channels.
    let (series, points, _, first_s) = rt.block_on(query(&leader, from_ms, to_ms, step_ms, whole));
    let rss_before = mem_kb(leader_pid, "VmRSS:");
    let mut times = Vec::new();
    for _ in 0..queries {
        let (s, _, partial, t) = rt.block_on(query(&leader, from_ms, to_ms, step_ms, whole));
        assert!(s == series && !partial, "every shard answers every query");
        times.push(t * 1000.0);
    }
    let hwm = mem_kb(leader_pid, "VmHWM:");
    let api = support::wait_addr_file(&cluster.state_dir().join("query.addr"));
    let step_s = step_ms / 1000;
    // Steps t = start + i*step with windows (t - step, t] cover [from, to) as the buckets do.
    let path = format!(
        "/api/v1/query_range?query=avg_over_time(cpu%5B{step_s}s%5D)&start={}&end={}&step={step_s}",
        (from_ms + step_ms - 1) / 1000,
        (to_ms - 1) / 1000,
    );
    let mut http_times = Vec::new();
    for _ in 0..queries {
        let started = Instant::now();
        let (code, body) = support::http_get(&api, &path).expect("the query API answers");
        let head = &body[..body.len().min(300)];
        assert!(
            code == 200 && !body.contains("\"warnings\""),
            "{code}: {head}"
        );
        http_times.push(started.elapsed().as_secs_f64() * 1000.0);
    }
    let http_hwm = mem_kb(leader_pid, "VmHWM:");
    // One shard hung: the answer comes back at the deadline, partial.
    let stopped = cluster.workers[&ids[workers - 1]].pid();
    let stop = |sig: &str| {
        let _ = std::process::Command::new("kill")
            .args([sig, &stopped.to_string()])
            .status();
    };
    stop("-STOP");
    let (_, _, partial, hung_s) =
        rt.block_on(query(&leader, from_ms, to_ms, step_ms, timeout_ms as u32));
    stop("-CONT");
    let out = json!({
        "workers": workers, "series": series, "points": points,
        "samples": n_series as i64 * hours * 3_600_000 / interval_ms,
        "hours": hours, "interval_s": interval_ms / 1000, "step_s": step_ms / 1000,
        "queries": queries, "first_ms": first_s * 1000.0,
        "p50_ms": percentile(&times, 50.0), "p99_ms": percentile(&times, 99.0),
        "leader_rss_mb_before": rss_before / 1024.0,
        "leader_rss_growth_mb": (hwm - rss_before) / 1024.0,
        "http_p50_ms": percentile(&http_times, 50.0), "http_p99_ms": percentile(&http_times, 99.0),
        "http_leader_hwm_mb": http_hwm / 1024.0,
        "hung_shard_timeout_s": timeout_ms as f64 / 1000.0, "hung_shard_answer_s": hung_s,
        "hung_shard_partial": partial, "fill_s": fill_s,
    });
    println!("{out}");
}
