//! What crisp tells its operator besides logs: Prometheus metrics (served over HTTP only when
//! `--metrics-addr` is set) and, for verbose status, the per-plugin timings of each sandbox's
//! last CNI ADD and DEL.
//!
//! Metrics go through the `metrics` facade: without an installed exporter every recording is a
//! no-op, so call sites never check whether metrics are on. cni/ reports plugin runs through its
//! small [`Observer`] hook and knows nothing of this module.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::Duration;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};
use serde::Serialize;

use crate::cni::{Observer, PluginRun, RunOutcome};

pub const RPC_DURATION: &str = "crisp_rpc_duration_seconds";
pub const PLUGIN_DURATION: &str = "crisp_cni_plugin_duration_seconds";
pub const PLUGIN_FAILURES: &str = "crisp_cni_plugin_failures_total";
pub const SANDBOXES: &str = "crisp_sandboxes";
pub const TEARDOWN_PENDING: &str = "crisp_sandboxes_teardown_pending";
pub const RECOVERY_REPAIRS: &str = "crisp_recovery_repairs_total";
pub const EVENTS_SKIPPED: &str = "crisp_container_events_skipped_total";
pub const BUILD_INFO: &str = "crisp_build_info";
pub const NETWORK_LOST: &str = "crisp_sandboxes_network_lost_total";
pub const CHECK_ROUND: &str = "crisp_network_check_round_seconds";
pub const CHECK_OVERRUNS: &str = "crisp_network_check_overruns_total";
pub const NRI_PLUGINS: &str = "crisp_nri_plugins";
pub const NRI_HOOK_DURATION: &str = "crisp_nri_hook_duration_seconds";
pub const NRI_HOOK_FAILURES: &str = "crisp_nri_hook_failures_total";

/// Histogram buckets in seconds: 100 µs (a List) up to the plugin timeout range.
const BUCKETS: &[f64] = &[
    0.0001, 0.0005, 0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    60.0,
];

/// Installs the Prometheus exporter and serves `/metrics` on `addr` from the current runtime.
/// The listener is bound here, so a bad or busy address fails start-up with its reason.
pub fn serve_metrics(addr: SocketAddr) -> Result<(), String> {
    PrometheusBuilder::new()
        .with_http_listener(addr)
        .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), BUCKETS)
        .and_then(|b| b.install())
        .map_err(|e| format!("serving metrics on {addr}: {e}"))?;
    describe();
    metrics::gauge!(BUILD_INFO, "version" => env!("CARGO_PKG_VERSION")).set(1.0);
    Ok(())
}

fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
    describe_histogram!(
        RPC_DURATION,
        Unit::Seconds,
        "CRI calls by method and gRPC code"
    );
    describe_histogram!(
        PLUGIN_DURATION,
        Unit::Seconds,
        "CNI plugin executions by plugin and command"
    );
    describe_counter!(
        PLUGIN_FAILURES,
        "Failed CNI plugin executions by plugin, command and CNI error code (timeout, exec, none)"
    );
    describe_gauge!(SANDBOXES, "Pod sandboxes by state");
    describe_gauge!(
        TEARDOWN_PENDING,
        "NOT_READY sandboxes whose network teardown failed and is retried by Stop/Remove"
    );
    describe_counter!(RECOVERY_REPAIRS, "What start-up recovery repaired, by kind");
    describe_counter!(
        EVENTS_SKIPPED,
        "Container events a slow GetContainerEvents subscriber missed"
    );
    describe_gauge!(BUILD_INFO, "crisp's version");
    describe_counter!(
        NETWORK_LOST,
        "READY sandboxes the live check moved to NOT_READY, by reason (netns_gone, address_gone)"
    );
    describe_histogram!(
        CHECK_ROUND,
        Unit::Seconds,
        "Background network check rounds, by phase (live, check)"
    );
    describe_counter!(
        CHECK_OVERRUNS,
        "Network check rounds that took longer than --cni-check-interval"
    );
    describe_gauge!(NRI_PLUGINS, "Connected NRI plugins");
    describe_histogram!(
        NRI_HOOK_DURATION,
        Unit::Seconds,
        "NRI plugin calls that were answered, by plugin (IDX-NAME) and event"
    );
    describe_counter!(
        NRI_HOOK_FAILURES,
        "NRI plugin calls that failed (an error, a timeout, a lost connection), by plugin and event"
    );
}

