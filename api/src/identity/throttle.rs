//! Login throttling, shared by every api replica through Postgres (`login_failures`).
//!
//! **Reserve, then verify.** Every login attempt first *reserves* itself in one transaction
//! that locks its counters (`SELECT … FOR UPDATE`, in a fixed order so replicas never
//! deadlock), checks them, and counts the attempt as a failure in advance. Only then is the
//! password verified; a success refunds the reservation. So 30 simultaneous guesses for one
//! account verify at most the limit, and the rest are refused with 429 — check-and-count
//! cannot be raced.
//!
//! **Who is counted** (chosen after OWASP's guidance: stop guessing without handing anyone a
//! button that locks a user out):
//! - `pair:<tenant>/<user>@<ip>` — one account from one address: locked for
//!   `GATEHOUSE_LOGIN_LOCKOUT_SECS` after `GATEHOUSE_LOGIN_MAX_FAILURES` failures. An attacker
//!   locks out only themself.
//! - `ip:<addr>` — one address across accounts (password spraying): locked after four times
//!   the limit. IPv6 clients are keyed by their /64.
//! - `user:<tenant>/<user>` — one account across addresses (a distributed attack): never a
//!   lockout, but past `GATEHOUSE_LOGIN_USER_BACKOFF_AFTER` failures within
//!   `GATEHOUSE_LOGIN_USER_WINDOW_SECS` every further attempt must wait an exponentially
//!   growing delay (1 s, 2 s, 4 s … at most `GATEHOUSE_LOGIN_USER_BACKOFF_MAX_SECS`) after the
//!   previous one. Addresses the user has logged in from successfully in the last
//!   `GATEHOUSE_LOGIN_KNOWN_ADDRESS_DAYS` are exempt from this backoff (they keep their own
//!   pair limit), so the real user still gets in while the account is under attack.
//! - Unknown usernames are counted exactly like known ones: lockouts reveal nothing.
//! - A success clears the pair and the user counters and refunds the address's reservation;
//!   it does not reset the address's earlier failures.

use std::{
    net::{IpAddr, Ipv6Addr},
    time::Duration,
};

use chrono::{DateTime, Utc};
use gatehouse_common::config::IdentityConfig;
use sqlx::PgPool;

/// Prefix of per-account subjects.
pub const USER_PREFIX: &str = "user:";
/// Prefix of per-address subjects.
pub const IP_PREFIX: &str = "ip:";
/// Prefix of per-(account, address) subjects.
pub const PAIR_PREFIX: &str = "pair:";
/// How much looser the per-address limit is than the per-pair one.
pub const IP_LIMIT_FACTOR: i32 = 4;

/// The counters one login attempt touches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attempt {
    user: Option<String>,
    pair: Option<String>,
    ip: String,
}

impl Attempt {
    /// A login for `username` of the tenant `tenant_slug` (`None`: operators) from `ip`.
    pub fn new(tenant_slug: Option<&str>, username: &str, ip: IpAddr) -> Self {
        let user = user_subject(tenant_slug.unwrap_or("-operators-"), username);
        let ip = ip_subject(ip);
        let pair = format!(
            "{PAIR_PREFIX}{}@{}",
            &user[USER_PREFIX.len()..],
            &ip[IP_PREFIX.len()..]
        );
        Self {
            user: Some(user),
            pair: Some(pair),
            ip,
        }
    }

    /// An attempt that names no usable account (a malformed body): only its address counts.
    pub fn address_only(ip: IpAddr) -> Self {
        Self {
            user: None,
            pair: None,
            ip: ip_subject(ip),
        }
    }

    /// Every subject, sorted (the lock order).
    fn subjects(&self) -> Vec<String> {
        let mut all: Vec<String> = [self.user.clone(), self.pair.clone(), Some(self.ip.clone())]
            .into_iter()
            .flatten()
            .collect();
        all.sort();
        all.dedup();
        all
    }

