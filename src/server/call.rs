//! One CRI call at the boundary: its one log line (mutations at info, polled reads at debug,
//! failures at warn), its latency sample and its gRPC code's canonical name. It never changes
//! a result and never picks a code: errors become statuses through `error.rs`.

use super::Shared;
use crate::telemetry;

/// The rpc lines keep the target they had before this module was split from `server`'s
/// (log filters and readers match on it).
const RPC_LOG_TARGET: &str = "crisp::server";

/// One CRI call being served: measured, and logged in one line when it finishes (mutations
/// at info, the reads kubelet polls at debug, failures at warn).
pub(crate) struct Call {
    method: &'static str,
    started: std::time::Instant,
    sandbox_id: String,
    pod: String,
    mutates: bool,
}

impl Call {
    pub(crate) fn read(method: &'static str) -> Call {
        Call {
            method,
            started: std::time::Instant::now(),
            sandbox_id: String::new(),
            pod: String::new(),
            mutates: false,
        }
    }

    pub(crate) fn write(method: &'static str) -> Call {
        Call {
            mutates: true,
            ..Call::read(method)
        }
    }

    /// Names the sandbox the call is about, and its pod when crisp knows the id.
    pub(crate) fn sandbox(mut self, shared: &Shared, id: &str) -> Call {
        self.sandbox_id = id.to_string();
        if let Ok(sandbox) = shared.manager.status(id) {
            self.sandbox_id = sandbox.id.clone();
            let m = &sandbox.spec.metadata;
            self.pod = format!("{}/{}", m.namespace, m.name);
        }
        self
    }

    pub(crate) fn pod(mut self, pod: String) -> Call {
        self.pod = pod;
        self
    }

    pub(crate) fn set_sandbox_id(&mut self, id: &str) {
        self.sandbox_id = id.to_string();
    }

    /// Logs and measures the call, and turns its error into a status.
    pub(crate) fn finish<T>(
        self,
        result: crate::Result<T>,
    ) -> Result<tonic::Response<T>, tonic::Status> {
        self.finish_status(result.map_err(tonic::Status::from))
    }

    pub(crate) fn finish_status<T>(
        self,
        result: Result<T, tonic::Status>,
    ) -> Result<tonic::Response<T>, tonic::Status> {
        let elapsed = self.started.elapsed();
        let ms = elapsed.as_secs_f64() * 1000.0;
        let (method, sandbox_id, pod) = (self.method, &self.sandbox_id, &self.pod);
        let code = match &result {
            Ok(_) => tonic::Code::Ok,
            Err(status) => status.code(),
        };
        telemetry::record_rpc(method, code_name(code), elapsed);
        match result {
            Ok(value) => {
                // tracing fixes an event's level where it is written: one line, two levels.
                macro_rules! succeeded {
                    ($level:expr) => {
                        tracing::event!(
                            target: RPC_LOG_TARGET,
                            $level,
                            method,
                            sandbox_id,
                            pod,
                            code = "OK",
                            duration_ms = ms,
                            "rpc"
                        )
                    };
                }
                if self.mutates {
                    succeeded!(tracing::Level::INFO);
                } else {
                    succeeded!(tracing::Level::DEBUG);
                }
                Ok(tonic::Response::new(value))
            }
            Err(status) => {
                tracing::warn!(
                    target: RPC_LOG_TARGET,
                    method, sandbox_id, pod, code = code_name(code), duration_ms = ms,
                    error = %status.message(), "rpc failed"
                );
                Err(status)
            }
        }
    }
}

/// gRPC's canonical code names, as they appear in metrics and logs.
fn code_name(code: tonic::Code) -> &'static str {
    use tonic::Code::*;
    match code {
        Ok => "OK",
        Cancelled => "CANCELLED",
        Unknown => "UNKNOWN",
        InvalidArgument => "INVALID_ARGUMENT",
        DeadlineExceeded => "DEADLINE_EXCEEDED",
        NotFound => "NOT_FOUND",
        AlreadyExists => "ALREADY_EXISTS",
        PermissionDenied => "PERMISSION_DENIED",
        ResourceExhausted => "RESOURCE_EXHAUSTED",
        FailedPrecondition => "FAILED_PRECONDITION",
        Aborted => "ABORTED",
        OutOfRange => "OUT_OF_RANGE",
        Unimplemented => "UNIMPLEMENTED",
        Internal => "INTERNAL",
        Unavailable => "UNAVAILABLE",
        DataLoss => "DATA_LOSS",
        Unauthenticated => "UNAUTHENTICATED",
    }
}
