//! When the next attempt is due: the retry schedule (`GATEHOUSE_WEBHOOK_RETRY_SCHEDULE_SECS`,
//! Svix's by default) with jitter, never sooner than a `Retry-After` the receiver sent on a
//! 429 or 503 (bounded by `GATEHOUSE_WEBHOOK_RETRY_AFTER_MAX_SECS`).

use std::time::Duration;

use chrono::{DateTime, Utc};
use rand::Rng;

/// The schedule as configured.
#[derive(Debug, Clone)]
pub struct Schedule {
    pub waits: Vec<Duration>,
    pub jitter_percent: u32,
    pub retry_after_max: Duration,
}

impl Schedule {
    /// The wait after the failed attempt at position `step` (0 = the first attempt) of the
    /// schedule; `None` when the schedule is used up (the delivery is exhausted).
    pub fn next_wait(&self, step: i32, retry_after: Option<Duration>) -> Option<Duration> {
        let base = *self.waits.get(usize::try_from(step).ok()?)?;
        let jittered = jitter(
            base,
            self.jitter_percent,
            rand::rng().random_range(-1.0..=1.0),
        );
        Some(match retry_after {
            Some(asked) => jittered.max(asked.min(self.retry_after_max)),
            None => jittered,
        })
    }
}

/// `base` moved by `unit` (in [-1, 1]) times `percent` of itself.
fn jitter(base: Duration, percent: u32, unit: f64) -> Duration {
    let share = f64::from(percent.min(100)) / 100.0 * unit.clamp(-1.0, 1.0);
    Duration::from_secs_f64((base.as_secs_f64() * (1.0 + share)).max(0.0))
}

/// A `Retry-After` value: seconds, or an HTTP date (RFC 9110), relative to `now`.
pub fn parse_retry_after(value: &str, now: DateTime<Utc>) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = DateTime::parse_from_rfc2822(value).ok()?;
    let wait = at.with_timezone(&Utc) - now;
    Some(wait.to_std().unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schedule(percent: u32) -> Schedule {
        Schedule {
            waits: vec![Duration::from_secs(5), Duration::from_secs(300)],
            jitter_percent: percent,
            retry_after_max: Duration::from_secs(60),
        }
    }

    #[test]
    fn waits_follow_the_schedule_with_bounded_jitter() {
        let s = schedule(20);
        for _ in 0..200 {
            let w = s.next_wait(0, None).expect("first retry");
            assert!(
                w >= Duration::from_secs(4) && w <= Duration::from_secs(6),
                "{w:?}"
            );
            let w = s.next_wait(1, None).expect("second retry");
            assert!(
                w >= Duration::from_secs(240) && w <= Duration::from_secs(360),
                "{w:?}"
            );
        }
        assert_eq!(s.next_wait(2, None), None, "schedule used up");
        assert_eq!(s.next_wait(-1, None), None);
        assert_eq!(schedule(0).next_wait(0, None), Some(Duration::from_secs(5)));
        assert_eq!(
            jitter(Duration::from_secs(10), 20, 1.0),
            Duration::from_secs(12)
        );
        assert_eq!(
            jitter(Duration::from_secs(10), 20, -1.0),
            Duration::from_secs(8)
        );
    }

    #[test]
    fn retry_after_is_honoured_within_its_bound() {
        let s = schedule(0);
        let asked = Some(Duration::from_secs(30));
        assert_eq!(s.next_wait(0, asked), Some(Duration::from_secs(30)));
        // Never sooner than the schedule, never longer than the bound.
        assert_eq!(
            s.next_wait(0, Some(Duration::from_secs(1))),
            Some(Duration::from_secs(5))
        );
        assert_eq!(
            s.next_wait(0, Some(Duration::from_secs(3600))),
            Some(Duration::from_secs(60))
        );
        let now = DateTime::parse_from_rfc3339("2015-10-21T07:27:00Z")
            .expect("date")
            .with_timezone(&Utc);
        assert_eq!(
            parse_retry_after(" 120 ", now),
            Some(Duration::from_secs(120))
        );
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now),
            Some(Duration::from_secs(60))
        );
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:00:00 GMT", now),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon", now), None);
    }
}