    pub fn user_subject(&self) -> Option<&str> {
        self.user.as_deref()
    }

    pub fn pair_subject(&self) -> Option<&str> {
        self.pair.as_deref()
    }

    pub fn ip_subject(&self) -> &str {
        &self.ip
    }
}

/// The answer to a reservation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reservation {
    /// Go ahead and verify; the attempt already counts as a failure until
    /// [`LoginThrottle::succeeded`] refunds it.
    Granted,
    /// Refused: try again after `retry_after`. Nothing was counted.
    Refused {
        retry_after: Duration,
        reason: &'static str,
    },
}

/// Login throttling backed by the `login_failures` table.
#[derive(Clone)]
pub struct LoginThrottle {
    pool: PgPool,
    max_failures: i32,
    lockout: Duration,
    user_backoff_after: i32,
    user_backoff_max: Duration,
    user_window: Duration,
    known_address_ttl: Duration,
}

struct Counter {
    subject: String,
    failures: i32,
    window_start: DateTime<Utc>,
    locked_until: Option<DateTime<Utc>>,
    last_attempt_at: Option<DateTime<Utc>>,
}

fn until(now: DateTime<Utc>, then: DateTime<Utc>) -> Duration {
    let ms = (then - now).num_milliseconds().max(1);
    Duration::from_millis(u64::try_from(ms).unwrap_or(1))
}

impl LoginThrottle {
    pub fn new(pool: PgPool, config: &IdentityConfig) -> Self {
        Self {
            pool,
            max_failures: config.login_max_failures.max(1),
            lockout: config.login_lockout,
            user_backoff_after: config.login_user_backoff_after.max(1),
            user_backoff_max: config.login_user_backoff_max,
            user_window: config.login_user_window,
            known_address_ttl: config.login_known_address_ttl,
        }
    }

    /// Failures that lock `subject` (users are never locked: `i32::MAX`).
    pub fn limit_for(&self, subject: &str) -> i32 {
        if subject.starts_with(IP_PREFIX) {
            self.max_failures.saturating_mul(IP_LIMIT_FACTOR)
        } else if subject.starts_with(PAIR_PREFIX) {
            self.max_failures
        } else {
            i32::MAX
        }
    }

    fn window_for(&self, subject: &str) -> Duration {
        if subject.starts_with(USER_PREFIX) {
            self.user_window
        } else {
            self.lockout
        }
    }

    /// The delay a user counter at `failures` imposes between attempts (zero below the
    /// threshold).
    pub fn user_backoff(&self, failures: i32) -> Duration {
        if failures < self.user_backoff_after {
            return Duration::ZERO;
        }
        let exponent = u32::try_from(failures - self.user_backoff_after)
            .unwrap_or(0)
            .min(20);
        Duration::from_secs(1u64 << exponent).min(self.user_backoff_max)
    }

