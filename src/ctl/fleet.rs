//! sqdctl's fleet commands: `forget-worker`, for a worker that died and never comes back.

use super::{Admin, Cli, CtlError};
use crate::proto;

/// Forgets a dead worker: it leaves `status`, and the owners of its former clients adopt the
/// files it had claimed now instead of after `orphan_after`.
pub(super) async fn forget_worker(cli: &Cli, id: &str) -> Result<(), CtlError> {
    let mut admin = Admin::connect(cli).await?;
    let request = proto::ForgetWorkerRequest { id: id.to_owned() };
    let resp = admin
        .client
        .forget_worker(request)
        .await
        .map_err(|s| admin.failed(s))?
        .into_inner();
    println!(
        "forgot worker {}; {} live worker(s) adopt its claims now",
        crate::text::clip(id),
        resp.told
    );
    Ok(())
}
