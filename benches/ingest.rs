//! The stats-ingest benchmarks driven by `scripts/bench.sh` (set `ingest`), one JSON object on
//! stdout, progress on stderr. Each drives a real store (files, SQLite catalog, fsync) in a
//! temporary directory exactly as a worker does, through `sqd::store::bench`:
//!
//! - `rate`: committed files → durable samples, per format (line protocol, Prometheus text,
//!   JSON lines, CSV), one group commit per batch as a worker does: samples/s of wall time and
//!   per core-second of this process's CPU (parsing, encoding, SQLite and fsync included;
//!   staging the files is not timed).
//! - `size`: 24 h of 60 host-like series at 10 s (518,400 samples), committed as Prometheus text
//!   files of 10 minutes each, then sealed: bytes per sample of the compressed blocks, and of
//!   the whole catalog file after VACUUM.
//! - `query`: 1,000 series, 24 h at 10 s (8.64 M samples), sealed as a worker would; the
//!   one-shard query of all of them over 24 h at 1 min step, p50/p99 over `--queries` runs.
//!
//! `--quick` shrinks every set (a smoke run of the bench itself).
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::fmt::Write as _;
use std::time::Instant;

use serde_json::{Value, json};
use sqd::store::bench::BenchShard;

const HOUR_MS: i64 = 3_600_000;

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    let quick = args.iter().any(|a| a == "--quick");
    let queries = args
        .iter()
        .position(|a| a == "--queries")
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(50);
    let mut out = serde_json::Map::new();
    let sets: Vec<&str> = args
        .iter()
        .filter(|a| ["rate", "size", "query"].contains(&a.as_str()))
        .map(String::as_str)
        .collect();
    let sets = if sets.is_empty() {
        vec!["rate", "size", "query"]
    } else {
        sets
    };
    for set in sets {
        eprintln!("ingest bench: {set}");
        let began = Instant::now();
        let report = match set {
            "rate" => rate(quick),
            "size" => size(quick),
            _ => query(quick, queries),
        };
        eprintln!(
            "ingest bench: {set} done in {:.1} s: {report}",
            began.elapsed().as_secs_f64()
        );
        out.insert(set.to_owned(), report);
    }
    println!("{}", Value::Object(out));
}

/// This process's CPU time (user + system, all threads), in seconds.
fn cpu_s() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .unwrap()
        .1
        .split_whitespace()
        .collect();
    let ticks: f64 = fields[11].parse::<f64>().unwrap() + fields[12].parse::<f64>().unwrap();
    // SC_CLK_TCK is 100 on every Linux this runs on.
    ticks / 100.0
}

/// A small deterministic generator (xorshift64*): the same data on every machine.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform in [0, 1).
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Host-like values, as node_exporter-style series move: CPU % and load averages that wander
/// (printed to 0.1 and 0.01), memory in 4 KiB pages, a disk that grows by blocks, a process
/// count that drifts, and network byte counters (the noisiest: up to 1 MB per 10 s).
struct Host {
    cpu: f64,
    mem: f64,
    disk: f64,
    load: f64,
    rx: f64,
    tx: f64,
    procs: f64,
}

impl Host {
    fn new(rng: &mut Rng) -> Host {
        Host {
            cpu: 20.0 + 40.0 * rng.unit(),
            mem: 4096.0 * (1e6 + 1e6 * rng.unit()).round(),
            disk: 1e11 + 1e11 * rng.unit(),
            load: 1.0 + rng.unit(),
            rx: 1e9 * rng.unit(),
            tx: 1e9 * rng.unit(),
            procs: (100.0 + 300.0 * rng.unit()).round(),
        }
    }

    /// The next reading of the ten metrics, rounded as exporters print them.
    fn step(&mut self, rng: &mut Rng) -> [f64; 10] {
        self.cpu = (self.cpu + 4.0 * (rng.unit() - 0.5)).clamp(0.0, 100.0);
        self.mem = (self.mem + 4096.0 * (512.0 * (rng.unit() - 0.5)).round()).max(1e9);
        self.disk += (4096.0 * (rng.unit() * 64.0).floor()).round();
        self.load = (self.load + 0.2 * (rng.unit() - 0.5)).max(0.0);
        self.rx += (rng.unit() * 1e6).round();
        self.tx += (rng.unit() * 3e5).round();
        self.procs = (self.procs + (6.0 * (rng.unit() - 0.5)).round()).max(1.0);
        let r1 = |v: f64| (v * 10.0).round() / 10.0;
        let r2 = |v: f64| (v * 100.0).round() / 100.0;
        [
            r1(self.cpu),
            r1(100.0 - self.cpu),
            self.mem.round(),
            (16e9 - self.mem).round(),
            self.disk,
            r2(self.load),
            r2(self.load * 0.9),
            self.rx,
            self.tx,
            self.procs,
        ]
    }
}