    /// Checks and counts one attempt atomically (see the module docs).
    pub async fn reserve(&self, attempt: &Attempt) -> Result<Reservation, sqlx::Error> {
        let subjects = attempt.subjects();
        let mut tx = self.pool.begin().await?;
        sqlx::query!(
            "INSERT INTO login_failures (subject, failures, window_start)
             SELECT s, 0, now() FROM UNNEST($1::text[]) AS s
             ON CONFLICT (subject) DO NOTHING",
            &subjects,
        )
        .execute(&mut *tx)
        .await?;
        let counters = sqlx::query_as!(
            Counter,
            "SELECT subject, failures, window_start, locked_until, last_attempt_at
               FROM login_failures WHERE subject = ANY($1)
              ORDER BY subject FOR UPDATE",
            &subjects,
        )
        .fetch_all(&mut *tx)
        .await?;
        let now = sqlx::query_scalar!(r#"SELECT now() AS "now!""#)
            .fetch_one(&mut *tx)
            .await?;
        let known = match (&attempt.user, self.known_address_ttl.is_zero()) {
            // The interval is bound as `std::time::Duration` (sqlx's Postgres `interval`).
            (Some(user), false) => {
                sqlx::query_scalar!(
                    r#"SELECT EXISTS (SELECT 1 FROM login_known_addresses
                      WHERE user_subject = $1 AND ip_subject = $2
                        AND last_success_at > now() - $3::interval) AS "known!""#,
                    user,
                    attempt.ip,
                    self.known_address_ttl as _,
                )
                .fetch_one(&mut *tx)
                .await?
            }
            _ => false,
        };

        let in_window = |c: &Counter| {
            let window = chrono::Duration::from_std(self.window_for(&c.subject))
                .unwrap_or(chrono::Duration::MAX);
            c.window_start > now - window
        };
        let mut refusal: Option<(Duration, &'static str)> = None;
        for c in &counters {
            let refused = if let Some(locked) = c.locked_until.filter(|l| *l > now) {
                let reason = if c.subject.starts_with(IP_PREFIX) {
                    "address"
                } else {
                    "account_address"
                };
                Some((until(now, locked), reason))
            } else if c.subject.starts_with(USER_PREFIX) && !known && in_window(c) {
                let wait = self.user_backoff(c.failures);
                match c.last_attempt_at {
                    Some(last) if !wait.is_zero() => {
                        let next = last + chrono::Duration::from_std(wait).unwrap_or_default();
                        (next > now).then(|| (until(now, next), "account"))
                    }
                    _ => None,
                }
            } else {
                None
            };
            if let Some((wait, reason)) = refused
                && refusal.is_none_or(|(w, _)| wait > w)
            {
                refusal = Some((wait, reason));
            }
        }
        if let Some((retry_after, reason)) = refusal {
            tx.commit().await?;
            metrics::counter!("gatehouse_api_login_throttled_total", "reason" => reason)
                .increment(1);
            return Ok(Reservation::Refused {
                retry_after,
                reason,
            });
        }

        let lockout = chrono::Duration::from_std(self.lockout).unwrap_or(chrono::Duration::MAX);
        let mut names = Vec::with_capacity(counters.len());
        let mut failures = Vec::with_capacity(counters.len());
        let mut starts = Vec::with_capacity(counters.len());
        let mut locks: Vec<Option<DateTime<Utc>>> = Vec::with_capacity(counters.len());
        for c in &counters {
            let (count, start) = if in_window(c) {
                (c.failures.saturating_add(1), c.window_start)
            } else {
                (1, now)
            };
            let lock = if count >= self.limit_for(&c.subject) {
                let kind = if c.subject.starts_with(IP_PREFIX) {
                    "ip"
                } else {
                    "pair"
                };
                metrics::counter!("gatehouse_api_login_lockouts_total", "kind" => kind)
                    .increment(1);
                tracing::warn!(
                    kind,
                    lockout_secs = self.lockout.as_secs(),
                    "login locked out"
                );
                Some(now + lockout)
            } else {
                c.locked_until.filter(|l| *l > now)
            };
            names.push(c.subject.clone());
            failures.push(count);
            starts.push(start);
            locks.push(lock);
        }
        sqlx::query!(
            "UPDATE login_failures AS lf
                SET failures = u.failures, window_start = u.window_start,
                    locked_until = u.locked_until, last_attempt_at = now()
               FROM UNNEST($1::text[], $2::int4[], $3::timestamptz[], $4::timestamptz[])
                    AS u(subject, failures, window_start, locked_until)
              WHERE lf.subject = u.subject",
            &names,
            &failures,
            &starts,
            &locks as _,
        )
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(Reservation::Granted)
    }

    /// The attempt succeeded: clears the account's counters, refunds the address's
    /// reservation, and remembers the address as one this user logs in from.
    pub async fn succeeded(&self, attempt: &Attempt) -> Result<(), sqlx::Error> {
        let mut tx = self.pool.begin().await?;
        let personal: Vec<String> = [attempt.user.clone(), attempt.pair.clone()]
            .into_iter()
            .flatten()
            .collect();
        sqlx::query!(
            "DELETE FROM login_failures WHERE subject = ANY($1)",
            &personal,
        )
        .execute(&mut *tx)
        .await?;
        sqlx::query!(
            "UPDATE login_failures SET failures = greatest(failures - 1, 0) WHERE subject = $1",
            attempt.ip,
        )
        .execute(&mut *tx)
        .await?;
        if let Some(user) = &attempt.user {
            sqlx::query!(
                "INSERT INTO login_known_addresses (user_subject, ip_subject, last_success_at)
                 VALUES ($1, $2, now())
                 ON CONFLICT (user_subject, ip_subject) DO UPDATE SET last_success_at = now()",
                user,
                attempt.ip,
            )
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await
    }

    /// Deletes counters whose window and lock are both over, and known addresses past their
    /// time; returns how many rows went. Housekeeping, safe from any replica at any time.
    pub async fn purge_stale(&self) -> Result<u64, sqlx::Error> {
        // The intervals are bound as `std::time::Duration` (sqlx's Postgres `interval`).
        let counters = sqlx::query!(
            "DELETE FROM login_failures
              WHERE window_start <= now() - CASE WHEN starts_with(subject, 'user:') THEN $2::interval ELSE $1::interval END
                AND (locked_until IS NULL OR locked_until <= now())",
            self.lockout as _,
            self.user_window as _,
        )
        .execute(&self.pool)
        .await?;
        let known = sqlx::query!(
            "DELETE FROM login_known_addresses WHERE last_success_at <= now() - $1::interval",
            self.known_address_ttl as _,
        )
        .execute(&self.pool)
        .await?;
        Ok(counters.rows_affected() + known.rows_affected())
    }
}

/// The throttling subject of a user: `user:<tenant slug>/<username>`, both lowercased so
/// case variants of one account share one counter.
pub fn user_subject(tenant_slug: &str, username: &str) -> String {
    format!(
        "{USER_PREFIX}{}/{}",
        tenant_slug.to_lowercase(),
        username.to_lowercase()
    )
}

/// The throttling subject of a client address: `ip:<IPv4>` or `ip:<IPv6 /64 network>`
/// (e.g. `ip:2001:db8:1:2::/64`). IPv4-mapped IPv6 addresses are keyed as IPv4.
pub fn ip_subject(ip: IpAddr) -> String {
    match ip.to_canonical() {
        IpAddr::V4(v4) => format!("{IP_PREFIX}{v4}"),
        IpAddr::V6(v6) => {
            let prefix = u128::from(v6) & !((1u128 << 64) - 1);
            format!("{IP_PREFIX}{}/64", Ipv6Addr::from(prefix))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subjects() {
        assert_eq!(user_subject("acme", "Alice"), "user:acme/alice");
        assert_eq!(user_subject("Acme", "ALICE"), user_subject("acme", "alice"));
        assert_eq!(ip_subject("192.0.2.1".parse().unwrap()), "ip:192.0.2.1");
        assert_eq!(
            ip_subject("::ffff:192.0.2.1".parse().unwrap()),
            "ip:192.0.2.1"
        );
        assert_eq!(
            ip_subject("2001:db8:1:2:aaaa:bbbb:cccc:dddd".parse().unwrap()),
            "ip:2001:db8:1:2::/64"
        );
        assert_ne!(
            ip_subject("2001:db8:1:2::1".parse().unwrap()),
            ip_subject("2001:db8:1:3::1".parse().unwrap())
        );
        let a = Attempt::new(Some("acme"), "Alice", "192.0.2.1".parse().unwrap());
        assert_eq!(a.pair_subject(), Some("pair:acme/alice@192.0.2.1"));
        assert_eq!(a.subjects().len(), 3);
        assert_eq!(
            Attempt::address_only("192.0.2.1".parse().unwrap()).subjects(),
            vec!["ip:192.0.2.1".to_string()]
        );
    }
}
