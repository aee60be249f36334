//! Login throttling against real Postgres, shared through `login_failures`: limit 3 per
//! (account, address), 12 per address, an account backoff after 6 failures from anywhere,
//! 2 s lockout and window.

use std::{net::IpAddr, time::Duration};

use futures_util::future::join_all;
use gatehouse_api::identity::throttle::{Attempt, LoginThrottle, Reservation};
use gatehouse_common::testkit::TestEnv;

const LOCKOUT: Duration = Duration::from_secs(2);

async fn setup() -> (TestEnv, LoginThrottle) {
    let env = TestEnv::new(&[
        ("GATEHOUSE_LOGIN_MAX_FAILURES", "3"),
        ("GATEHOUSE_LOGIN_LOCKOUT_SECS", "2"),
        ("GATEHOUSE_LOGIN_USER_BACKOFF_AFTER", "6"),
        ("GATEHOUSE_LOGIN_USER_BACKOFF_MAX_SECS", "30"),
    ])
    .await;
    let throttle = LoginThrottle::new(env.app_pool.clone(), &env.config.identity);
    (env, throttle)
}

fn ip(s: &str) -> IpAddr {
    s.parse().expect("ip")
}

async fn failures(env: &TestEnv, subject: &str) -> Option<i32> {
    sqlx::query_scalar("SELECT failures FROM login_failures WHERE subject = $1")
        .bind(subject)
        .fetch_optional(&env.pool)
        .await
        .expect("query")
}

