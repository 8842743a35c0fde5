//! The sandbox domain: what a sandbox is (`model`), its lifecycle (`manager`), the name
//! table (`names`), recovery at start and cleanup (`recovery`), lifecycle events (`events`),
//! its record on disk (`store`), its files and OCI spec (`files`, `oci`), its counters
//! (`stats`), what NRI is told (`hooks`), the seams to everything outside (`seams`) and the
//! background checks of its network (`checker`). It never imports tonic (`server/`
//! translates requests into these terms) and reaches the network only through
//! `network::PodNetwork`, wrapped in `seams`.

pub mod checker;
pub mod events;
pub mod files;
pub mod hooks;
pub mod manager;
pub mod model;
pub mod names;
pub mod oci;
pub mod recovery;
pub mod seams;
pub mod stats;
pub mod store;

pub use events::{EventKind, SandboxEvent};
pub use manager::{ListFilter, SandboxManager};
pub use model::{count_by_state, Sandbox, SandboxSpec, SandboxState};
pub use recovery::RecoveryReport;

#[cfg(test)]
mod double;
#[cfg(test)]
mod tests;
