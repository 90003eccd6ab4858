//! Named crash points for fault tests: when `SQD_FAILPOINT` names a point, the process aborts
//! there, like `kill -9` at exactly that step of a file's life. Unset, a check is one load.
//!
//! `SQD_FAILPOINT=after_claim` aborts the first time that point is reached;
//! `SQD_FAILPOINT=after_claim:3` on the third time.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

struct Armed {
    name: String,
    on_hit: u64,
    hits: AtomicU64,
}

fn armed() -> Option<&'static Armed> {
    static ARMED: OnceLock<Option<Armed>> = OnceLock::new();
    ARMED
        .get_or_init(|| {
            let spec = std::env::var("SQD_FAILPOINT").ok()?;
            let (name, on_hit) = match spec.split_once(':') {
                Some((n, k)) => (n.to_owned(), k.parse().unwrap_or(1)),
                None => (spec, 1),
            };
            Some(Armed {
                name,
                on_hit,
                hits: AtomicU64::new(0),
            })
        })
        .as_ref()
}

/// Aborts the process if `name` is the armed point and its hit count is reached.
pub(crate) fn hit(name: &str) {
    if let Some(a) = armed()
        && a.name == name
        && a.hits.fetch_add(1, Ordering::SeqCst) + 1 >= a.on_hit
    {
        eprintln!("failpoint {name} reached: aborting");
        std::process::abort();
    }
}