async fn granted(throttle: &LoginThrottle, attempt: &Attempt) -> bool {
    matches!(
        throttle.reserve(attempt).await.expect("reserve"),
        Reservation::Granted
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_account_locks_for_one_address_only() {
    let (env, throttle) = setup().await;
    let here = Attempt::new(Some("acme"), "Alice", ip("198.51.100.7"));
    for _ in 0..3 {
        assert!(granted(&throttle, &here).await);
    }
    match throttle.reserve(&here).await.expect("reserve") {
        Reservation::Refused {
            retry_after,
            reason,
        } => {
            assert!(retry_after > Duration::ZERO && retry_after <= LOCKOUT);
            assert_eq!(reason, "account_address");
        }
        other => panic!("expected a lockout, got {other:?}"),
    }
    // Case variants share the counter.
    let upper = Attempt::new(Some("acme"), "ALICE", ip("198.51.100.7"));
    assert!(!granted(&throttle, &upper).await);
    // The same account from another address is not locked: nobody can lock a user out.
    let elsewhere = Attempt::new(Some("acme"), "alice", ip("198.51.100.8"));
    assert!(granted(&throttle, &elsewhere).await);
    // Nor the same name in another tenant, nor another account from the first address.
    assert!(
        granted(
            &throttle,
            &Attempt::new(Some("other"), "alice", ip("198.51.100.7"))
        )
        .await
    );
    assert!(
        granted(
            &throttle,
            &Attempt::new(Some("acme"), "bob", ip("198.51.100.7"))
        )
        .await
    );
    // A refused attempt counted nothing.
    assert_eq!(
        failures(&env, here.pair_subject().expect("pair")).await,
        Some(3)
    );
    env.teardown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn simultaneous_attempts_reserve_exactly_the_limit() {
    let (env, throttle) = setup().await;
    let attempt = Attempt::new(Some("acme"), "frank", ip("198.51.100.99"));
    let outcomes = join_all((0..30).map(|_| {
        let throttle = throttle.clone();
        let attempt = attempt.clone();
        tokio::spawn(async move { throttle.reserve(&attempt).await })
    }))
    .await;
    let granted = outcomes
        .into_iter()
        .map(|r| r.expect("task").expect("reserve"))
        .filter(|r| *r == Reservation::Granted)
        .count();
    assert_eq!(granted, 3, "exactly the limit may be verified");
    assert_eq!(failures(&env, attempt.ip_subject()).await, Some(3));
    env.teardown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn success_clears_the_account_and_refunds_the_address() {
    let (env, throttle) = setup().await;
    let attempt = Attempt::new(Some("acme"), "bob", ip("203.0.113.5"));
    assert!(granted(&throttle, &attempt).await);
    assert!(granted(&throttle, &attempt).await);
    throttle.succeeded(&attempt).await.expect("success");
    assert_eq!(
        failures(&env, attempt.pair_subject().expect("pair")).await,
        None
    );
    assert_eq!(
        failures(&env, attempt.user_subject().expect("user")).await,
        None
    );
    // Two reservations, one refunded by the success: the address keeps the failed one.
    assert_eq!(failures(&env, attempt.ip_subject()).await, Some(1));
    env.teardown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lock_expires_after_the_lockout_and_the_count_restarts() {
    let (env, throttle) = setup().await;
    let attempt = Attempt::new(Some("acme"), "carol", ip("198.51.100.20"));
    for _ in 0..3 {
        assert!(granted(&throttle, &attempt).await);
    }
    let Reservation::Refused { retry_after, .. } = throttle.reserve(&attempt).await.unwrap() else {
        panic!("locked");
    };
    tokio::time::sleep(retry_after + Duration::from_millis(300)).await;
    assert!(granted(&throttle, &attempt).await);
    assert_eq!(
        failures(&env, attempt.pair_subject().expect("pair")).await,
        Some(1)
    );

    // Stale rows can be purged; live ones stay.
    let stale = Attempt::new(Some("acme"), "erin", ip("198.51.100.21"));
    assert!(granted(&throttle, &stale).await);
    sqlx::query(
        "UPDATE login_failures SET window_start = now() - interval '2 hours' WHERE subject = ANY($1)",
    )
    .bind(vec![
        stale.pair_subject().expect("pair").to_string(),
        stale.user_subject().expect("user").to_string(),
        stale.ip_subject().to_string(),
    ])
    .execute(&env.pool)
    .await
    .unwrap();
    assert_eq!(throttle.purge_stale().await.unwrap(), 3);
    assert_eq!(
        failures(&env, attempt.pair_subject().expect("pair")).await,
        Some(1)
    );
    env.teardown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_address_locks_after_four_times_the_limit_across_accounts() {
    let (env, throttle) = setup().await;
    let sprayer = ip("192.0.2.44");
    // Password spraying: one guess per account, all from one address.
    for i in 0..12 {
        let attempt = Attempt::new(Some("acme"), &format!("user{i}"), sprayer);
        assert!(granted(&throttle, &attempt).await, "attempt {i}");
    }
    let fresh = Attempt::new(Some("acme"), "fresh", sprayer);
    match throttle.reserve(&fresh).await.unwrap() {
        Reservation::Refused { reason, .. } => assert_eq!(reason, "address"),
        other => panic!("expected the address locked, got {other:?}"),
    }
    // The sprayed accounts stay usable from elsewhere.
    assert!(
        granted(
            &throttle,
            &Attempt::new(Some("acme"), "user0", ip("192.0.2.45"))
        )
        .await
    );
    // IPv6 addresses of one /64 share a counter.
    assert_eq!(
        Attempt::new(None, "x", ip("2001:db8:1:2::1")).ip_subject(),
        Attempt::new(None, "x", ip("2001:db8:1:2::beef")).ip_subject()
    );
    env.teardown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_account_attacked_from_many_addresses_backs_off_except_from_known_ones() {
    let (env, throttle) = setup().await;
    // The real user logged in from home once.
    let home = Attempt::new(Some("acme"), "grace", ip("203.0.113.77"));
    assert!(granted(&throttle, &home).await);
    throttle.succeeded(&home).await.unwrap();

    // A distributed attack: one guess from each of six addresses reaches the threshold.
    for i in 1..=6 {
        let a = Attempt::new(Some("acme"), "grace", ip(&format!("198.18.0.{i}")));
        assert!(granted(&throttle, &a).await, "guess {i}");
    }
    // A seventh address must wait out the account backoff (2^0 = 1 s after the last guess).
    let next = Attempt::new(Some("acme"), "grace", ip("198.18.0.7"));
    match throttle.reserve(&next).await.unwrap() {
        Reservation::Refused {
            retry_after,
            reason,
        } => {
            assert_eq!(reason, "account");
            assert!(retry_after <= Duration::from_secs(1), "{retry_after:?}");
        }
        other => panic!("expected the account backoff, got {other:?}"),
    }
    // The real user, from the address they used before, is not held back.
    assert!(granted(&throttle, &home).await);
    assert_eq!(throttle.user_backoff(5), Duration::ZERO);
    assert_eq!(throttle.user_backoff(6), Duration::from_secs(1));
    assert_eq!(throttle.user_backoff(8), Duration::from_secs(4));
    assert_eq!(throttle.user_backoff(40), Duration::from_secs(30));
    env.teardown().await;
}