const NAMES: [&str; 10] = [
    "cpu_user_percent",
    "cpu_idle_percent",
    "mem_used_bytes",
    "mem_free_bytes",
    "disk_used_bytes",
    "load1",
    "load5",
    "net_rx_bytes_total",
    "net_tx_bytes_total",
    "procs",
];

/// One file of `format` holding `hosts` hosts × 10 metrics × `steps` readings 10 s apart.
fn host_file(format: &str, hosts: &mut [Host], rng: &mut Rng, t0_ms: i64, steps: i64) -> String {
    let mut text = String::new();
    if format == "csv" {
        // One host per CSV file (collectd writes one file per value list).
        text.push_str("epoch");
        for n in NAMES {
            let _ = write!(text, ",{n}");
        }
        text.push('\n');
    }
    for s in 0..steps {
        let ts_ms = t0_ms + s * 10_000;
        for (h, host) in hosts.iter_mut().enumerate() {
            let v = host.step(rng);
            write_reading(&mut text, format, h, ts_ms, &v);
        }
    }
    text
}

fn write_reading(text: &mut String, format: &str, h: usize, ts_ms: i64, v: &[f64; 10]) {
    match format {
        "influx" => {
            let _ = write!(text, "host,host=h{h} ");
            for (i, (n, x)) in NAMES.iter().zip(v).enumerate() {
                let sep = if i == 0 { "" } else { "," };
                let _ = write!(text, "{sep}{n}={x}");
            }
            let _ = writeln!(text, " {}", ts_ms * 1_000_000);
        }
        "prom" => {
            for (n, x) in NAMES.iter().zip(v) {
                let _ = writeln!(text, "{n}{{host=\"h{h}\"}} {x} {ts_ms}");
            }
        }
        "jsonl" => {
            let _ = write!(text, "{{\"ts\": {ts_ms}, \"host\": \"h{h}\"");
            for (n, x) in NAMES.iter().zip(v) {
                let _ = write!(text, ", \"{n}\": {x}");
            }
            text.push_str("}\n");
        }
        _ => {
            let _ = write!(text, "{}", ts_ms / 1000);
            for x in v {
                let _ = write!(text, ",{x}");
            }
            text.push('\n');
        }
    }
}

fn ext(format: &str) -> &'static str {
    match format {
        "influx" => "lp",
        "prom" => "prom",
        "jsonl" => "jsonl",
        _ => "csv",
    }
}

/// Committed files → durable samples per format.
fn rate(quick: bool) -> Value {
    // Per format: batches of 10 files × 60 hosts × 10 metrics × 50 readings = 300,000 samples.
    let batches = if quick { 1 } else { 4 };
    let mut out = serde_json::Map::new();
    for format in ["influx", "prom", "jsonl", "csv"] {
        let dir = tempfile::tempdir().unwrap();
        let mut shard = BenchShard::open(dir.path(), 3600).unwrap();
        let mut rng = Rng(0x5eed ^ format.len() as u64);
        let t0 = sqd::clock::unix_ms() - 2 * HOUR_MS;
        let (mut wall, mut cpu, mut bytes) = (0.0, 0.0, 0u64);
        let mut clients = Vec::new();
        for b in 0..batches {
            let files = rate_batch(format, &mut rng, t0 + b * 500_000, b);
            bytes += files.iter().map(|(_, _, c)| c.len() as u64).sum::<u64>();
            clients.extend(files.iter().map(|(c, _, _)| c.clone()));
            let staged = shard.stage(&files).unwrap();
            let (w0, c0) = (Instant::now(), cpu_s());
            shard.commit(staged, format).unwrap();
            wall += w0.elapsed().as_secs_f64();
            cpu += cpu_s() - c0;
        }
        clients.sort();
        clients.dedup();
        let samples: u64 = clients.iter().map(|c| shard.samples(c).unwrap()).sum();
        out.insert(
            format.to_owned(),
            json!({
                "samples": samples,
                "bytes": bytes,
                "wall_s": wall,
                "cpu_s": cpu,
                "samples_per_s": samples as f64 / wall,
                "samples_per_core_s": samples as f64 / cpu.max(0.01),
            }),
        );
    }
    Value::Object(out)
}

