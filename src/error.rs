//! The one error type of crisp and the one place that chooses a gRPC status for it.
//!
//! Every variant carries what an operator needs to act on it: the sandbox, the file or
//! plugin, and the cause. `server/` converts with `Status::from(err)`; nothing else
//! picks a code (a raw `io::Error` through `?` would let tonic guess one).

use std::path::PathBuf;

use crate::cni::{CniError, CniErrorKind};

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The request itself is wrong; `field` names the proto field.
    #[error("invalid {field}: {reason}")]
    InvalidArgument { field: &'static str, reason: String },

    #[error("pod sandbox name {name:?} is reserved for sandbox {holder}")]
    NameReserved { name: String, holder: String },

    #[error("pod sandbox {id:?} not found")]
    SandboxNotFound { id: String },

    #[error("sandbox id prefix {prefix:?} is ambiguous: it matches {}", matches.join(", "))]
    AmbiguousId {
        prefix: String,
        matches: Vec<String>,
    },

    /// The node cannot set up pod networks right now (no usable CNI config).
    #[error("network not ready: {reason}")]
    NetworkNotReady { reason: String },

    /// A CNI operation failed for a sandbox; `step` says which part of the lifecycle.
    #[error("sandbox {sandbox}: {step}: {source}")]
    Cni {
        sandbox: String,
        step: &'static str,
        #[source]
        source: Box<CniError>,
    },

    /// A network namespace operation failed.
    #[error("sandbox {sandbox}: {op} network namespace {}: {source}", path.display())]
    Netns {
        sandbox: String,
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// Any other filesystem or system call failure, with what crisp was doing.
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },

    /// A sandbox record on disk could not be read or written.
    #[error("sandbox record {}: {reason}", path.display())]
    Record { path: PathBuf, reason: String },

    /// An NRI plugin answered RunPodSandbox with an error: the Run fails, as in containerd.
    #[error("sandbox {sandbox}: NRI plugin {plugin} rejected RunPodSandbox: {message}")]
    NriRejected {
        sandbox: String,
        plugin: String,
        message: String,
    },

    #[error("{what} is not implemented: crisp runs pod sandboxes only")]
    Unimplemented { what: &'static str },
}

impl Error {
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io {
            context: context.into(),
            source,
        }
    }

    pub fn invalid(field: &'static str, reason: impl Into<String>) -> Self {
        Error::InvalidArgument {
            field,
            reason: reason.into(),
        }
    }

    /// The gRPC code for this error; the table in README.md mirrors this match.
    pub fn grpc_code(&self) -> tonic::Code {
        use tonic::Code;
        match self {
            Error::InvalidArgument { .. } | Error::AmbiguousId { .. } => Code::InvalidArgument,
            Error::NameReserved { .. } => Code::AlreadyExists,
            Error::SandboxNotFound { .. } => Code::NotFound,
            Error::NetworkNotReady { .. } => Code::FailedPrecondition,
            Error::Cni { source, .. } => match source.kind() {
                CniErrorKind::PluginMissing => Code::FailedPrecondition,
                CniErrorKind::Timeout => Code::DeadlineExceeded,
                CniErrorKind::PluginFailed | CniErrorKind::Internal => Code::Internal,
            },
            Error::Netns { .. } | Error::Io { .. } | Error::Record { .. } => Code::Internal,
            Error::Unimplemented { .. } => Code::Unimplemented,
            // containerd returns a plain error here, which gRPC clients see as UNKNOWN.
            Error::NriRejected { .. } => Code::Unknown,
        }
    }
}

impl From<Error> for tonic::Status {
    fn from(err: Error) -> Self {
        // The Display chain already holds every cause; keep the whole chain in the message.
        tonic::Status::new(err.grpc_code(), err.to_string())
    }
}
