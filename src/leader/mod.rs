//! The leader: membership, liveness, assignment and the durable registry.

pub mod registry;
pub mod scheduler;