/// NRI's plugin count and hook times, as metrics (nri/ reports them through its observer).
pub struct NriTelemetry;

impl crate::nri::HookObserver for NriTelemetry {
    fn plugins(&self, connected: usize) {
        metrics::gauge!(NRI_PLUGINS).set(connected as f64);
    }

    fn hook(&self, plugin: &str, event: &'static str, took: Duration, failed: bool) {
        let plugin = plugin.to_string();
        if failed {
            metrics::counter!(NRI_HOOK_FAILURES, "plugin" => plugin, "event" => event).increment(1);
        } else {
            metrics::histogram!(NRI_HOOK_DURATION, "plugin" => plugin, "event" => event)
                .record(took.as_secs_f64());
        }
    }
}

/// A sandbox whose network the live check found gone.
pub fn record_network_lost(reason: &'static str) {
    metrics::counter!(NETWORK_LOST, "reason" => reason).increment(1);
}

/// One phase of a background network check round.
pub fn record_check_round(phase: &'static str, millis: f64) {
    metrics::histogram!(CHECK_ROUND, "phase" => phase).record(millis / 1000.0);
}

/// A check round that took longer than the interval.
pub fn record_check_overrun() {
    metrics::counter!(CHECK_OVERRUNS).increment(1);
}

/// One finished CRI call.
pub fn record_rpc(method: &'static str, code: &'static str, elapsed: Duration) {
    metrics::histogram!(RPC_DURATION, "method" => method, "code" => code)
        .record(elapsed.as_secs_f64());
}

/// Events a lagging GetContainerEvents stream skipped.
pub fn record_events_skipped(n: u64) {
    metrics::counter!(EVENTS_SKIPPED).increment(n);
}

/// Start-up recovery's repairs, by kind (`rolled_back`, `stopped`, ...).
pub fn record_recovery(repairs: &[(&'static str, usize)]) {
    for &(kind, n) in repairs {
        metrics::counter!(RECOVERY_REPAIRS, "kind" => kind).increment(n as u64);
    }
}

/// How many sandboxes are in each state, for the gauges.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct SandboxCounts {
    pub ready: usize,
    pub not_ready: usize,
    pub creating: usize,
    pub stopping: usize,
    /// NOT_READY sandboxes that still hold a namespace or a network (a failed teardown).
    pub teardown_pending: usize,
}

/// Sets the sandbox gauges from a count of the whole current set.
pub fn record_sandboxes(counts: &SandboxCounts) {
    for (state, n) in [
        ("ready", counts.ready),
        ("not_ready", counts.not_ready),
        ("creating", counts.creating),
        ("stopping", counts.stopping),
    ] {
        metrics::gauge!(SANDBOXES, "state" => state).set(n as f64);
    }
    metrics::gauge!(TEARDOWN_PENDING).set(counts.teardown_pending as f64);
}

/// One plugin's part in a chain operation, as verbose status shows it.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PluginTiming {
    pub plugin: String,
    pub millis: f64,
    /// `ok`, `failed`, `timed out`, `exec error`.
    pub outcome: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cni_code: Option<u64>,
}

/// A chain operation (ADD or DEL) of one sandbox.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ChainOp {
    pub network: String,
    /// Nanoseconds since the epoch.
    pub started_at: i64,
    pub plugins: Vec<PluginTiming>,
}

#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LastOps {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub add: Option<ChainOp>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub del: Option<ChainOp>,
}

/// Observes cni: records plugin metrics and keeps each sandbox's last ADD and DEL in memory
/// (gone on restart; the record on disk holds what must survive).
#[derive(Default)]
pub struct PluginTelemetry {
    last: Mutex<HashMap<String, LastOps>>,
}

