//! Time stamps and step timers: a leaf every floor may use. It reads clocks and never
//! sleeps, logs or records metrics.

use std::time::{Instant, SystemTime, UNIX_EPOCH};

/// Nanoseconds since the epoch, as CRI time stamps are (`i64`; saturates far in the future,
/// and a clock before 1970 reads as 1 so that "unset" (0) is never confused with it).
pub fn now_nanos() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
        .unwrap_or(1)
}

/// Where one operation's time went: cumulative microseconds at each named step, for a debug
/// line an operator (or `FASTPATH_BENCH_STEPS`) reads.
pub struct Steps {
    started: Instant,
    marks: Vec<(&'static str, u128)>,
}

impl Steps {
    pub fn start() -> Self {
        Steps {
            started: Instant::now(),
            marks: Vec::new(),
        }
    }

    pub fn mark(&mut self, step: &'static str) {
        self.marks.push((step, self.started.elapsed().as_micros()));
    }

    pub fn marks(&self) -> &[(&'static str, u128)] {
        &self.marks
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_are_cumulative_and_in_order() {
        let mut steps = Steps::start();
        steps.mark("a");
        steps.mark("b");
        let marks = steps.marks();
        assert_eq!(marks.iter().map(|m| m.0).collect::<Vec<_>>(), ["a", "b"]);
        assert!(marks[0].1 <= marks[1].1);
    }

    #[test]
    fn now_is_after_2020() {
        assert!(now_nanos() > 1_577_836_800_000_000_000);
    }
}