/// One batch of (client, file name, content): 10 files of 60 hosts (CSV: 600 files of one host,
/// 50 readings each, as collectd writes them).
fn rate_batch(
    format: &str,
    rng: &mut Rng,
    t0_ms: i64,
    batch: i64,
) -> Vec<(String, String, Vec<u8>)> {
    let mut files = Vec::new();
    if format == "csv" {
        for f in 0..10 {
            for h in 0..60 {
                let mut host = [Host::new(rng)];
                let text = host_file(format, &mut host, rng, t0_ms + f * 500_000, 50);
                let name = format!("b{batch}-f{f}.csv");
                files.push((format!("csv-h{h}"), name, text.into_bytes()));
            }
        }
        return files;
    }
    let mut hosts: Vec<Host> = (0..60).map(|_| Host::new(rng)).collect();
    for f in 0..10 {
        let text = host_file(format, &mut hosts, rng, t0_ms + f * 500_000, 50);
        let name = format!("b{batch}-f{f}.{}", ext(format));
        files.push((format.to_owned(), name, text.into_bytes()));
    }
    files
}

/// Bytes per sample after sealing 24 h of 60 host-like series at 10 s.
fn size(quick: bool) -> Value {
    let hours = if quick { 4 } else { 24 };
    let dir = tempfile::tempdir().unwrap();
    // A one-minute out-of-order window: everything but the last minute gets sealed.
    let mut shard = BenchShard::open(dir.path(), 60).unwrap();
    let mut rng = Rng(0xb10c);
    let mut hosts: Vec<Host> = (0..6).map(|_| Host::new(&mut rng)).collect();
    let t0 = sqd::clock::unix_ms() - hours * HOUR_MS;
    let files = hours * 6;
    for f in 0..files {
        let text = host_file("prom", &mut hosts, &mut rng, t0 + f * 600_000, 60);
        let file = (
            "hosts".to_owned(),
            format!("node-{f:04}.prom"),
            text.into_bytes(),
        );
        let staged = shard.stage(&[file]).unwrap();
        shard.commit(staged, "prom").unwrap();
    }
    let sealed = shard.seal(sqd::clock::unix_ms()).unwrap();
    let sizes = shard.sizes().unwrap();
    json!({
        "series": 60,
        "hours": hours,
        "interval_s": 10,
        "samples": sizes.samples,
        "sealed_samples": sealed,
        "sealed_payload_bytes_per_sample":
            sizes.sealed_payload_bytes as f64 / sizes.sealed_samples.max(1) as f64,
        "catalog_bytes_per_sample": sizes.catalog_bytes as f64 / sizes.samples.max(1) as f64,
        "catalog_bytes": sizes.catalog_bytes,
    })
}

/// The one-shard query: every series of a metric, 24 h at 1 min.
fn query(quick: bool, queries: usize) -> Value {
    let (series, hours) = if quick { (100, 4) } else { (1000, 24) };
    let dir = tempfile::tempdir().unwrap();
    let mut shard = BenchShard::open(dir.path(), 3600).unwrap();
    let mut rng = Rng(0x9e37);
    let end = sqd::clock::unix_ms() / 60_000 * 60_000;
    let t0 = end - hours * HOUR_MS;
    let began = Instant::now();
    // Files of 30 minutes: `cpu,host=hN usage=… ts` for every host.
    for f in 0..hours * 2 {
        let mut text = String::new();
        for s in 0..180 {
            let ts_ns = (t0 + f * 1_800_000 + s * 10_000) * 1_000_000;
            for h in 0..series {
                let _ = writeln!(
                    text,
                    "cpu,host=h{h} usage={:.1} {ts_ns}",
                    rng.unit() * 100.0
                );
            }
        }
        let file = (
            "hosts".to_owned(),
            format!("cpu-{f:03}.lp"),
            text.into_bytes(),
        );
        let staged = shard.stage(&[file]).unwrap();
        shard.commit(staged, "influx").unwrap();
    }
    shard.seal(sqd::clock::unix_ms()).unwrap();
    let load_s = began.elapsed().as_secs_f64();
    let reader = shard.reader().unwrap();
    let mut times = Vec::with_capacity(queries);
    let mut answer = (0, 0);
    for _ in 0..queries {
        let q0 = Instant::now();
        answer = reader.query("cpu_usage", &[], t0, end, 60_000).unwrap();
        times.push(q0.elapsed().as_secs_f64() * 1000.0);
    }
    times.sort_by(f64::total_cmp);
    let pct = |p: f64| times[((p * times.len() as f64).ceil() as usize).clamp(1, times.len()) - 1];
    json!({
        "series": series,
        "hours": hours,
        "interval_s": 10,
        "step_s": 60,
        "queries": queries,
        "answer_series": answer.0,
        "answer_points": answer.1,
        "load_s": load_s,
        "p50_ms": pct(0.50),
        "p99_ms": pct(0.99),
        "max_ms": times.last().copied().unwrap_or(0.0),
    })
}
