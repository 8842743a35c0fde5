//! Name reservation: a pod's name, namespace, uid and attempt belong to one sandbox at a
//! time, from the start of its Run until it is removed. This module never touches the
//! network, the namespace or the records.

use tokio::sync::watch;

use crate::sandbox::model::SandboxSpec;

pub(super) enum Reservation {
    /// A RunPodSandbox is in flight; a retry with the same spec waits for it.
    Creating {
        spec: Box<SandboxSpec>,
        done: watch::Receiver<()>,
    },
    Held {
        id: String,
    },
}
