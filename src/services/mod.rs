//! Thin tonic adapters: decode requests, hand them to the leader core, encode answers. The one
//! place that maps errors to `tonic::Status` and converts protobuf to domain types.

pub(crate) mod admin;
pub(crate) mod alerts;
pub(crate) mod convert;
pub(crate) mod node;
pub(crate) mod query;
pub(crate) mod shard_wire;

use crate::leader::core::CoreError;
use crate::leader::registry::RegistryError;

impl From<CoreError> for tonic::Status {
    fn from(e: CoreError) -> Self {
        let msg = e.to_string();
        match e {
            CoreError::Registry(RegistryError::DuplicateClient(_)) => {
                tonic::Status::already_exists(msg)
            }
            CoreError::Registry(
                RegistryError::UnknownClient(_) | RegistryError::UnknownWorker(_),
            ) => tonic::Status::not_found(msg),
            CoreError::Registry(RegistryError::WorkerNotDead(..)) => {
                tonic::Status::failed_precondition(msg)
            }
            CoreError::Invalid(_) => tonic::Status::invalid_argument(msg),
            CoreError::State(_) | CoreError::Persist(_) => tonic::Status::internal(msg),
            CoreError::Stopped => tonic::Status::unavailable(msg),
        }
    }
}
