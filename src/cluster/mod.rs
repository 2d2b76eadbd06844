//! Launching and managing clusters of nodes: the cluster files, process
//! records, `cluster up`, `status` and `down`, and the seed's hand-started
//! flow.

pub mod agent;
pub mod cleanup;
pub mod deploy;
pub mod files;
pub mod interrupt;
pub mod launch;
pub mod localhost;
pub mod manage;
pub mod place;
pub mod ports;
pub mod reach;
pub mod ready;
pub mod register;
pub mod running;
pub mod runstate;
pub mod session;
pub mod ssh;
pub mod topology;
