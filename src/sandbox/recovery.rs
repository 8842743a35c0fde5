//! Recovery at start and the cleanup of what no sandbox owns: load every record, finish or
//! undo what a previous crisp left half done, re-index the survivors, kill its stray plugins
//! and remove namespace pins no record names (also after a GC pass). It never creates a
//! sandbox or attaches a network.

use std::path::{Path, PathBuf};
use std::time::Instant;

use futures::StreamExt;

use crate::error::Result;
use crate::network::{GcReport, LiveAttachment, POD_IFNAME};
use crate::sandbox::manager::{Entry, Manager, SandboxManager};
use crate::sandbox::model::{Sandbox, SandboxState};
use crate::sandbox::seams::{Namespaces, Network, Parts, Records};

/// How many sandboxes recovery repairs at once.
const RECOVERY_CONCURRENCY: usize = 16;

/// What start-up recovery found and did.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct RecoveryReport {
    pub loaded: usize,
    pub ready: usize,
    pub rolled_back: usize,
    pub stopped: usize,
    pub failed_repairs: usize,
    pub bad_records: usize,
    pub orphan_netns_removed: usize,
    /// Plugin processes of a previous (killed) crisp still running for our sandboxes.
    pub stray_plugins_killed: usize,
    pub millis: u128,
}

impl RecoveryReport {
    fn log(&self) {
        tracing::info!(
            loaded = self.loaded,
            ready = self.ready,
            rolled_back = self.rolled_back,
            stopped = self.stopped,
            failed_repairs = self.failed_repairs,
            bad_records = self.bad_records,
            orphan_netns_removed = self.orphan_netns_removed,
            stray_plugins_killed = self.stray_plugins_killed,
            millis = self.millis as u64,
            "recovery finished"
        );
    }

    /// The repairs by kind, as the recovery metric counts them.
    pub fn repairs(&self) -> [(&'static str, usize); 5] {
        [
            ("rolled_back", self.rolled_back),
            ("stopped", self.stopped),
            ("failed_repair", self.failed_repairs),
            ("bad_record", self.bad_records),
            ("orphan_netns_removed", self.orphan_netns_removed),
        ]
    }
}

impl SandboxManager {
    /// One CNI GC pass (see [`crate::network::PodNetwork::collect_garbage`]): every sandbox
    /// that holds a network, indexed or still being created, is a valid attachment; any other
    /// cached attachment is torn down (then its orphan pin removed), and the plugins are told
    /// which ones are live.
    pub async fn collect_garbage(&self) -> GcReport {
        let report = self
            .network
            .collect_garbage(|| async {
                let creating = self
                    .creating
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .clone();
                let index = self.index.read().unwrap_or_else(|p| p.into_inner());
                let mut valid: Vec<LiveAttachment> = index
                    .values()
                    .map(|e| e.current())
                    .filter_map(|s| {
                        s.network.as_ref().map(|n| LiveAttachment {
                            network_name: Some(n.network_name.clone()),
                            container_id: s.id.clone(),
                            ifname: n.ifname.clone(),
                        })
                    })
                    .collect();
                // A creation's network is not known here: it counts as live on any network.
                valid.extend(creating.into_iter().map(|id| LiveAttachment {
                    network_name: None,
                    container_id: id,
                    ifname: POD_IFNAME.to_string(),
                }));
                Some(valid)
            })
            .await;
        for attachment in &report.stale.deleted {
            let pin = self.netns.path_for(&attachment.container_id);
            if pin.exists() && !self.owns_pin(&attachment.container_id) {
                self.remove_orphan_pin(&pin);
            }
        }
        report
    }
}

impl<P: Parts> Manager<P> {
    /// True when an indexed sandbox or a creation in flight has this id.
    fn owns_pin(&self, id: &str) -> bool {
        let creating = self.creating.lock().unwrap_or_else(|p| p.into_inner());
        let index = self.index.read().unwrap_or_else(|p| p.into_inner());
        creating.contains(id) || index.contains_key(id)
    }

    /// Start-up: load every record, finish or undo what a previous run left half done,
    /// index the survivors and re-reserve their names, then remove namespace pins in the
    /// netns dir that no record names.
    pub async fn recover(&self) -> Result<RecoveryReport> {
        let started = Instant::now();
        let (records, bad) = self.store.load_records().await?;
        let mut report = RecoveryReport {
            loaded: records.len(),
            bad_records: bad.len(),
            ..RecoveryReport::default()
        };
        for err in &bad {
            tracing::error!(error = %err, "unreadable sandbox record left in place for inspection");
        }
        let ids: std::collections::HashSet<String> = records.iter().map(|s| s.id.clone()).collect();
        report.stray_plugins_killed = self.network.kill_stray_plugins(ids).await;
        let known = self.known_pins(&records).await;
        let outcomes: Vec<Recovered> = futures::stream::iter(records)
            .map(|sandbox| self.recover_one(sandbox))
            .buffer_unordered(RECOVERY_CONCURRENCY)
            .collect()
            .await;
        self.index_survivors(outcomes, &mut report);
        report.orphan_netns_removed = self.remove_orphan_pins(&known);
        report.millis = started.elapsed().as_millis();
        report.log();
        Ok(report)
    }

