//! The clients this worker has claims at, persisted in `<store>/held.json`, so a worker that
//! crashed can find and resolve its leftover claims when it starts again, even for clients it
//! no longer serves.

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use serde::{Deserialize, Serialize};
use tracing::warn;

use crate::spec::{ClientSpec, IngestSpec};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
struct SpecRecord {
    name: String,
    ssh: String,
    path: String,
    key_file: String,
    known_hosts: String,
    pattern: String,
    /// Absent in files written before parse settings existed.
    #[serde(default)]
    format: String,
    #[serde(default)]
    time_field: String,
    #[serde(default)]
    label_fields: Vec<String>,
    #[serde(default)]
    precision: String,
}

impl From<&ClientSpec> for SpecRecord {
    fn from(s: &ClientSpec) -> Self {
        SpecRecord {
            name: s.name.clone(),
            ssh: s.ssh.clone(),
            path: s.path.clone(),
            key_file: s.key_file.clone(),
            known_hosts: s.known_hosts.clone(),
            pattern: s.pattern.clone(),
            format: s.ingest.format.clone(),
            time_field: s.ingest.time_field.clone(),
            label_fields: s.ingest.label_fields.clone(),
            precision: s.ingest.precision.clone(),
        }
    }
}

impl From<SpecRecord> for ClientSpec {
    fn from(r: SpecRecord) -> Self {
        ClientSpec {
            name: r.name,
            ssh: r.ssh,
            path: r.path,
            key_file: r.key_file,
            known_hosts: r.known_hosts,
            pattern: r.pattern,
            ingest: Box::new(IngestSpec {
                format: r.format,
                time_field: r.time_field,
                label_fields: r.label_fields,
                precision: r.precision,
            }),
        }
    }
}

#[derive(Debug, Default)]
struct Inner {
    /// Clients whose directories may hold claims of ours.
    specs: BTreeMap<String, SpecRecord>,
    /// Clients served right now, with the epoch.
    running: HashMap<String, u64>,
}

/// Shared, persisted record of where our claims may be.
#[derive(Debug, Clone)]
pub(crate) struct Held {
    path: PathBuf,
    inner: Arc<Mutex<Inner>>,
}

impl Held {
    /// Loads `<store>/held.json`; a missing or unreadable file means nothing is known.
    pub(crate) fn open(store: &Path) -> (Held, Vec<ClientSpec>) {
        let path = store.join("held.json");
        let specs: BTreeMap<String, SpecRecord> = match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).unwrap_or_else(|e| {
                warn!(path = %path.display(), error = %e, "ignoring unreadable held-clients file");
                BTreeMap::new()
            }),
            Err(_) => BTreeMap::new(),
        };
        let before: Vec<ClientSpec> = specs.values().cloned().map(ClientSpec::from).collect();
        let held = Held {
            path,
            inner: Arc::new(Mutex::new(Inner {
                specs,
                running: HashMap::new(),
            })),
        };
        (held, before)
    }

    fn with<T>(&self, f: impl FnOnce(&mut Inner) -> T) -> T {
        let mut inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        let out = f(&mut inner);
        self.save(&inner);
        out
    }

    /// Written before the first claim of a task, so a crash always leaves a trace.
    pub(crate) fn started(&self, spec: &ClientSpec, epoch: u64) {
        self.with(|i| {
            i.specs.insert(spec.name.clone(), spec.into());
            i.running.insert(spec.name.clone(), epoch);
        });
    }

    /// The task stopped and released its claims.
    pub(crate) fn stopped(&self, client: &str, epoch: u64) {
        self.with(|i| {
            if i.running.get(client) == Some(&epoch) {
                i.running.remove(client);
                i.specs.remove(client);
            }
        });
    }

    /// The epoch we serve `client` under right now, if any.
    pub(crate) fn running_epoch(&self, client: &str) -> Option<u64> {
        self.inner
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .running
            .get(client)
            .copied()
    }

    /// Crash leftovers of `client` are resolved; forget it unless it is served again.
    pub(crate) fn resolved(&self, client: &str) {
        self.with(|i| {
            if !i.running.contains_key(client) {
                i.specs.remove(client);
            }
        });
    }

    fn save(&self, inner: &Inner) {
        let tmp = self.path.with_extension("json.tmp");
        let result = serde_json::to_vec_pretty(&inner.specs)
            .map_err(std::io::Error::other)
            .and_then(|bytes| {
                let mut f = std::fs::File::create(&tmp)?;
                f.write_all(&bytes)?;
                f.sync_data()?;
                std::fs::rename(&tmp, &self.path)
            });
        if let Err(e) = result {
            warn!(path = %self.path.display(), error = %e, "cannot record held clients; crash leftovers may need `sqd` restart to resolve");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(n: &str) -> ClientSpec {
        ClientSpec::example(n)
    }

    #[test]
    fn a_crash_leaves_the_clients_on_record_and_a_clean_stop_does_not() {
        let dir = tempfile::tempdir().unwrap();
        let (held, before) = Held::open(dir.path());
        assert!(before.is_empty());
        held.started(&spec("a"), 1);
        held.started(&spec("b"), 2);
        held.stopped("b", 2);
        held.stopped("a", 99); // another epoch: not this task
        let (again, before) = Held::open(dir.path());
        assert_eq!(before, vec![spec("a")]);
        again.resolved("a");
        assert!(Held::open(dir.path()).1.is_empty());
    }

    #[test]
    fn resolving_keeps_a_client_that_is_served_again() {
        let dir = tempfile::tempdir().unwrap();
        let (held, _) = Held::open(dir.path());
        held.started(&spec("a"), 3);
        held.resolved("a");
        assert_eq!(Held::open(dir.path()).1, vec![spec("a")]);
        assert_eq!(held.running_epoch("a"), Some(3));
    }
}
