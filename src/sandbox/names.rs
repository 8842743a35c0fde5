//! Name reservation: a pod's name, namespace, uid and attempt belong to one sandbox at a
//! time, from the start of its Run until it is removed. This module never touches the
//! network, the namespace or the records.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};

use tokio::sync::watch;

use crate::error::{Error, Result};
use crate::sandbox::model::{new_id, SandboxSpec};

pub(super) enum Reservation {
    /// A RunPodSandbox is in flight; a retry with the same spec waits for it.
    Creating {
        spec: Box<SandboxSpec>,
        done: watch::Receiver<()>,
    },
    Held {
        id: String,
    },
}

/// The name table, keyed by [`crate::sandbox::model::PodMetadata::reservation_slot`]. Held
/// only for map operations, never across an await.
#[derive(Default)]
pub(super) struct Names {
    table: Mutex<HashMap<String, Reservation>>,
}

/// What a Run got from the name table.
pub(super) enum Claim {
    /// The name is this Run's, for a new sandbox `id`. Dropping `done` (after
    /// [`Names::settle`]) wakes the retries waiting for this creation.
    Fresh {
        key: String,
        id: String,
        done: watch::Sender<()>,
    },
    /// A retry of a creation that succeeded meanwhile: the sandbox it made.
    Existing(String),
}

impl Names {
    fn lock(&self) -> MutexGuard<'_, HashMap<String, Reservation>> {
        self.table.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Reserves the name of `spec` for a new sandbox. A retry of a creation still in flight
    /// (same name and spec) waits for it: it gets its id, or tries afresh if it failed. A
    /// name held by a sandbox, or by a creation with another spec, is refused.
    pub(super) async fn claim(&self, spec: &SandboxSpec) -> Result<Claim> {
        let key = spec.metadata.reservation_slot();
        loop {
            let mut wait = {
                let mut names = self.lock();
                match names.get(&key) {
                    None => {
                        let id = new_id().map_err(|e| Error::io("generating a sandbox id", e))?;
                        let (tx, rx) = watch::channel(());
                        names.insert(
                            key.clone(),
                            Reservation::Creating {
                                spec: Box::new(spec.clone()),
                                done: rx,
                            },
                        );
                        return Ok(Claim::Fresh { key, id, done: tx });
                    }
                    Some(Reservation::Held { id }) => {
                        return Err(Error::NameReserved {
                            name: spec.metadata.reservation_key(),
                            holder: id.clone(),
                        })
                    }
                    Some(Reservation::Creating { spec: first, done }) if **first == *spec => {
                        done.clone()
                    }
                    Some(Reservation::Creating { .. }) => {
                        return Err(Error::NameReserved {
                            name: spec.metadata.reservation_key(),
                            holder: "a sandbox still being created with a different config".into(),
                        })
                    }
                }
            };
            // Resolves when the first creation ends (its sender is dropped).
            let _ = wait.changed().await;
            if let Some(Reservation::Held { id }) = self.lock().get(&key) {
                return Ok(Claim::Existing(id.clone()));
            }
            // The first attempt failed and released the name: this retry tries afresh.
        }
    }

    /// Ends a [`Claim::Fresh`]: the name stays held by `id` when a sandbox was kept (made,
    /// or failed with a rollback that must be retried), and is free again otherwise.
    pub(super) fn settle(&self, key: String, id: &str, kept: bool) {
        let mut names = self.lock();
        if kept {
            names.insert(key, Reservation::Held { id: id.to_string() });
        } else {
            names.remove(&key);
        }
    }

    /// Holds the name of a sandbox recovery kept.
    pub(super) fn hold(&self, spec: &SandboxSpec, id: &str) {
        self.lock().insert(
            spec.metadata.reservation_slot(),
            Reservation::Held { id: id.to_string() },
        );
    }

    /// Frees the name of a removed sandbox, if it is still the one holding it.
    pub(super) fn release(&self, spec: &SandboxSpec, id: &str) {
        let key = spec.metadata.reservation_slot();
        let mut names = self.lock();
        if matches!(names.get(&key), Some(Reservation::Held { id: holder }) if holder == id) {
            names.remove(&key);
        }
    }
}
