//! The time, injectable: quota days, resets and retention follow `Clock::now`, so tests can
//! move a tenant across midnight without waiting for it.

use std::sync::{
    Arc,
    atomic::{AtomicI64, Ordering},
};

use chrono::{DateTime, Duration, Utc};

/// The current time. Cheap to clone; the system clock unless a test shifted it.
#[derive(Debug, Clone, Default)]
pub struct Clock {
    /// Milliseconds added to the system time (tests only move it forward or back).
    offset_ms: Arc<AtomicI64>,
}

impl Clock {
    pub fn system() -> Self {
        Self::default()
    }

    pub fn now(&self) -> DateTime<Utc> {
        Utc::now() + Duration::milliseconds(self.offset_ms.load(Ordering::Relaxed))
    }

    /// Moves this clock (and every clone of it) so that `now()` is about `at`.
    pub fn set(&self, at: DateTime<Utc>) {
        let offset = (at - Utc::now()).num_milliseconds();
        self.offset_ms.store(offset, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_shifted_clock_is_shared_by_its_clones() {
        let clock = Clock::system();
        let copy = clock.clone();
        let target = Utc::now() + Duration::days(3);
        clock.set(target);
        assert!((copy.now() - target).num_seconds().abs() < 2);
    }
}
