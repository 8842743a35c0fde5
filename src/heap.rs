//! How crisp's heap gives memory back (glibc malloc; elsewhere these do nothing).
//!
//! - One malloc arena instead of up to 8 per core: with one arena per thread that ever
//!   allocated (tokio workers, blocking pool, namespace threads), memory freed after sandboxes
//!   are removed stayed spread over arenas and RSS kept growing with each round of sandboxes
//!   created and removed (the figures: docs/performance.md, "One malloc arena").
//! - Once removals have stopped for [`TRIM_AFTER_QUIET`], `malloc_trim(0)` hands the free
//!   pages inside the heap back to the kernel: glibc only returns memory at the top of the heap
//!   by itself, so after a node drained its pods crisp's RSS stayed at its peak.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

// tokio's clock, so that tests can pause it.
use tokio::time::Instant;

/// How long removals must have stopped before the heap is trimmed: a trim walks the whole
/// heap, so a burst of removals gets one, just after it.
pub const TRIM_AFTER_QUIET: Duration = Duration::from_secs(1);

/// Called first in main, before any other thread exists.
pub fn limit_arenas() {
    #[cfg(target_env = "gnu")]
    // SAFETY: mallopt only sets an allocator parameter; no other thread is running yet.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 1);
    }
}

/// Trims the heap once removals have been quiet for [`TRIM_AFTER_QUIET`].
#[derive(Debug, Clone)]
pub struct Trimmer {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    epoch: Instant,
    /// Milliseconds after `epoch` of the last removal.
    last_removal_ms: AtomicU64,
    /// A task is waiting for the quiet period.
    pending: AtomicBool,
}

impl Default for Trimmer {
    fn default() -> Self {
        Trimmer {
            inner: Arc::new(Inner {
                epoch: Instant::now(),
                last_removal_ms: AtomicU64::new(0),
                pending: AtomicBool::new(false),
            }),
        }
    }
}

impl Trimmer {
    /// Notes a removal; the first of a burst starts the task that trims after it (inside a
    /// tokio runtime; outside one, nothing is trimmed).
    pub fn sandbox_removed(&self) {
        let inner = &self.inner;
        inner
            .last_removal_ms
            .store(inner.epoch.elapsed().as_millis() as u64, Ordering::Release);
        if inner.pending.swap(true, Ordering::AcqRel) {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            inner.pending.store(false, Ordering::Release);
            return;
        };
        let inner = self.inner.clone();
        runtime.spawn(async move {
            loop {
                tokio::time::sleep(TRIM_AFTER_QUIET).await;
                let last = Duration::from_millis(inner.last_removal_ms.load(Ordering::Acquire));
                if inner.epoch.elapsed().saturating_sub(last) >= TRIM_AFTER_QUIET {
                    break;
                }
            }
            let _ = tokio::task::spawn_blocking(trim).await;
            inner.pending.store(false, Ordering::Release);
        });
    }

    /// Whether a trim is waiting for removals to stop.
    pub fn pending(&self) -> bool {
        self.inner.pending.load(Ordering::Acquire)
    }
}

fn trim() {
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim is thread-safe; it only releases free pages of the heap.
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_burst_of_removals_gets_one_trim_after_it() {
        let trimmer = Trimmer::default();
        assert!(!trimmer.pending());
        for _ in 0..100 {
            trimmer.sandbox_removed();
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(trimmer.pending(), "waits while removals go on");
        tokio::time::sleep(3 * TRIM_AFTER_QUIET).await;
        for _ in 0..100 {
            if !trimmer.pending() {
                break;
            }
            tokio::task::yield_now().await;
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(!trimmer.pending(), "trimmed once removals stopped");
    }
}
