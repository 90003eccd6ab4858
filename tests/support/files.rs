//! Files with known contents on the producing side and what landed in the stores: content
//! hashes of sources, stored files and catalog rows, and what is left at a source.
#![allow(dead_code)]

use std::path::Path;
use std::time::Duration;

/// The content identity the tests compare: blake3, hex.
pub fn hash(bytes: &[u8]) -> String {
    blake3::hash(bytes).to_hex().to_string()
}

/// Writes `n` files of varied sizes into `dir`; returns their content hashes. Most are 0-8 KiB;
/// every 250th is 1.5 MiB and a few bytes, large enough for the worker's direct writes.
pub fn produce(dir: &Path, prefix: &str, n: usize) -> Vec<String> {
    std::fs::create_dir_all(dir).expect("create source dir");
    (0..n)
        .map(|i| {
            let mut content = format!("{prefix} file {i}\n").into_bytes();
            // Deterministic pseudo-random body.
            let mut x = (i as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
            let len = if i % 250 == 7 {
                (3 << 19) + i
            } else {
                i * 37 % 8192
            };
            for _ in 0..len {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                content.push(x as u8);
            }
            std::fs::write(dir.join(format!("{prefix}-{i:05}.jsonl")), &content)
                .expect("write source file");
            hash(&content)
        })
        .collect()
}

/// Content hashes of every file under `<store>/files`, and the catalog's (client, hash) rows.
pub fn store_contents(store: &Path) -> (Vec<String>, Vec<(String, String)>) {
    let mut files = Vec::new();
    let mut stack = vec![store.join("files")];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                files.push(hash(&std::fs::read(&p).expect("read stored file")));
            }
        }
    }
    let mut rows = Vec::new();
    let catalog = store.join("catalog.sqlite");
    if catalog.exists() {
        let conn = rusqlite::Connection::open(&catalog).expect("open catalog");
        conn.busy_timeout(Duration::from_secs(10))
            .expect("busy timeout");
        // A worker that just started may not have created the table yet: nothing stored.
        let mut stmt = match conn.prepare("SELECT client, hash FROM files") {
            Ok(stmt) => stmt,
            Err(e) if e.to_string().contains("no such table") => return (files, rows),
            Err(e) => panic!("query catalog {}: {e}", catalog.display()),
        };
        rows = stmt
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .expect("read catalog")
            .collect::<Result<_, _>>()
            .expect("catalog rows");
    }
    (files, rows)
}

pub fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

/// Regular files left directly in `dir` and anywhere in its claim dirs.
pub fn leftovers(dir: &Path) -> (usize, usize) {
    let count = |d: &Path| {
        std::fs::read_dir(d)
            .map(|it| {
                it.flatten()
                    .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
                    .count()
            })
            .unwrap_or(0)
    };
    let claims: usize = std::fs::read_dir(dir.join(".sqd/claim"))
        .map(|it| it.flatten().map(|e| count(&e.path())).sum())
        .unwrap_or(0);
    (count(dir), claims)
}

/// `n` files of `size` pseudo-random bytes each; their content hashes.
/// They are written aside first and renamed in together: written in place one after the other,
/// the first ones could settle (300 ms) and be pulled before the last ones exist.
pub fn produce_sized(dir: &Path, prefix: &str, n: usize, size: usize) -> Vec<String> {
    let aside = tempfile::tempdir_in(dir.parent().expect("a source dir has a parent"))
        .expect("create a directory to write aside");
    let hashes: Vec<String> = (0..n)
        .map(|i| {
            let mut x = (i as u64 + 7).wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ size as u64;
            let content: Vec<u8> = (0..size)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    x as u8
                })
                .collect();
            std::fs::write(
                aside.path().join(format!("{prefix}-{i:03}.jsonl")),
                &content,
            )
            .expect("write source file");
            hash(&content)
        })
        .collect();
    for entry in std::fs::read_dir(aside.path()).expect("read the aside dir") {
        let entry = entry.expect("an aside entry");
        std::fs::rename(entry.path(), dir.join(entry.file_name())).expect("move a file in");
    }
    hashes
}

/// Writes `n` JSON-lines files of 10 samples each (metric `v`, integer values) into `dir`;
/// returns their content hashes and the samples' (count, sum).
pub fn produce_jsonl(dir: &Path, prefix: &str, n: usize) -> (Vec<String>, u64, f64) {
    std::fs::create_dir_all(dir).expect("create source dir");
    let now_s = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    let (mut count, mut sum) = (0, 0.0);
    let hashes = (0..n)
        .map(|i| {
            let mut text = String::new();
            for line in 0..10 {
                let v = (i * 10 + line) as f64;
                text.push_str(&format!(
                    "{{\"ts\": {}, \"v\": {v}}}\n",
                    now_s - 600 + line as u64
                ));
                count += 1;
                sum += v;
            }
            std::fs::write(dir.join(format!("{prefix}-samples-{i:03}.jsonl")), &text)
                .expect("write source file");
            hash(text.as_bytes())
        })
        .collect();
    (hashes, count, sum)
}

/// Samples in a store's shard: (count, sum), through their series (a block of a lost series
/// would not count).
pub fn store_samples(store: &Path) -> (u64, f64) {
    let catalog = store.join("catalog.sqlite");
    if !catalog.exists() {
        return (0, 0.0);
    }
    let conn = rusqlite::Connection::open(&catalog).expect("open catalog");
    conn.busy_timeout(Duration::from_secs(10))
        .expect("busy timeout");
    conn.query_row(
        "SELECT COALESCE(SUM(b.count), 0), COALESCE(SUM(b.sum), 0.0)
         FROM ts_blocks b JOIN ts_series s ON s.id = b.series",
        [],
        |r| Ok((r.get::<_, i64>(0)? as u64, r.get(1)?)),
    )
    .unwrap_or((0, 0.0))
}