    /// The pins that are not orphans: those the records name, and those a CNI cache entry
    /// still names.
    async fn known_pins(&self, records: &[Sandbox]) -> Vec<PathBuf> {
        let mut known: Vec<PathBuf> = records
            .iter()
            .filter_map(|s| s.netns_path.clone())
            .collect();
        // A pin a CNI cache entry still names is left to the GC pass: its DEL needs the
        // namespace to remove the pod's end of the veth (and so the host end) at once; the
        // pass removes the pin after the DEL.
        known.extend(self.network.cached_netns_paths().await);
        known
    }

    /// Counts what recovery did and indexes every kept sandbox, its name held again.
    fn index_survivors(&self, outcomes: Vec<Recovered>, report: &mut RecoveryReport) {
        let mut index = self.index.write().unwrap_or_else(|p| p.into_inner());
        for outcome in outcomes {
            let sandbox = match outcome {
                Recovered::RolledBack => {
                    report.rolled_back += 1;
                    continue;
                }
                Recovered::Kept(sandbox) => sandbox,
                Recovered::Stopped(sandbox) => {
                    report.stopped += 1;
                    sandbox
                }
                Recovered::RepairFailed(sandbox) => {
                    report.failed_repairs += 1;
                    sandbox
                }
            };
            if sandbox.is_ready() {
                report.ready += 1;
            }
            self.names.hold(&sandbox.spec, &sandbox.id);
            index.insert(sandbox.id.clone(), Entry::new(*sandbox));
        }
    }

    async fn recover_one(&self, mut sandbox: Sandbox) -> Recovered {
        let why = match sandbox.state {
            SandboxState::Creating => {
                tracing::warn!(
                    sandbox_id = %sandbox.id,
                    "rolling back a creation interrupted by a restart"
                );
                return match self.tear_down(&mut sandbox).await {
                    Ok(()) => match self.delete_record(&sandbox.id).await {
                        Ok(()) => Recovered::RolledBack,
                        Err(_) => Recovered::RepairFailed(Box::new(sandbox)),
                    },
                    Err(e) => {
                        tracing::error!(
                            sandbox_id = %sandbox.id,
                            error = %e,
                            "rollback after restart failed; kept NOT_READY"
                        );
                        Recovered::RepairFailed(Box::new(sandbox))
                    }
                };
            }
            SandboxState::Stopping => "finishing a stop interrupted by a restart",
            SandboxState::Ready
                if sandbox
                    .netns_path
                    .as_deref()
                    .is_some_and(|p| !self.netns.is_pinned(p)) =>
            {
                "its network namespace is gone (reboot?)"
            }
            SandboxState::Ready | SandboxState::NotReady => {
                return Recovered::Kept(Box::new(sandbox))
            }
        };
        tracing::warn!(sandbox_id = %sandbox.id, reason = why, "stopping sandbox during recovery");
        match self.tear_down(&mut sandbox).await {
            Ok(()) => Recovered::Stopped(Box::new(sandbox)),
            Err(e) => {
                tracing::error!(
                    sandbox_id = %sandbox.id,
                    error = %e,
                    "recovery teardown failed; kept NOT_READY"
                );
                Recovered::RepairFailed(Box::new(sandbox))
            }
        }
    }

    /// Removes `crisp-*` pins in the netns dir that no record names (a crash between
    /// pinning and… nothing: records are written first, so these come from lost state).
    fn remove_orphan_pins(&self, known: &[PathBuf]) -> usize {
        let mut removed = 0;
        for path in self.netns.pins() {
            if !known.iter().any(|k| k == &path) && self.remove_orphan_pin(&path) {
                removed += 1;
            }
        }
        removed
    }

    fn remove_orphan_pin(&self, path: &Path) -> bool {
        match self.netns.remove_netns(path) {
            Ok(()) => {
                tracing::warn!(
                    netns = %path.display(),
                    "removed a namespace pin no sandbox record names"
                );
                true
            }
            Err(e) => {
                tracing::error!(
                    netns = %path.display(),
                    error = %e,
                    "cannot remove orphan namespace pin"
                );
                false
            }
        }
    }
}

/// What recovery did with one record.
#[derive(Debug)]
enum Recovered {
    /// An interrupted creation, undone: its record is gone.
    RolledBack,
    /// Kept as it was: nothing needed repairing.
    Kept(Box<Sandbox>),
    /// Torn down (an interrupted stop finished, or a READY sandbox whose namespace is
    /// gone) and kept NOT_READY.
    Stopped(Box<Sandbox>),
    /// Its rollback or teardown failed, or its record could not be deleted: kept NOT_READY
    /// with what it still holds, for Stop/Remove to retry.
    RepairFailed(Box<Sandbox>),
}
