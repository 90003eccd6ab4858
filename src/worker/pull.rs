//! The per-client work of a worker: the seam where the SSH pull loop runs.
//!
//! The supervisor starts one [`serve_client`] per held (client, epoch) and stops it on revoke,
//! on a newer epoch or when the lease runs out. Until the data plane lands, serving a client
//! means holding it: the task keeps the assignment and reports nothing.

use tokio::sync::watch;
use tracing::info;

use crate::spec::ClientSpec;

/// Everything one client's task gets.
pub struct ClientTask {
    pub worker: String,
    pub spec: ClientSpec,
    pub epoch: u64,
}

/// Serves one client until `stop` turns true.
pub async fn serve_client(task: ClientTask, mut stop: watch::Receiver<bool>) {
    info!(worker = %task.worker, client = %task.spec.name, epoch = task.epoch, "serving client");
    let _ = stop.wait_for(|s| *s).await;
    info!(worker = %task.worker, client = %task.spec.name, epoch = task.epoch, "stopped serving client");
}
