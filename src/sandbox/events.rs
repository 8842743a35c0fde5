//! Lifecycle events: what changed (`EventKind`), the sandbox after the change, and the
//! broadcast every subscriber (GetContainerEvents, metrics) reads. A send never blocks the
//! lifecycle; this module never changes a sandbox.

use std::sync::Arc;

use tokio::sync::broadcast;

use crate::clock::now_nanos;
use crate::sandbox::manager::Manager;
use crate::sandbox::model::Sandbox;
use crate::sandbox::seams::Parts;

/// Lifecycle events buffered per subscriber; a slower one skips the oldest.
pub(super) const EVENT_BUFFER: usize = 1024;

/// A sandbox lifecycle change, for GetContainerEvents (evented PLEG) and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    Created,
    Started,
    Stopped,
    Deleted,
}

#[derive(Debug, Clone)]
pub struct SandboxEvent {
    pub kind: EventKind,
    /// The sandbox as it is after the change.
    pub sandbox: Arc<Sandbox>,
    /// Nanoseconds since the epoch.
    pub at: i64,
}

impl<P: Parts> Manager<P> {
    /// Lifecycle events from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<SandboxEvent> {
        self.events.subscribe()
    }

    pub(super) fn emit(&self, kind: EventKind, sandbox: &Sandbox) {
        // An error only means nobody listens.
        let _ = self.events.send(SandboxEvent {
            kind,
            sandbox: Arc::new(sandbox.clone()),
            at: now_nanos(),
        });
    }
}
