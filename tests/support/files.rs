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
