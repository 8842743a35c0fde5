//! What a sandbox is in crisp's domain: the pod it belongs to, what was asked for it, and
//! where it is in its life. This is also the shape of the record on disk. Plain data: it
//! never does I/O.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

// The parts of a sandbox its network sees are the network's types.
use crate::network::pod::Pod;
pub use crate::network::pod::{DnsConfig, NetworkAttachment, PortMapping, Protocol};

/// A sandbox's place in its life. `Creating` and `Stopping` are intents written before
/// the side effects they announce, so a crash in between can be finished or undone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SandboxState {
    Creating,
    Ready,
    Stopping,
    NotReady,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PodMetadata {
    pub name: String,
    pub namespace: String,
    pub uid: String,
    pub attempt: u32,
}

impl PodMetadata {
    /// The name a sandbox reserves, as containerd spells it: `<name>_<namespace>_<uid>_<attempt>`.
    /// Shown in errors only: it is ambiguous once a part holds `_` ("a_b"/"c" vs "a"/"b_c").
    pub fn reservation_key(&self) -> String {
        format!(
            "{}_{}_{}_{}",
            self.name, self.namespace, self.uid, self.attempt
        )
    }

    /// The name table's key: the four parts JSON-encoded, so no two pods ever share one.
    pub fn reservation_slot(&self) -> String {
        serde_json::json!([self.name, self.namespace, self.uid, self.attempt]).to_string()
    }
}

/// What the client asked for, in the terms crisp acts on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SandboxSpec {
    pub metadata: PodMetadata,
    pub hostname: String,
    pub host_network: bool,
    pub port_mappings: Vec<PortMapping>,
    pub dns: DnsConfig,
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    pub cgroup_parent: String,
    /// Namespaced `net.*` sysctls (validated), set inside the pod's network namespace.
    #[serde(default)]
    pub sysctls: BTreeMap<String, String>,
    pub runtime_handler: String,
    /// The request's PodSandboxConfig exactly as sent (snake_case JSON), echoed in status.
    pub raw_config: serde_json::Value,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Sandbox {
    pub id: String,
    pub spec: SandboxSpec,
    pub state: SandboxState,
    /// Nanoseconds since the epoch.
    pub created_at: i64,
    /// The pinned namespace; `None` for host-network sandboxes. Written before the pin exists.
    pub netns_path: Option<PathBuf>,
    /// The network the sandbox is (or is being) attached to; `None` once torn down.
    pub network: Option<NetworkAttachment>,
    /// The last teardown failure, kept until a retry succeeds, so status can show it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}

impl Sandbox {
    pub fn is_ready(&self) -> bool {
        self.state == SandboxState::Ready
    }

    /// What the network sees of this sandbox.
    pub fn as_pod(&self) -> Pod<'_> {
        let spec = &self.spec;
        Pod {
            id: &self.id,
            name: &spec.metadata.name,
            namespace: &spec.metadata.namespace,
            uid: &spec.metadata.uid,
            port_mappings: &spec.port_mappings,
            dns: &spec.dns,
            cgroup_parent: &spec.cgroup_parent,
            annotations: &spec.annotations,
        }
    }

    /// Whether anything is still held for this sandbox: a namespace or a network attachment.
    pub fn holds_resources(&self) -> bool {
        self.netns_path.is_some() || self.network.is_some()
    }
}

/// How many sandboxes are in each state, for the telemetry gauges.
pub fn count_by_state(sandboxes: &[std::sync::Arc<Sandbox>]) -> crate::telemetry::SandboxCounts {
    let mut counts = crate::telemetry::SandboxCounts::default();
    for s in sandboxes {
        match s.state {
            SandboxState::Creating => counts.creating += 1,
            SandboxState::Ready => counts.ready += 1,
            SandboxState::Stopping => counts.stopping += 1,
            SandboxState::NotReady => counts.not_ready += 1,
        }
        if s.state == SandboxState::NotReady && s.holds_resources() {
            counts.teardown_pending += 1;
        }
    }
    counts
}

/// A fresh sandbox id: 64 hex characters from 32 random bytes, as containerd makes them.
pub fn new_id() -> std::io::Result<String> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|e| std::io::Error::other(e.to_string()))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// Whether `s` could be (a prefix of) a sandbox id: 1–64 lowercase hex characters. Only
/// such strings ever become path components.
pub fn is_id_prefix(s: &str) -> bool {
    !s.is_empty() && s.len() <= 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_64_lowercase_hex_and_distinct() {
        let a = new_id().expect("id");
        let b = new_id().expect("id");
        assert_eq!(a.len(), 64);
        assert!(is_id_prefix(&a));
        assert_ne!(a, b);
    }

    #[test]
    fn id_prefix_rejects_paths_and_oversize() {
        for bad in ["", "../../etc", "ABC", "abc/def", &"a".repeat(65), "abc\0"] {
            assert!(!is_id_prefix(bad), "{bad:?} accepted");
        }
        assert!(is_id_prefix("0af"));
    }

    #[test]
    fn reservation_key_matches_containerd() {
        let m = PodMetadata {
            name: "web".into(),
            namespace: "default".into(),
            uid: "u1".into(),
            attempt: 2,
        };
        assert_eq!(m.reservation_key(), "web_default_u1_2");
        let other = PodMetadata {
            name: "web_default".into(),
            namespace: "u1".into(),
            uid: "2".into(),
            attempt: 2,
        };
        assert_ne!(m.reservation_slot(), other.reservation_slot());
    }
}
