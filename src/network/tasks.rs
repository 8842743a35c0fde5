//! The network's background work: the CNI STATUS task, the GC pass and its gate, CHECK of
//! one attachment, and what those checks last found. None of it sits on a call's path: the
//! STATUS answer is served from memory, and GC never runs while an ADD holds the gate.

use std::future::Future;
use std::path::Path;
use std::time::{Duration, SystemTime};

use serde::Serialize;
use serde_json::Value;

use super::{Pod, PodNetwork};
use crate::cni::{Attachment, CheckOutcome, CniError, StaleReport};

/// How often STATUS is asked in the background (kubelet polls Status every 5 s).
pub const STATUS_INTERVAL: Duration = Duration::from_secs(5);

/// One background STATUS round.
#[derive(Debug, Clone, serde::Serialize)]
pub struct StatusAnswer {
    /// The list it was asked of (to tell whether it still applies).
    #[serde(skip)]
    pub network_json: Value,
    pub network: String,
    /// Whether the plugins were asked (lists older than 1.1.0 have no STATUS).
    pub asked: bool,
    /// The failure, naming plugin, code and message; `None` when every plugin said ready.
    pub problem: Option<String>,
    /// Seconds since the epoch when the answer came.
    pub at_unix: u64,
}

/// What one GC pass did.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct GcReport {
    pub valid: usize,
    pub stale: StaleReport,
    /// Whether the plugins were sent GC (≥ 1.1.0 and not disableGC).
    pub plugins_asked: bool,
    pub plugin_errors: Vec<String>,
}

/// An attachment a sandbox holds or is acquiring, which GC must keep.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiveAttachment {
    /// `None` while the sandbox is being created: then it is live on any network.
    pub network_name: Option<String>,
    pub container_id: String,
    pub ifname: String,
}

impl LiveAttachment {
    fn split(self) -> (String, Attachment) {
        (
            self.network_name.unwrap_or_default(),
            Attachment {
                container_id: self.container_id,
                ifname: self.ifname,
            },
        )
    }
}

impl PodNetwork {
    /// Starts the background STATUS task (needs a tokio runtime).
    pub fn start_status_refresher(&self) {
        let cni = self.cni.clone();
        let conf_dir = self.conf_dir.clone();
        let store = self.status.clone();
        let kick = self.status_kick.clone();
        let mut reloads = self.conf_dir.reloads();
        tokio::spawn(async move {
            loop {
                let reader = conf_dir.clone();
                let load = tokio::task::spawn_blocking(move || reader.current())
                    .await
                    .unwrap_or_default();
                let answer = match load.network {
                    Some(list) => {
                        let outcome = cni.status(&list).await;
                        if let Err(e) = &outcome {
                            tracing::warn!(
                                network = %list.name, error = %e,
                                "CNI STATUS: network not ready"
                            );
                        }
                        Some(StatusAnswer {
                            network_json: list.json.clone(),
                            network: list.name.clone(),
                            asked: !matches!(outcome, Ok(false)),
                            problem: outcome.err().map(|e| e.to_string()),
                            at_unix: SystemTime::now()
                                .duration_since(SystemTime::UNIX_EPOCH)
                                .map_or(0, |d| d.as_secs()),
                        })
                    }
                    None => None,
                };
                *store.write().unwrap_or_else(|p| p.into_inner()) = answer;
                tokio::select! {
                    _ = tokio::time::sleep(STATUS_INTERVAL) => {}
                    _ = reloads.changed() => {}
                    _ = kick.notified() => {}
                }
            }
        });
    }

    /// CNI CHECK of a sandbox's attachment with what was cached at ADD.
    pub async fn check(&self, pod: &Pod<'_>, network_name: &str, netns: &Path) -> NetworkCheck {
        let rt = self.runtime_conf(pod, Some(netns));
        let outcome: Result<CheckOutcome, CniError> = self.cni.check(network_name, &rt).await;
        NetworkCheck::from_outcome(&outcome, crate::clock::now_nanos())
    }

