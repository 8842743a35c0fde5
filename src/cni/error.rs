//! What can go wrong in the CNI layer: one error enum whose variants carry the network,
//! the plugin and the command, and a coarse kind for callers that choose a response by
//! class. It never maps errors to gRPC codes (that is `crate::error`'s job).

use std::path::PathBuf;

use super::exec;

/// Broad classes of CNI failure, for callers that choose a response by class.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CniErrorKind {
    /// The config names a plugin that is not installed: the node's setup is wrong.
    PluginMissing,
    /// A plugin ran past its timeout.
    Timeout,
    /// A plugin ran and failed, or answered something that is not CNI.
    PluginFailed,
    /// crisp's own side failed (cache, bad input).
    Internal,
}

#[derive(Debug, thiserror::Error)]
pub enum CniError {
    #[error("invalid {what} {value:?} for CNI: only letters, digits, '_', '.', '-' are allowed")]
    InvalidName { what: &'static str, value: String },

    #[error(
        "network {network}: plugin {plugin:?} not found in {}{}",
        join_paths(dirs),
        not_executable_suffix(unusable)
    )]
    PluginNotFound {
        network: String,
        plugin: String,
        dirs: Vec<PathBuf>,
        /// Files of that name that exist but cannot be run (mode, or not a regular file).
        unusable: Vec<PathBuf>,
    },

    #[error("network {network}: plugin {plugin} {command}: {source}")]
    Exec {
        network: String,
        plugin: String,
        command: &'static str,
        #[source]
        source: exec::ExecError,
    },

    #[error("{0}")]
    Plugin(Box<PluginFailure>),

    #[error(
        "network {network}: plugin {plugin} {command} answered something that is not a CNI \
         result: {reason}"
    )]
    BadResult {
        network: String,
        plugin: String,
        command: &'static str,
        reason: String,
    },

    #[error("CNI cache {}: {source}", path.display())]
    Cache {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// A plugin's work done in process (crisp's fast path) failed.
    #[error("network {network}: plugin {plugin} {command} (in process): {reason}")]
    InProcess {
        network: String,
        plugin: String,
        command: &'static str,
        reason: String,
    },

    #[error(
        "network {network}: no cached config for container {container_id} and no current config \
         to tear it down with"
    )]
    NoConfig {
        network: String,
        container_id: String,
    },

    #[error(
        "network {network}: no cached ADD result for container {container_id} to CHECK against"
    )]
    NoCachedResult {
        network: String,
        container_id: String,
    },

    #[error(
        "network {network}: the config wants CNI version {wanted} but plugin {plugin} ({}) \
         speaks only [{}]",
        binary.display(),
        supported.join(", ")
    )]
    Incompatible {
        network: String,
        plugin: String,
        binary: PathBuf,
        wanted: String,
        supported: Vec<String>,
    },

    #[error(
        "network {network}: plugin {plugin} VERSION answered something that is not a version \
         answer: {reason}"
    )]
    BadVersion {
        network: String,
        plugin: String,
        reason: String,
    },
}

/// A plugin that ran and exited non-zero: everything an operator needs to see why.
#[derive(Debug)]
pub struct PluginFailure {
    pub network: String,
    pub plugin: String,
    pub command: &'static str,
    /// "exit status 1", "killed by signal 9", …
    pub status: String,
    pub elapsed_ms: u128,
    /// The spec's error fields, when the plugin printed them.
    pub code: Option<u64>,
    pub msg: String,
    pub details: String,
    pub stderr_tail: String,
}

impl std::fmt::Display for PluginFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "network {}: plugin {} {} failed ({}, after {} ms)",
            self.network, self.plugin, self.command, self.status, self.elapsed_ms
        )?;
        if let Some(code) = self.code {
            write!(f, " with CNI error code {code}")?;
        }
        write!(f, ": {}", self.msg)?;
        if !self.details.is_empty() {
            write!(f, " ({})", self.details)?;
        }
        write!(f, "{}", exec::stderr_suffix(&self.stderr_tail))
    }
}

pub(super) fn join_paths(dirs: &[PathBuf]) -> String {
    dirs.iter()
        .map(|d| d.display().to_string())
        .collect::<Vec<_>>()
        .join(":")
}

/// " (X exists but is not an executable file)" for each file found under the plugin's name.
fn not_executable_suffix(unusable: &[PathBuf]) -> String {
    unusable
        .iter()
        .map(|p| format!(" ({} exists but is not an executable file)", p.display()))
        .collect()
}

impl CniError {
    /// The plugin the failure names, when it is about one plugin.
    pub fn plugin(&self) -> Option<&str> {
        match self {
            CniError::PluginNotFound { plugin, .. }
            | CniError::Exec { plugin, .. }
            | CniError::BadResult { plugin, .. }
            | CniError::InProcess { plugin, .. }
            | CniError::Incompatible { plugin, .. }
            | CniError::BadVersion { plugin, .. } => Some(plugin),
            CniError::Plugin(failure) => Some(&failure.plugin),
            CniError::InvalidName { .. }
            | CniError::Cache { .. }
            | CniError::NoConfig { .. }
            | CniError::NoCachedResult { .. } => None,
        }
    }

    /// The spec's error code, when a plugin printed one.
    pub fn cni_code(&self) -> Option<u64> {
        match self {
            CniError::Plugin(failure) => failure.code,
            _ => None,
        }
    }

    /// The plugin's own message (the spec's `msg` and `details`) when it printed one, else
    /// the whole error.
    pub fn message(&self) -> String {
        match self {
            CniError::Plugin(failure) if !failure.msg.is_empty() => {
                if failure.details.is_empty() {
                    failure.msg.clone()
                } else {
                    format!("{} ({})", failure.msg, failure.details)
                }
            }
            other => other.to_string(),
        }
    }

    pub fn kind(&self) -> CniErrorKind {
        match self {
            // The node's CNI setup is wrong: a plugin is missing or speaks other versions.
            CniError::PluginNotFound { .. } | CniError::Incompatible { .. } => {
                CniErrorKind::PluginMissing
            }
            CniError::Exec {
                source: exec::ExecError::Timeout { .. },
                ..
            } => CniErrorKind::Timeout,
            CniError::Exec { .. }
            | CniError::Plugin(_)
            | CniError::BadResult { .. }
            | CniError::BadVersion { .. }
            | CniError::InProcess { .. } => CniErrorKind::PluginFailed,
            CniError::InvalidName { .. }
            | CniError::Cache { .. }
            | CniError::NoConfig { .. }
            | CniError::NoCachedResult { .. } => CniErrorKind::Internal,
        }
    }
}
