//! How workers reach producing hosts. Today: SSH with SFTP over the system OpenSSH client,
//! plus batch mode's wire protocol for hosts that let the key run GNU tools.

pub(crate) mod batch;
pub mod ssh;
