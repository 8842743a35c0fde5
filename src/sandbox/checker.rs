//! The background network checker: every `--cni-check-interval`, for each READY sandbox with
//! a namespace of its own,
//! - a live check (a statfs of the pin, one netlink dump inside the pod's namespace): the
//!   pin must still be a namespace and the pod's interfaces must still hold every IP crisp
//!   reported;
//!   if not, the sandbox becomes NOT_READY (recorded, event, metric, log) so kubelet recreates
//!   it as it does a crashed sandbox;
//! - then CNI CHECK with the cached config and result, reported (verbose status, metrics, a
//!   warning) but never changing the state: a plugin daemon restarting must not take every pod
//!   down with it.
//!
//! Nothing here sits on a call's path. A CHECK starts only while its sandbox's lock is free
//! and a Stop or Remove that comes during it kills it and discards its result. Rounds never
//! overlap: one that overruns the interval is followed at once by the next. It never tears
//! a sandbox down: Stop and Remove release what a lost sandbox holds.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::future::{AbortHandle, Abortable};
use futures::StreamExt;
use serde::Serialize;

use crate::netns;
use crate::network::LiveCheck;
use crate::sandbox::events::EventKind;
use crate::sandbox::manager::{RunningCheck, SandboxManager};
use crate::sandbox::model::{Sandbox, SandboxState};

/// At most this many CHECK chains run at once (each runs its plugins one after another, so
/// this is also the most plugin processes the checker runs at a time).
pub const CHECK_CONCURRENCY: usize = 4;
/// At most this many live checks (one short-lived thread each) run at once.
pub const LIVE_CONCURRENCY: usize = 16;
/// Each wait between rounds is the interval ± this fraction, so that several crisps (or one
/// after a restart) do not fall into step.
const JITTER: f64 = 0.1;

/// What the checker has done so far, for verbose Status.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CheckerStatus {
    /// Seconds between rounds; 0 when the checker is off.
    pub interval_secs: u64,
    pub rounds: u64,
    pub overruns: u64,
    pub last_round: Option<RoundReport>,
}

/// One round's figures.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RoundReport {
    /// Nanoseconds since the epoch when the round ended.
    pub finished_at: i64,
    /// READY sandboxes with a namespace of their own when the round began.
    pub sandboxes: usize,
    pub live_failed: usize,
    pub live_millis: f64,
    /// CPU crisp spent on the live checks.
    pub live_cpu_millis: f64,
    /// CHECK chains that ran plugins, and how many of those failed.
    pub checks_run: usize,
    pub checks_failed: usize,
    /// Not checked: busy (a Run/Stop/Remove held the lock), cancelled, or no CHECK to run.
    pub checks_skipped: usize,
    pub check_millis: f64,
    /// CPU crisp and its plugins spent on the CHECKs.
    pub check_cpu_millis: f64,
}

/// Runs rounds forever, `interval` apart (jittered), starting one interval after start-up
/// (recovery has just looked at every pin).
pub async fn run(manager: &SandboxManager, interval: Duration) {
    manager.checker_status().interval_secs = interval.as_secs();
    let mut wait = jittered(interval);
    loop {
        tokio::time::sleep(wait).await;
        let started = Instant::now();
        let report = manager.check_round().await;
        let took = started.elapsed();
        let overran = took >= interval;
        crate::telemetry::record_check_round("live", report.live_millis);
        crate::telemetry::record_check_round("check", report.check_millis);
        tracing::debug!(
            sandboxes = report.sandboxes,
            live_failed = report.live_failed,
            checks_run = report.checks_run,
            checks_failed = report.checks_failed,
            millis = took.as_millis() as u64,
            "network check round finished"
        );
        {
            let mut status = manager.checker_status();
            status.rounds += 1;
            status.overruns += u64::from(overran);
            status.last_round = Some(report);
        }
        wait = if overran {
            crate::telemetry::record_check_overrun();
            tracing::warn!(
                took_ms = took.as_millis() as u64,
                interval_s = interval.as_secs(),
                "a network check round took longer than --cni-check-interval; the next starts now"
            );
            Duration::ZERO
        } else {
            jittered(interval.saturating_sub(took))
        };
    }
}

fn random_u64() -> Option<u64> {
    let mut bytes = [0u8; 8];
    getrandom::fill(&mut bytes).ok()?;
    Some(u64::from_le_bytes(bytes))
}

fn jittered(d: Duration) -> Duration {
    let unit = random_u64().map_or(0.5, |r| (r >> 11) as f64 / (1u64 << 53) as f64);
    d.mul_f64(1.0 - JITTER + 2.0 * JITTER * unit)
}

/// A random order, so that the same sandboxes are not always checked first.
fn shuffle<T>(items: &mut [T]) {
    for i in (1..items.len()).rev() {
        let Some(r) = random_u64() else {
            return;
        };
        items.swap(i, (r % (i as u64 + 1)) as usize);
    }
}

