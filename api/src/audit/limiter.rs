//! How many denied or failed requests are recorded: at most `per_minute` per client address
//! per fixed one-minute window, on this replica, and at most [`MAX_ADDRESSES`] addresses per
//! window (so the map itself stays small under a spread-out flood).

use std::{
    collections::HashMap,
    net::IpAddr,
    sync::{Mutex, PoisonError},
    time::{Duration, Instant},
};

const WINDOW: Duration = Duration::from_secs(60);
/// Distinct addresses tracked per window; records from more are suppressed.
pub const MAX_ADDRESSES: usize = 10_000;

pub struct DeniedLimiter {
    per_minute: u32,
    state: Mutex<(Instant, HashMap<IpAddr, u32>)>,
}

impl DeniedLimiter {
    pub fn new(per_minute: u32) -> Self {
        Self {
            per_minute,
            state: Mutex::new((Instant::now(), HashMap::new())),
        }
    }

    /// Whether a record from `ip` may be written now (and counts it).
    pub fn allow(&self, ip: IpAddr) -> bool {
        let mut guard = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let (start, counts) = &mut *guard;
        if start.elapsed() >= WINDOW {
            *start = Instant::now();
            counts.clear();
        }
        if counts.len() >= MAX_ADDRESSES && !counts.contains_key(&ip) {
            return false;
        }
        let n = counts.entry(ip).or_insert(0);
        if *n >= self.per_minute {
            return false;
        }
        *n += 1;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_address_gets_its_share_per_window() {
        let limiter = DeniedLimiter::new(3);
        let a: IpAddr = "10.0.0.1".parse().expect("ip");
        let b: IpAddr = "10.0.0.2".parse().expect("ip");
        assert!((0..3).all(|_| limiter.allow(a)));
        assert!(!limiter.allow(a));
        assert!(limiter.allow(b));
    }
}
