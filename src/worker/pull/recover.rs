//! Claims that outlive their cycle: our claim dir is released when a task stops, claims
//! other workers released (or left long orphaned) are adopted, and what a crash of this
//! worker left behind is resolved against our own catalog when it starts again.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use tracing::{info, warn};

use super::{Link, PullConfig, ssh_params};
use crate::files::{ClaimDir, ClaimLayout, EntryKind, RemoteEntry, name_path};
use crate::spec::BadSshTarget;
use crate::spec::ClientSpec;
use crate::store::{FileMeta, Sink};
use crate::transport::ssh::{self, Remote, TransportError};
use crate::worker::held::Held;
use crate::worker::lifecycle::{self, ClaimAction, CopyVerdict};

/// Why a crash's leftover claims could not be resolved yet.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ResolveError {
    #[error(transparent)]
    Target(#[from] BadSshTarget),
    #[error(transparent)]
    Transport(#[from] TransportError),
    #[error("catalog lookup failed: {0}")]
    Lookup(#[from] tokio::task::JoinError),
}

/// Marks our claim dir released: whatever is left in it was never committed (a cycle runs to
/// its end before a stop is honoured), so the next owner may take it at once.
pub(super) async fn release(link: Link<'_>) -> bool {
    let Link { task, remote } = link;
    let layout = task.layout();
    let claim = task.claim();
    let mine = layout.path(&claim);
    match remote.list(&mine).await {
        Ok(files) if files.is_empty() => remote.remove_dir(&mine).await,
        Ok(_) => {
            let to = layout.released(claim.name().as_bytes());
            remote.rename(&mine, &to).await.is_ok()
        }
        Err(e) if ssh::is_not_found(&e) => true,
        Err(e) => {
            warn!(client = %task.spec.name, error = %e, "cannot release claims; they will be resolved when this worker restarts");
            false
        }
    }
}

/// Moves the files of released (or long orphaned) claim dirs into ours, then removes the
/// emptied dirs (see [`lifecycle::claim_action`]).
pub(super) async fn adopt(
    link: Link<'_>,
    foreign_seen: &mut HashMap<Vec<u8>, Instant>,
) -> Result<(), TransportError> {
    let Link { task, remote } = link;
    let layout = task.layout();
    let mine = task.mine();
    let now = Instant::now();
    let dirs = remote.list(&layout.root()).await?;
    foreign_seen.retain(|name, _| dirs.iter().any(|d| &d.name == name));
    for dir in dirs.iter().filter(|d| d.kind == EntryKind::Dir) {
        let Some(claim) = ClaimDir::parse(&dir.name) else {
            continue;
        };
        let seen = *foreign_seen.entry(dir.name.clone()).or_insert(now);
        let orphaned = now.duration_since(seen) >= task.config.orphan_after
            || task.config.forgotten.contains(&claim.worker);
        if lifecycle::claim_action(&claim, &task.worker, task.epoch, orphaned) != ClaimAction::Adopt
        {
            continue;
        }
        if !claim.released {
            warn!(client = %task.spec.name, from = %String::from_utf8_lossy(&dir.name),
                  "adopting claims of a worker that never came back: a file it had committed may be stored twice");
        }
        let old = layout.listed(&dir.name);
        let files = match remote.list(&old).await {
            Ok(f) => f,
            Err(e) if ssh::is_not_found(&e) => continue,
            Err(e) => return Err(e),
        };
        let adopted = move_files(remote, &old, &mine, &files).await?;
        if adopted > 0 {
            info!(client = %task.spec.name, from = %String::from_utf8_lossy(&dir.name), files = adopted, "adopted claims");
        }
        remote.remove_dir(&old).await;
    }
    Ok(())
}

/// Renames the regular files of `files` from `from` into `to`; returns how many moved.
async fn move_files(
    remote: &Remote,
    from: &Path,
    to: &Path,
    files: &[RemoteEntry],
) -> Result<usize, TransportError> {
    let mut moved = 0;
    for f in files.iter().filter(|f| f.kind == EntryKind::File) {
        let name = name_path(&f.name);
        match remote.rename(&from.join(name), &to.join(name)).await {
            Ok(true) => moved += 1,
            Ok(false) => {}
            Err(e) if e.needs_reconnect() => return Err(e),
            // Same name already in ours: adopt it once ours is processed.
            Err(_) => {}
        }
    }
    Ok(moved)
}

/// Resolves what a crash of this worker left in one client's directory: claimed files whose
/// key is in our catalog were committed, so their source is removed; the others go back to
/// the directory for whoever serves the client now. Claim dirs of the epoch we serve right
/// now are left to that task.
pub(crate) async fn resolve_leftovers(
    worker: &str,
    spec: &ClientSpec,
    store: Arc<dyn Sink>,
    config: &PullConfig,
    held: &Held,
) -> Result<(), ResolveError> {
    let params = ssh_params(spec, config)?;
    let remote = super::open_ssh(&params, &config.spawner, super::Priority::First).await?;
    let resolver = Resolver {
        worker,
        spec,
        store,
        remote: &remote,
        layout: ClaimLayout::new(&spec.path),
    };
    let result = resolver.run(held).await;
    remote.close();
    result
}

/// One client's crash leftovers, resolved over one connection.
struct Resolver<'a> {
    worker: &'a str,
    spec: &'a ClientSpec,
    store: Arc<dyn Sink>,
    remote: &'a Remote,
    layout: ClaimLayout,
}

/// Files a resolution settled: (committed before the crash, returned to the directory).
type Resolved = (usize, usize);

impl Resolver<'_> {
    async fn run(&self, held: &Held) -> Result<(), ResolveError> {
        let dirs = match self.remote.list(&self.layout.root()).await {
            Ok(d) => d,
            Err(e) if ssh::is_not_found(&e) => return Ok(()),
            Err(e) => return Err(e.into()),
        };
        let (mut committed, mut returned) = (0, 0);
        for d in dirs.iter().filter(|d| d.kind == EntryKind::Dir) {
            let Some(claim) = ClaimDir::parse(&d.name) else {
                continue;
            };
            if claim.worker != self.worker
                || claim.released
                || held.running_epoch(&self.spec.name) == Some(claim.epoch)
            {
                continue;
            }
            let (c, r) = self.resolve_dir(&d.name).await?;
            committed += c;
            returned += r;
        }
        if committed + returned > 0 {
            info!(client = %self.spec.name, committed, returned, "resolved claims left by an earlier crash");
        }
        Ok(())
    }

    /// Resolves every file of one of our old claim dirs, then removes the dir (or, when a
    /// file could not go back, releases it to whoever serves the client).
    async fn resolve_dir(&self, name: &[u8]) -> Result<Resolved, ResolveError> {
        let old = self.layout.listed(name);
        let (mut committed, mut returned) = (0, 0);
        let files = self.remote.list(&old).await?;
        for f in files.iter().filter(|f| f.kind == EntryKind::File) {
            let path = old.join(name_path(&f.name));
            if self.was_committed(&path, f).await? {
                self.remote.remove(&path).await?;
                committed += 1;
            } else if self
                .remote
                .rename(&path, &self.layout.dir().join(name_path(&f.name)))
                .await
                .is_ok()
            {
                returned += 1;
            }
        }
        if !self.remote.remove_dir(&old).await {
            // Something could not go back (a new file took its name): let the owner adopt it.
            let _ = self.remote.rename(&old, &self.layout.released(name)).await;
        }
        Ok((committed, returned))
    }

    /// Reads a claimed file and looks its key up in our catalog: true only when it is intact
    /// and known (then its source may go).
    async fn was_committed(&self, path: &Path, f: &RemoteEntry) -> Result<bool, ResolveError> {
        let mut hasher = blake3::Hasher::new();
        let (read, size_after, mtime_after) = self
            .remote
            .read_file(path, f.size, |chunk| {
                hasher.update(chunk);
                Ok(())
            })
            .await?;
        if lifecycle::verify_copy(f.size, f.mtime, read, size_after, mtime_after)
            != CopyVerdict::Intact
        {
            return Ok(false);
        }
        let key = FileMeta {
            client: self.spec.name.clone(),
            name: f.name.clone(),
            size: read,
            mtime: f.mtime,
            hash: *hasher.finalize().as_bytes(),
        }
        .key();
        let store = self.store.clone();
        // A catalog that cannot answer counts as "not committed": the file goes back to the
        // directory, and the store's idempotent commit absorbs a second pull.
        let known = tokio::task::spawn_blocking(move || store.contains(&key)).await?;
        Ok(known.unwrap_or(false))
    }
}
