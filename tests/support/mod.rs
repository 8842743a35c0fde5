//! Test harness: runs the real `crisp` binary inside a private "node" network namespace and
//! talks to it over its Unix socket, like crictl and kubelet do.
//!
//! Every resource a test creates lives in a guard ([`Node`]) whose `Drop` kills the daemon,
//! unmounts and removes any pod namespace pin left in the temp netns dir, deletes the node
//! namespace (and with it the bridge, veths and iptables rules the plugins made there) and removes
//! the temp dirs, so a failing test leaks nothing. On failure the daemon log is printed.
//!
//! Tests run on `#[tokio::test(flavor = "multi_thread")]`: the daemon drains open connections on
//! SIGTERM, and the clients' connection tasks must keep running (to answer its GOAWAY) while a
//! test thread sits in `Drop` waiting for the daemon to exit.
//!
//! Needs root, `ip`, `nsenter`, `iptables`, the CNI plugins in /usr/lib/cni and `grpcurl`.
#![allow(dead_code, unused_imports)]

pub use cri::{NamespaceMode, PodSandboxState};

pub mod http2;

/// The CNI network name used by every test conf.
pub const NETWORK: &str = "crisp-test";
/// The pod subnet. Each node has its own network namespace, so the same range can be reused.
pub const SUBNET: &str = "10.99.0.0/24";

mod client;
mod host;
mod node;
mod nri;
mod pods;

pub use client::*;
pub use host::*;
pub use node::*;
pub use nri::*;
pub use pods::*;

use k8s_cri::v1 as cri;
