//! Counts the RPCs being served, so shutdown can wait for them (and not for idle connections).
//! A tower layer under every service; it never delays, refuses or looks into a call.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::sync::Notify;

#[derive(Clone, Default)]
pub struct InFlight {
    inner: Arc<Inner>,
}

#[derive(Default)]
struct Inner {
    count: AtomicUsize,
    changed: Notify,
}

/// Decrements the count when the call's future finishes or is dropped.
struct Guard(Arc<Inner>);

impl Drop for Guard {
    fn drop(&mut self) {
        self.0.count.fetch_sub(1, Ordering::AcqRel);
        self.0.changed.notify_waiters();
    }
}

impl InFlight {
    pub fn layer(&self) -> InFlightLayer {
        InFlightLayer(self.clone())
    }

    pub fn count(&self) -> usize {
        self.inner.count.load(Ordering::Acquire)
    }

    /// Resolves when no call is in flight, or after `limit`.
    pub async fn idle(&self, limit: Duration) {
        let wait = async {
            loop {
                let changed = self.inner.changed.notified();
                if self.count() == 0 {
                    return;
                }
                changed.await;
            }
        };
        let _ = tokio::time::timeout(limit, wait).await;
    }
}

#[derive(Clone)]
pub struct InFlightLayer(InFlight);

impl<S> tower::Layer<S> for InFlightLayer {
    type Service = InFlightService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        InFlightService {
            inner,
            calls: self.0.clone(),
        }
    }
}

#[derive(Clone)]
pub struct InFlightService<S> {
    inner: S,
    calls: InFlight,
}

impl<S, Req> tower::Service<Req> for InFlightService<S>
where
    S: tower::Service<Req>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        self.calls.inner.count.fetch_add(1, Ordering::AcqRel);
        let guard = Guard(self.calls.inner.clone());
        let call = self.inner.call(req);
        Box::pin(async move {
            let response = call.await;
            drop(guard);
            response
        })
    }
}
