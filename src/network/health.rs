//! What the background network checks last found for one sandbox, as verbose
//! PodSandboxStatus shows it. Kept in memory only: after a restart the next round fills it
//! again, and what must survive (a sandbox moved to NOT_READY) is on the record.

use serde::Serialize;

use crate::cni::{CheckOutcome, CniError};

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
