//! Micro-benchmark: samples/s for line protocol and Prometheus text on generated
//! 100k-line files. Run: `cargo test --release -- --ignored --nocapture bench_`.

use super::super::*;
use std::time::Instant;

const LINES: usize = 100_000;

fn influx_file() -> Vec<u8> {
    let mut out = Vec::new();
    for i in 0..LINES {
        let host = i % 50;
        let ts = 1_764_633_600_000_000_000i64 + i as i64 * 10_000_000_000;
        let line = match i % 4 {
            0 => format!(
                "cpu,cpu=cpu{},host=web-{host} usage_idle=97.{i},usage_system=0.9,usage_user=1.5,usage_iowait=0.2 {ts}\n",
                i % 8
            ),
            1 => format!("mem,host=web-{host} used={i}i,free=7890123i,used_percent=15.{i} {ts}\n"),
            2 => format!(
                "disk,device=sda1,fstype=ext4,host=web-{host},path=/ free={i}i,used=5000000000i,used_percent=50.5 {ts}\n"
            ),
            _ => format!(
                "net,host=web-{host},interface=eth0 bytes_recv={i}i,bytes_sent=98765432i,drop_in=0i {ts}\n"
            ),
        };
        out.extend_from_slice(line.as_bytes());
    }
    out
}

fn prom_file() -> Vec<u8> {
    let mut out = Vec::new();
    for i in 0..LINES {
        let line = match i % 4 {
            0 => format!(
                "node_cpu_seconds_total{{cpu=\"{}\",mode=\"idle\"}} {}.25\n",
                i % 8,
                i
            ),
            1 => format!(
                "node_network_receive_bytes_total{{device=\"eth{}\"}} {}\n",
                i % 4,
                i * 1000
            ),
            2 => format!(
                "node_filesystem_avail_bytes{{device=\"/dev/sda1\",fstype=\"ext4\",mountpoint=\"/\"}} 5.0e+09 {}\n",
                1_764_633_600_000i64 + i as i64
            ),
            _ => format!("# TYPE m{i} gauge\nnode_load1 0.{i}\n"),
        };
        out.extend_from_slice(line.as_bytes());
    }
    out
}

/// CPU time of this thread (ns), from Linux's schedstat: the machine is shared, so wall
/// time says little about the parser. `None` elsewhere.
fn thread_cpu_ns() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    s.split_whitespace().next()?.parse().ok()
}

fn measure(name: &str, format: Format, bytes: &[u8]) {
    let opts = ParseOptions::new("web-1", 0);
    let (mut best_wall, mut best_cpu) = (f64::MAX, f64::MAX);
    let mut samples = 0;
    for _ in 0..7 {
        let mut sink = CountSink::default();
        let cpu0 = thread_cpu_ns();
        let t = Instant::now();
        let r = parse(format, bytes, &opts, &mut sink);
        best_wall = best_wall.min(t.elapsed().as_secs_f64());
        if let (Some(a), Some(b)) = (cpu0, thread_cpu_ns()) {
            best_cpu = best_cpu.min((b - a) as f64 / 1e9);
        }
        assert_eq!(r.errors, 0, "{:?}", r.first_error);
        samples = r.samples;
    }
    let mb = bytes.len() as f64 / 1e6;
    println!(
        "{name}: {samples} samples, {mb:.1} MB; wall {:.1} ms = {:.2} M samples/s; cpu {:.1} ms = {:.2} M samples/s per core, {:.0} MB/s",
        best_wall * 1e3,
        samples as f64 / best_wall / 1e6,
        best_cpu * 1e3,
        samples as f64 / best_cpu / 1e6,
        mb / best_cpu
    );
}

#[test]
#[ignore = "benchmark: run with --release -- --ignored --nocapture"]
fn bench_influx() {
    measure("influx", Format::Influx, &influx_file());
}

#[test]
#[ignore = "benchmark: run with --release -- --ignored --nocapture"]
fn bench_prom() {
    measure("prom", Format::Prom, &prom_file());
}

#[test]
#[ignore = "benchmark: run with --release -- --ignored --nocapture"]
fn bench_jsonl() {
    let bytes: Vec<u8> = (0..LINES)
        .flat_map(|i| {
            format!(
                "{{\"ts\": {}, \"host\": \"web-{}\", \"cpu\": 12.{i}, \"mem\": 40.1}}\n",
                1_764_633_600 + i,
                i % 50
            )
            .into_bytes()
        })
        .collect();
    measure("jsonl", Format::Jsonl, &bytes);
}