/// CPU time of crisp and of its reaped children (the plugins), in milliseconds.
fn cpu_millis() -> (f64, f64) {
    use nix::sys::resource::{getrusage, UsageWho};
    let ms = |who| {
        getrusage(who).map_or(0.0, |u| {
            let t = |tv: nix::sys::time::TimeVal| {
                tv.tv_sec() as f64 * 1000.0 + tv.tv_usec() as f64 / 1000.0
            };
            t(u.user_time()) + t(u.system_time())
        })
    };
    (ms(UsageWho::RUSAGE_SELF), ms(UsageWho::RUSAGE_CHILDREN))
}

/// How one sandbox's live check ended.
enum Live {
    Passed,
    /// Something crisp reported is gone; `reason` is the metric label.
    Lost {
        reason: &'static str,
        missing: Vec<String>,
    },
    /// Could not look (the namespace could not be entered): nothing is concluded.
    Error(String),
    /// Not READY any more, or busy.
    Skipped,
}

/// How one sandbox's CHECK ended.
enum Check {
    Ran { failed: bool },
    Skipped,
}

/// The pin and the reported addresses of one sandbox, read now.
async fn look(sandbox: &Sandbox) -> Live {
    let Some(pin) = sandbox.netns_path.as_deref() else {
        return Live::Skipped;
    };
    if !netns::is_pinned(pin) {
        return Live::Lost {
            reason: "netns_gone",
            missing: vec![format!("network namespace pin {}", pin.display())],
        };
    }
    let Some(network) = sandbox.network.as_ref().filter(|n| !n.ips.is_empty()) else {
        return Live::Passed;
    };
    // Anywhere in the namespace: a plugin may keep an address on another pod interface, and
    // a false alarm here makes kubelet recreate the pod.
    match netns::inside::addresses(pin).await {
        Ok(held) => {
            let missing: Vec<String> = network
                .ips
                .iter()
                .filter(|ip| !held.iter().any(|h| h.to_string() == **ip))
                .map(|ip| format!("address {ip} on {}", network.ifname))
                .collect();
            if missing.is_empty() {
                Live::Passed
            } else {
                Live::Lost {
                    reason: "address_gone",
                    missing,
                }
            }
        }
        Err(e) => Live::Error(format!("reading the addresses in {}: {e}", pin.display())),
    }
}

impl SandboxManager {
    pub(super) fn checker_status(&self) -> std::sync::MutexGuard<'_, CheckerStatus> {
        self.checker.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// What the checker has done so far.
    pub fn checker(&self) -> CheckerStatus {
        self.checker_status().clone()
    }

    /// One round: live checks of every READY sandbox with a namespace, then CHECK of those
    /// still READY.
    pub async fn check_round(&self) -> RoundReport {
        let mut entries: Vec<_> = self
            .index
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .filter(|e| {
                let s = e.current();
                s.is_ready() && s.netns_path.is_some()
            })
            .cloned()
            .collect();
        shuffle(&mut entries);
        let mut report = RoundReport {
            sandboxes: entries.len(),
            ..RoundReport::default()
        };

        let (cpu, _) = cpu_millis();
        let started = Instant::now();
        let lives: Vec<_> = futures::stream::iter(entries)
            .map(|entry| async move {
                let outcome = self.live_check(&entry).await;
                (entry, outcome)
            })
            .buffer_unordered(LIVE_CONCURRENCY)
            .collect()
            .await;
        report.live_millis = started.elapsed().as_secs_f64() * 1000.0;
        report.live_cpu_millis = cpu_millis().0 - cpu;
        let mut still_ready = Vec::new();
        for (entry, outcome) in lives {
            match outcome {
                Live::Lost { .. } => report.live_failed += 1,
                Live::Passed | Live::Error(_) => still_ready.push(entry),
                Live::Skipped => {}
            }
        }

        let (cpu, children) = cpu_millis();
        let started = Instant::now();
        let checks: Vec<Check> = futures::stream::iter(still_ready)
            .map(|entry| async move { self.cni_check(&entry).await })
            .buffer_unordered(CHECK_CONCURRENCY)
            .collect()
            .await;
        report.check_millis = started.elapsed().as_secs_f64() * 1000.0;
        let (cpu_after, children_after) = cpu_millis();
        report.check_cpu_millis = (cpu_after - cpu) + (children_after - children);
        for check in checks {
            match check {
                Check::Ran { failed } => {
                    report.checks_run += 1;
                    report.checks_failed += usize::from(failed);
                }
                Check::Skipped => report.checks_skipped += 1,
            }
        }
        report.finished_at = crate::clock::now_nanos();
        report
    }

