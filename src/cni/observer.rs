//! The hook through which callers watch plugin executions (metrics, status). cni keeps no
//! statistics of its own and never blocks on an observer.

use std::sync::Arc;
use std::time::Duration;

/// How one plugin execution ended, for an [`Observer`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunOutcome {
    Ok,
    /// Exited non-zero; `cni_code` is the spec's error code when the plugin printed one.
    Failed {
        cni_code: Option<u64>,
    },
    TimedOut,
    /// Could not be started or talked to.
    ExecError,
}

/// One plugin execution, as an [`Observer`] sees it.
#[derive(Debug, Clone)]
pub struct PluginRun<'a> {
    pub network: &'a str,
    pub plugin: &'a str,
    pub command: &'static str,
    pub container_id: &'a str,
    pub elapsed: Duration,
    pub outcome: RunOutcome,
}

/// Watches plugin executions (metrics, status): cni keeps no statistics itself.
pub trait Observer: Send + Sync {
    /// A chain operation (ADD, DEL) starts for a container.
    fn op_started(&self, _network: &str, _command: &'static str, _container_id: &str) {}
    fn plugin_ran(&self, run: &PluginRun<'_>);
}

#[derive(Clone, Default)]
pub(super) struct ObserverSlot(pub(super) Option<Arc<dyn Observer>>);

impl std::fmt::Debug for ObserverSlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() {
            "Some(observer)"
        } else {
            "None"
        })
    }
}
