//! An opt-in, in-process fast path for the default pod network: `bridge` + `host-local`
//! (+ `portmap`, + a leading `loopback`), done over netlink, host-local's own files and one
//! `iptables-restore` per family instead of exec'ing the plugins — leaving exactly the state
//! containernetworking/plugins v1.1.1 leave, the same CNI result and the same cache entry, so
//! an exec'd DEL can tear down a fast ADD and the other way round.
//!
//! [`plan()`] accepts only network lists it implements completely; anything else runs by
//! exec (the caller logs why). [`FastPath`] runs a plan: `add` and `del`, with `hostlocal`'s
//! store and `rules`' nat batches. It knows nothing of Kubernetes, like `cni/`, never execs a
//! plugin, and reaches the kernel only through `netlink/` and the iptables tools.
//!
//! Deviations from the plugins, all invisible in the end state:
//! - DEL does not delete the veth: it goes with the pod's namespace, which the caller
//!   unpins right after (so DEL does not wait for a synchronous link delete);
//! - host-local's "duplicate allocation" scan of its whole dir on ADD is not repeated
//!   (crisp never ADDs the same container id twice); the bridge's wait for the port to
//!   come up is not repeated (the end state is the same).
//!
//! portmap's removal of stale UDP conntrack entries for the host ports is done, over
//! ctnetlink ([`crate::netlink::netfilter::conntrack`]), after the rules as in the plugin.

pub mod add;
pub mod del;
pub mod hostlocal;
pub mod plan;
pub mod rules;

use std::sync::{Arc, Mutex};

use crate::cni::CniError;
use crate::netlink::netfilter::NfSocket;
use crate::netlink::route::NodeLinks;
pub use plan::{plan, FastPlan, Unsupported};

/// The fast path: one node netlink connection, reused.
pub struct FastPath {
    links: NodeLinks,
    /// PATH for iptables-restore/-save.
    path_env: String,
    /// Per family (IPv4, IPv6): whether iptables is the nf_tables variant, asked once.
    nf_tables: [tokio::sync::OnceCell<bool>; 2],
    /// The nf_tables netlink socket DEL uses, opened on first use and kept (see
    /// [`crate::netlink::netfilter::nftables`] for why); dropped after an error so the next
    /// DEL starts clean.
    nat_socket: Arc<Mutex<Option<NfSocket>>>,
}

/// A step of the fast path failed: the error names the plugin whose step it stands for.
fn in_process_error(
    network: &str,
    plugin: &str,
    command: &'static str,
    reason: impl ToString,
) -> CniError {
    CniError::InProcess {
        network: network.to_string(),
        plugin: plugin.to_string(),
        command,
        reason: reason.to_string(),
    }
}

impl FastPath {
    pub fn new(path_env: String) -> Self {
        FastPath {
            links: NodeLinks::new(),
            path_env,
            nf_tables: Default::default(),
            nat_socket: Arc::new(Mutex::new(None)),
        }
    }
}

impl FastPath {
    async fn uses_nf_tables(&self, v6: bool) -> bool {
        *self.nf_tables[usize::from(v6)]
            .get_or_init(|| rules::is_nf_tables(v6, &self.path_env))
            .await
    }

    /// Runs `work` on a blocking thread with the kept nf_tables socket (opened on first use,
    /// dropped after an error so the next use starts clean).
    async fn with_nat_socket<T: Send + 'static>(
        &self,
        work: impl FnOnce(&NfSocket) -> std::io::Result<T> + Send + 'static,
    ) -> std::io::Result<T> {
        let socket = self.nat_socket.clone();
        tokio::task::spawn_blocking(move || {
            let mut socket = socket.lock().unwrap_or_else(|p| p.into_inner());
            if socket.is_none() {
                *socket = Some(NfSocket::open()?);
            }
            let outcome = match socket.as_ref() {
                Some(open) => work(open),
                None => Err(std::io::Error::other("no nf_tables socket")),
            };
            if outcome.is_err() {
                *socket = None;
            }
            outcome
        })
        .await
        .map_err(std::io::Error::other)?
    }
}