    /// The live check of one sandbox; a loss moves it to NOT_READY.
    async fn live_check(&self, entry: &Arc<super::manager::Entry>) -> Live {
        // Not while a Run/Stop/Remove changes it: a Stop removes the pin on purpose.
        let snapshot = {
            let Ok(_op) = entry.op.try_lock() else {
                return Live::Skipped;
            };
            entry.current()
        };
        if !snapshot.is_ready() || entry.removed.load(Ordering::Acquire) {
            return Live::Skipped;
        }
        let outcome = look(&snapshot).await;
        let at = crate::clock::now_nanos();
        let (outcome_name, missing, error) = match &outcome {
            Live::Passed => ("passed", Vec::new(), None),
            Live::Lost { missing, .. } => ("failed", missing.clone(), None),
            Live::Error(e) => ("error", Vec::new(), Some(e.clone())),
            Live::Skipped => return Live::Skipped,
        };
        entry.health().live_check = Some(LiveCheck {
            outcome: outcome_name,
            at,
            missing,
            error,
        });
        match &outcome {
            Live::Lost { reason, missing }
                if !self
                    .mark_network_lost(entry, &snapshot, reason, missing)
                    .await =>
            {
                return Live::Skipped;
            }
            Live::Error(e) => {
                tracing::warn!(
                    sandbox_id = %snapshot.id,
                    error = %e,
                    "live network check could not look; the sandbox stays READY"
                );
            }
            _ => {}
        }
        outcome
    }

    /// READY → NOT_READY because the network is gone: recorded (a restart keeps it so),
    /// published, a stopped event, a metric and a log line. The namespace and attachment stay
    /// on the record for Stop/Remove to release. False when the sandbox changed meanwhile.
    async fn mark_network_lost(
        &self,
        entry: &super::manager::Entry,
        seen: &Arc<Sandbox>,
        reason: &'static str,
        missing: &[String],
    ) -> bool {
        let _op = entry.op.lock().await;
        if entry.removed.load(Ordering::Acquire) || !Arc::ptr_eq(&entry.current(), seen) {
            return false;
        }
        let mut sandbox = (**seen).clone();
        sandbox.state = SandboxState::NotReady;
        let why = format!("pod network lost: {} is gone", missing.join(", "));
        sandbox.last_error = Some(why.clone());
        if let Err(e) = self.save(&sandbox).await {
            // Still NOT_READY for kubelet now; only a restart could show it READY again.
            tracing::error!(
                sandbox_id = %sandbox.id,
                error = %e,
                "recording a lost pod network failed"
            );
        }
        entry.publish(&sandbox);
        self.emit(EventKind::Stopped, &sandbox);
        crate::telemetry::record_network_lost(reason);
        let m = &sandbox.spec.metadata;
        tracing::warn!(
            sandbox_id = %sandbox.id, pod = %format!("{}/{}", m.namespace, m.name),
            reason = %why,
            "live network check failed: sandbox is NOT_READY, kubelet will recreate it"
        );
        true
    }

    /// CNI CHECK of one sandbox, cancelled by a Stop or Remove that comes meanwhile.
    async fn cni_check(&self, entry: &super::manager::Entry) -> Check {
        let Ok(op) = entry.op.try_lock() else {
            return Check::Skipped;
        };
        let sandbox = entry.current();
        let (Some(attachment), Some(netns), true) =
            (&sandbox.network, &sandbox.netns_path, sandbox.is_ready())
        else {
            return Check::Skipped;
        };
        if entry.removed.load(Ordering::Acquire) {
            return Check::Skipped;
        }
        // Registered under the lock, so a Stop that takes it next finds it to cancel.
        let (abort, registration) = AbortHandle::new_pair();
        let (done_tx, done) = tokio::sync::oneshot::channel::<()>();
        *entry.checking.lock().unwrap_or_else(|p| p.into_inner()) = Some(RunningCheck {
            abort: abort.clone(),
            done,
        });
        drop(op);
        let check = async {
            // Dropped with the future: Stop's wait ends once the plugins are killed.
            let _done = done_tx;
            self.network
                .check(&sandbox.as_pod(), &attachment.network_name, netns)
                .await
        };
        let outcome = Abortable::new(check, registration).await;
        let mut slot = entry.checking.lock().unwrap_or_else(|p| p.into_inner());
        let Ok(outcome) = outcome else {
            return Check::Skipped;
        };
        if abort.is_aborted() {
            return Check::Skipped;
        }
        *slot = None;
        drop(slot);
        let check = outcome;
        let ran = match check.outcome {
            "passed" => Check::Ran { failed: false },
            "failed" => {
                tracing::warn!(
                    sandbox_id = %sandbox.id, network = %attachment.network_name,
                    plugin = check.plugin.as_deref().unwrap_or(""),
                    cni_code = ?check.cni_code, error = check.message.as_deref().unwrap_or(""),
                    "CNI CHECK failed; the sandbox stays READY"
                );
                Check::Ran { failed: true }
            }
            _ => Check::Skipped,
        };
        entry.health().network_check = Some(check);
        ran
    }
}
