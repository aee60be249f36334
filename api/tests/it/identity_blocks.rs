//! Identity building blocks against real Postgres: login throttling shared through
//! `login_failures` (limit 3 per user, 12 per IP, 2 s lockout and window).

use std::{net::IpAddr, time::Duration};

use futures_util::future::join_all;
use gatehouse_api::identity::throttle::{LoginThrottle, ip_subject, user_subject};
use gatehouse_common::testkit::TestEnv;

const LOCKOUT: Duration = Duration::from_secs(2);

async fn setup() -> (TestEnv, LoginThrottle) {
    let env = TestEnv::new(&[
        ("GATEHOUSE_LOGIN_MAX_FAILURES", "3"),
        ("GATEHOUSE_LOGIN_LOCKOUT_SECS", "2"),
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn locks_after_max_failures_not_before() {
    let (env, throttle) = setup().await;
    let user = user_subject("acme", "Alice");
    let addr = ip_subject(ip("198.51.100.7"));
    let both = [user.clone(), addr.clone()];

    assert_eq!(throttle.check(&both).await.unwrap(), None);
    for _ in 0..2 {
        throttle.record_failure(&both).await.unwrap();
        assert_eq!(throttle.check(&both).await.unwrap(), None);
    }
    throttle.record_failure(&both).await.unwrap();
    let retry = throttle
        .check(&both)
        .await
        .unwrap()
        .expect("locked after 3 failures");
    assert!(retry > Duration::ZERO && retry <= LOCKOUT, "{retry:?}");
    // The user is locked whatever the address or the username's case…
    assert!(
        throttle
            .check(&[user_subject("acme", "ALICE")])
            .await
            .unwrap()
            .is_some()
    );
    // …but the address is not (its limit is 12), nor the same name in another tenant.
    assert_eq!(
        throttle.check(std::slice::from_ref(&addr)).await.unwrap(),
        None
    );
    assert_eq!(
        throttle
            .check(&[user_subject("other", "alice")])
            .await
            .unwrap(),
        None
    );
    assert_eq!(throttle.check(&[]).await.unwrap(), None);
    env.teardown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn success_resets_the_user_but_not_the_ip() {
    let (env, throttle) = setup().await;
    let user = user_subject("acme", "bob");
    let addr = ip_subject(ip("203.0.113.5"));
    let both = [user.clone(), addr.clone()];

    throttle.record_failure(&both).await.unwrap();
    throttle.record_failure(&both).await.unwrap();
    throttle.record_success(&user).await.unwrap();
    assert_eq!(failures(&env, &user).await, None);
    assert_eq!(failures(&env, &addr).await, Some(2));

    // Two more failures: the user is at 2 (not locked), the address at 4.
    throttle.record_failure(&both).await.unwrap();
    throttle.record_failure(&both).await.unwrap();
    assert_eq!(throttle.check(&both).await.unwrap(), None);
    assert_eq!(failures(&env, &user).await, Some(2));
    assert_eq!(failures(&env, &addr).await, Some(4));
    env.teardown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lock_expires_after_the_lockout() {
    let (env, throttle) = setup().await;
    let user = vec![user_subject("acme", "carol")];
    for _ in 0..3 {
        throttle.record_failure(&user).await.unwrap();
    }
    let retry = throttle.check(&user).await.unwrap().expect("locked");
    tokio::time::sleep(retry + Duration::from_millis(200)).await;
    assert_eq!(throttle.check(&user).await.unwrap(), None);

    // The window is over too: the next failure starts a new count instead of re-locking.
    throttle.record_failure(&user).await.unwrap();
    assert_eq!(throttle.check(&user).await.unwrap(), None);
    assert_eq!(failures(&env, &user[0]).await, Some(1));
    throttle.record_failure(&user).await.unwrap();
    throttle.record_failure(&user).await.unwrap();
    assert!(throttle.check(&user).await.unwrap().is_some());
    env.teardown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_outside_the_window_restart_the_count() {
    let (env, throttle) = setup().await;
    let user = vec![user_subject("acme", "dave")];
    throttle.record_failure(&user).await.unwrap();
    throttle.record_failure(&user).await.unwrap();
    tokio::time::sleep(LOCKOUT + Duration::from_millis(200)).await;
    throttle.record_failure(&user).await.unwrap();
    assert_eq!(failures(&env, &user[0]).await, Some(1));
    assert_eq!(throttle.check(&user).await.unwrap(), None);

    // Stale rows can be purged; live ones stay.
    let stale = vec![user_subject("acme", "erin")];
    throttle.record_failure(&stale).await.unwrap();
    sqlx::query(
        "UPDATE login_failures SET window_start = now() - interval '1 hour' WHERE subject = $1",
    )
    .bind(&stale[0])
    .execute(&env.pool)
    .await
    .unwrap();
    assert_eq!(throttle.purge_stale().await.unwrap(), 1);
    assert_eq!(failures(&env, &stale[0]).await, None);
    assert_eq!(failures(&env, &user[0]).await, Some(1));
    env.teardown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ip_locks_after_four_times_the_limit_across_usernames() {
    let (env, throttle) = setup().await;
    let addr = ip_subject(ip("192.0.2.44"));
    // Password spraying: one guess per account, all from one address.
    for i in 0..11 {
        throttle
            .record_failure(&[user_subject("acme", &format!("user{i}")), addr.clone()])
            .await
            .unwrap();
    }
    assert_eq!(
        throttle.check(std::slice::from_ref(&addr)).await.unwrap(),
        None
    );
    throttle
        .record_failure(&[user_subject("acme", "user11"), addr.clone()])
        .await
        .unwrap();
    assert!(
        throttle
            .check(std::slice::from_ref(&addr))
            .await
            .unwrap()
            .is_some()
    );
    // Any login from that address is refused, even for an account never tried…
    assert!(
        throttle
            .check(&[user_subject("acme", "fresh"), addr.clone()])
            .await
            .unwrap()
            .is_some()
    );
    // …while the sprayed accounts stay usable from elsewhere.
    let elsewhere = ip_subject(ip("192.0.2.45"));
    assert_eq!(
        throttle
            .check(&[user_subject("acme", "user0"), elsewhere])
            .await
            .unwrap(),
        None
    );
    // IPv6 addresses of one /64 share a counter.
    assert_eq!(
        ip_subject(ip("2001:db8:1:2::1")),
        ip_subject(ip("2001:db8:1:2::beef"))
    );
    env.teardown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_failures_count_exactly() {
    let (env, throttle) = setup().await;
    let user = user_subject("acme", "frank");
    let addr = ip_subject(ip("198.51.100.99"));
    let both = vec![user.clone(), addr.clone()];
    let results = join_all((0..10).map(|_| {
        let throttle = throttle.clone();
        let both = both.clone();
        tokio::spawn(async move { throttle.record_failure(&both).await })
    }))
    .await;
    for r in results {
        r.expect("task").expect("record_failure");
    }
    assert_eq!(failures(&env, &user).await, Some(10));
    assert_eq!(failures(&env, &addr).await, Some(10));
    // 10 ≥ 3: user locked; 10 < 12: address not.
    assert!(
        throttle
            .check(std::slice::from_ref(&user))
            .await
            .unwrap()
            .is_some()
    );
    assert_eq!(
        throttle.check(std::slice::from_ref(&addr)).await.unwrap(),
        None
    );
    env.teardown().await;
}