impl PluginTelemetry {
    /// The last ADD and DEL of a sandbox (by CNI container id, which is the sandbox id).
    pub fn last_ops(&self, container_id: &str) -> Option<LastOps> {
        self.lock().get(container_id).cloned()
    }

    /// Drops what is kept for a removed sandbox.
    pub fn forget(&self, container_id: &str) {
        self.lock().remove(container_id);
    }

    /// Keeps only the sandboxes `live` says exist (after missed Deleted events).
    pub fn retain(&self, live: impl Fn(&str) -> bool) {
        self.lock().retain(|id, _| live(id));
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, LastOps>> {
        self.last.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Observer for PluginTelemetry {
    fn op_started(&self, network: &str, command: &'static str, container_id: &str) {
        let op = ChainOp {
            network: network.to_string(),
            started_at: crate::clock::now_nanos(),
            plugins: Vec::new(),
        };
        let mut last = self.lock();
        let entry = last.entry(container_id.to_string()).or_default();
        match command {
            "ADD" => entry.add = Some(op),
            "DEL" => entry.del = Some(op),
            _ => {}
        }
    }

    fn plugin_ran(&self, run: &PluginRun<'_>) {
        let plugin = run.plugin.to_string();
        metrics::histogram!(PLUGIN_DURATION, "plugin" => plugin, "command" => run.command)
            .record(run.elapsed.as_secs_f64());
        let (outcome, cni_code) = match run.outcome {
            RunOutcome::Ok => ("ok", None),
            RunOutcome::Failed { cni_code } => ("failed", cni_code),
            RunOutcome::TimedOut => ("timed out", None),
            RunOutcome::ExecError => ("exec error", None),
        };
        if run.outcome != RunOutcome::Ok {
            let code = match run.outcome {
                RunOutcome::Failed { cni_code: Some(c) } => c.to_string(),
                RunOutcome::TimedOut => "timeout".into(),
                RunOutcome::ExecError => "exec".into(),
                _ => "none".into(),
            };
            metrics::counter!(PLUGIN_FAILURES, "plugin" => run.plugin.to_string(),
                "command" => run.command, "code" => code)
            .increment(1);
        }
        let timing = PluginTiming {
            plugin: run.plugin.to_string(),
            millis: run.elapsed.as_secs_f64() * 1000.0,
            outcome,
            cni_code,
        };
        // Only ADD and DEL are kept (a CHECK must not bring back a removed sandbox's entry).
        if !matches!(run.command, "ADD" | "DEL") {
            return;
        }
        let mut last = self.lock();
        let entry = last.entry(run.container_id.to_string()).or_default();
        let op = if run.command == "ADD" {
            &mut entry.add
        } else {
            &mut entry.del
        };
        if let Some(op) = op {
            op.plugins.push(timing);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_chain_op_collects_its_plugins_and_a_new_one_replaces_it() {
        let t = PluginTelemetry::default();
        let run = |plugin, outcome| PluginRun {
            network: "net",
            plugin,
            command: "ADD",
            container_id: "abc",
            elapsed: Duration::from_millis(3),
            outcome,
        };
        t.op_started("net", "ADD", "abc");
        t.plugin_ran(&run("bridge", RunOutcome::Ok));
        t.plugin_ran(&run("portmap", RunOutcome::Failed { cni_code: Some(11) }));
        let ops = t.last_ops("abc").expect("kept");
        let add = ops.add.expect("add");
        assert_eq!(add.plugins.len(), 2);
        assert_eq!(add.plugins[1].outcome, "failed");
        assert_eq!(add.plugins[1].cni_code, Some(11));
        t.op_started("net", "ADD", "abc");
        assert!(t
            .last_ops("abc")
            .and_then(|o| o.add)
            .expect("add")
            .plugins
            .is_empty());
        t.forget("abc");
        assert!(t.last_ops("abc").is_none());
    }
}