    /// One GC pass: tears down cached attachments no sandbox owns, then sends GC with the
    /// valid attachments to the plugins of the current network. `valid` is called once no
    /// ADD is in flight and none can start until the pass ends; it yields (network name,
    /// attachment) for every sandbox that holds or is acquiring a network (an empty name:
    /// any network), or `None` when
    /// that cannot be known (then nothing is collected).
    pub async fn collect_garbage<F, Fut>(&self, valid: F) -> GcReport
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Option<Vec<LiveAttachment>>>,
    {
        let _gate = self.gc_gate.write().await;
        let Some(valid) = valid().await else {
            tracing::warn!("CNI GC skipped: the set of live sandboxes is not known");
            return GcReport::default();
        };
        let valid: Vec<(String, Attachment)> =
            valid.into_iter().map(LiveAttachment::split).collect();
        let all: Vec<Attachment> = valid.iter().map(|(_, a)| a.clone()).collect();
        let mut report = GcReport {
            valid: all.len(),
            stale: self.cni.delete_stale(&all).await,
            ..GcReport::default()
        };
        if let Some(list) = self.current_load().await.network {
            let mut on_network: Vec<Attachment> = valid
                .into_iter()
                // An empty name is a sandbox still being created: valid on any network.
                .filter(|(name, _)| *name == list.name || name.is_empty())
                .map(|(_, a)| a)
                .collect();
            on_network.sort();
            match self.cni.gc(&list, &on_network).await {
                Ok(asked) => report.plugins_asked = asked,
                Err(errors) => {
                    report.plugins_asked = true;
                    report.plugin_errors = errors.iter().map(|e| e.to_string()).collect();
                }
            }
        }
        tracing::info!(
            valid = report.valid,
            stale_deleted = report.stale.deleted.len(),
            stale_failed = report.stale.failed.len(),
            plugins_asked = report.plugins_asked,
            plugin_errors = report.plugin_errors.len(),
            "CNI GC pass finished"
        );
        for e in &report.plugin_errors {
            tracing::warn!(error = %e, "CNI GC");
        }
        report
    }
}

/// The last outcome of each background check; `None` until the first round reached it.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Health {
    pub network_check: Option<NetworkCheck>,
    pub live_check: Option<LiveCheck>,
}

/// The last CNI CHECK of the sandbox's attachment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NetworkCheck {
    /// `passed`, `failed`, `unsupported` (cniVersion < 0.4.0) or `disabled` (`disableCheck`).
    pub outcome: &'static str,
    /// Nanoseconds since the epoch when CHECK finished.
    pub at: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub plugin: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cni_code: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

impl NetworkCheck {
    pub fn from_outcome(outcome: &Result<CheckOutcome, CniError>, at: i64) -> NetworkCheck {
        let plain = |outcome| NetworkCheck {
            outcome,
            at,
            plugin: None,
            cni_code: None,
            message: None,
        };
        match outcome {
            Ok(CheckOutcome::Passed) => plain("passed"),
            Ok(CheckOutcome::Disabled) => plain("disabled"),
            Ok(CheckOutcome::Unsupported { version }) => NetworkCheck {
                message: Some(format!(
                    "cniVersion {version} has no CHECK (0.4.0 and later)"
                )),
                ..plain("unsupported")
            },
            Err(e) => NetworkCheck {
                plugin: e.plugin().map(str::to_string),
                cni_code: e.cni_code(),
                message: Some(e.message()),
                ..plain("failed")
            },
        }
    }
}

/// The last live check: is the namespace still pinned, does the pod's interface still hold
/// every address crisp reported.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LiveCheck {
    /// `passed`, `failed` (something is missing: the sandbox is NOT_READY), or `error` (the
    /// namespace could not be read; nothing is concluded from that).
    pub outcome: &'static str,
    /// Nanoseconds since the epoch.
    pub at: i64,
    /// What was missing, e.g. `address 10.88.0.5 on eth0`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub missing: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_check_names_plugin_code_and_message() {
        let failure = crate::cni::PluginFailure {
            network: "pods".into(),
            plugin: "bridge".into(),
            command: "CHECK",
            status: "exit status 1".into(),
            elapsed_ms: 3,
            code: Some(11),
            msg: "no such veth".into(),
            details: String::new(),
            stderr_tail: String::new(),
        };
        let check = NetworkCheck::from_outcome(&Err(CniError::Plugin(Box::new(failure))), 7);
        assert_eq!(check.outcome, "failed");
        assert_eq!(check.plugin.as_deref(), Some("bridge"));
        assert_eq!(check.cni_code, Some(11));
        assert_eq!(check.message.as_deref(), Some("no such veth"));
        let json = serde_json::to_value(&check).expect("json");
        assert_eq!(json["cniCode"], 11);
        assert_eq!(json["at"], 7);
    }

    #[test]
    fn skipped_checks_say_why() {
        let old = NetworkCheck::from_outcome(
            &Ok(CheckOutcome::Unsupported {
                version: "0.3.1".into(),
            }),
            1,
        );
        assert_eq!(old.outcome, "unsupported");
        assert!(old.message.expect("why").contains("0.3.1"));
        assert_eq!(
            NetworkCheck::from_outcome(&Ok(CheckOutcome::Disabled), 1).outcome,
            "disabled"
        );
    }
}
