//! How workers reach producing hosts. Today: SSH with SFTP over the system OpenSSH client.

pub mod batch;
pub mod ssh;
