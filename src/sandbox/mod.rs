//! The sandbox domain: what a sandbox is (`model`), its lifecycle (`manager`), its record
//! on disk (`store`), its one seam to the network (`network`) and the background checks of
//! that network (`checker`, `health`). It never imports tonic: `server/` translates requests
//! into these terms.

pub mod checker;
pub mod files;
pub mod health;
pub mod manager;
pub mod model;
pub mod network;
pub mod oci;
pub mod stats;
pub mod store;

pub use manager::{EventKind, ListFilter, RecoveryReport, SandboxEvent, SandboxManager};
pub use model::{Sandbox, SandboxSpec, SandboxState};
