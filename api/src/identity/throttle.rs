//! Login throttling, shared by every api replica through Postgres (`login_failures`).
//!
//! Failed logins are counted per *subject*: the user (`user:<tenant slug>/<username>`) and
//! the client address (`ip:<addr>`). A subject that reaches its limit within the window is
//! locked for `GATEHOUSE_LOGIN_LOCKOUT_SECS`; the window is that same duration, and a
//! failure after it restarts the count.
//!
//! Security choices:
//! - **Both keys.** The per-user limit stops guessing one account's password from many
//!   addresses; the per-IP limit stops one address spraying a few guesses over many
//!   accounts (which never trips any per-user limit).
//! - **The per-IP limit is 4× the per-user one** (`max_failures * 4`): several legitimate
//!   users can share an address (NAT, office egress), and one of them mistyping must not
//!   lock the others out.
//! - **IPv6 clients are keyed by their /64**: one subscriber usually holds a whole /64, so
//!   keying single IPv6 addresses would hand an attacker 2^64 fresh counters.
//! - **Unknown usernames count too**: callers record failures for them exactly as for known
//!   users, so lockouts do not reveal which accounts exist.
//! - **Atomic.** Every failure is one `INSERT … ON CONFLICT DO UPDATE` whose `CASE`s restart
//!   or extend the window and set the lock in the same statement; concurrent failures on any
//!   replica serialise on the row and are counted exactly.
//! - A lock is never shortened by a later failure, and success clears only the user's row:
//!   logging in correctly does not reset the counter of the address that was spraying.

use std::{
    collections::HashSet,
    net::{IpAddr, Ipv6Addr},
    time::Duration,
};

use gatehouse_common::config::IdentityConfig;
use sqlx::PgPool;

/// Prefix of user subjects.
pub const USER_PREFIX: &str = "user:";
/// Prefix of client-address subjects.
pub const IP_PREFIX: &str = "ip:";
/// How much looser the per-IP limit is than the per-user one.
pub const IP_LIMIT_FACTOR: i32 = 4;

/// Login throttling backed by the `login_failures` table.
#[derive(Clone)]
pub struct LoginThrottle {
    pool: PgPool,
    max_failures: i32,
    lockout: Duration,
}

impl LoginThrottle {
    /// Takes `login_max_failures` and `login_lockout` from the configuration.
    pub fn new(pool: PgPool, config: &IdentityConfig) -> Self {
        Self {
            pool,
            max_failures: config.login_max_failures.max(1),
            lockout: config.login_lockout,
        }
    }

    /// Failures that lock `subject`: `max_failures` for users, `max_failures * 4` for
    /// addresses.
    pub fn limit_for(&self, subject: &str) -> i32 {
        if subject.starts_with(IP_PREFIX) {
            self.max_failures.saturating_mul(IP_LIMIT_FACTOR)
        } else {
            self.max_failures
        }
    }

    /// `Some(retry_after)` if any of `subjects` is locked now (the longest remaining lock,
    /// rounded up to the millisecond), `None` otherwise. Call it before verifying the
    /// password, and do not verify or record anything while locked.
    pub async fn check(&self, subjects: &[String]) -> Result<Option<Duration>, sqlx::Error> {
        if subjects.is_empty() {
            return Ok(None);
        }
        let remaining_ms: Option<i64> = sqlx::query_scalar(
            "SELECT ceil(extract(epoch FROM max(locked_until) - now()) * 1000)::bigint
               FROM login_failures
              WHERE subject = ANY($1) AND locked_until > now()",
        )
        .bind(subjects)
        .fetch_one(&self.pool)
        .await?;
        Ok(remaining_ms.map(|ms| Duration::from_millis(u64::try_from(ms).unwrap_or(0).max(1))))
    }

    /// Counts one failed login against each of `subjects` (duplicates once).
    ///
    /// Per subject, a single atomic upsert: within the window (`lockout` since the first
    /// failure) the count goes up by one, after it the count restarts at 1 with a new window;
    /// when the count reaches the subject's limit, `locked_until = now() + lockout`.
    pub async fn record_failure(&self, subjects: &[String]) -> Result<(), sqlx::Error> {
        let mut seen = HashSet::with_capacity(subjects.len());
        for subject in subjects {
            if !seen.insert(subject.as_str()) {
                continue;
            }
            let limit = self.limit_for(subject);
            // `$1` subject, `$2` limit, `$3` lockout (also the counting window).
            let locked_now: bool = sqlx::query_scalar(
                "INSERT INTO login_failures AS lf (subject, failures, window_start, locked_until)
                 VALUES ($1, 1, now(), CASE WHEN 1 >= $2 THEN now() + $3 END)
                 ON CONFLICT (subject) DO UPDATE SET
                     failures = CASE WHEN lf.window_start > now() - $3
                                     THEN lf.failures + 1 ELSE 1 END,
                     window_start = CASE WHEN lf.window_start > now() - $3
                                         THEN lf.window_start ELSE now() END,
                     locked_until = CASE
                         WHEN (CASE WHEN lf.window_start > now() - $3
                                    THEN lf.failures + 1 ELSE 1 END) >= $2
                         THEN GREATEST(lf.locked_until, now() + $3)
                         ELSE lf.locked_until END
                 RETURNING failures = $2",
            )
            .bind(subject)
            .bind(limit)
            .bind(self.lockout)
            .fetch_one(&self.pool)
            .await?;
            if locked_now {
                let kind = if subject.starts_with(IP_PREFIX) {
                    "ip"
                } else {
                    "user"
                };
                metrics::counter!("gatehouse_api_login_lockouts_total", "kind" => kind)
                    .increment(1);
                tracing::warn!(%subject, lockout_secs = self.lockout.as_secs(), "login locked out");
            }
        }
        Ok(())
    }

    /// A successful login: clears `user_subject`'s failures. Address subjects are left alone,
    /// so one correct password does not reset a spraying address's counter.
    pub async fn record_success(&self, user_subject: &str) -> Result<(), sqlx::Error> {
        sqlx::query("DELETE FROM login_failures WHERE subject = $1")
            .bind(user_subject)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Deletes rows whose window and lock are both over (they would restart at 1 anyway);
    /// returns how many. Housekeeping, safe to run from any replica at any time.
    pub async fn purge_stale(&self) -> Result<u64, sqlx::Error> {
        let done = sqlx::query(
            "DELETE FROM login_failures
              WHERE window_start <= now() - $1
                AND (locked_until IS NULL OR locked_until <= now())",
        )
        .bind(self.lockout)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected())
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
        assert_eq!(
            ip_subject("2001:db8:1:2::1".parse().unwrap()),
            ip_subject("2001:db8:1:2:ffff::9".parse().unwrap())
        );
        assert_ne!(
            ip_subject("2001:db8:1:2::1".parse().unwrap()),
            ip_subject("2001:db8:1:3::1".parse().unwrap())
        );
    }
}
