//! **Test-only** fault injection: named crash points, compiled in but inert unless
//! `GATEHOUSE_FAULT_INJECT` lists them (`loadtest/chaos` uses it to kill the api exactly
//! between a commit and the publish that should follow it). Never set it in production: a
//! listed point aborts the process (as `kill -9` would: no destructors, nothing flushed).

use crate::config::Config;

/// After the submit transaction committed (jobs, items, chunks), before the 202 and before
/// any chunk is published: the dispatcher of a restarted api must release them.
pub const API_AFTER_COMMIT: &str = "api-after-commit";
/// After the dispatcher's publishes were confirmed, before `released_at` is stamped: the
/// restarted dispatcher publishes them again (the chunk guard absorbs the duplicates).
pub const DISPATCH_AFTER_PUBLISH: &str = "dispatch-after-publish";

/// Every point there is (a listed name not here is a configuration error).
pub const POINTS: [&str; 2] = [API_AFTER_COMMIT, DISPATCH_AFTER_PUBLISH];

/// Aborts the process if `point` is listed in `GATEHOUSE_FAULT_INJECT`.
pub fn point(config: &Config, point: &'static str) {
    if config.delivery.fault_inject.iter().any(|p| p == point) {
        eprintln!("GATEHOUSE_FAULT_INJECT: aborting at `{point}` (test-only fault injection)");
        std::process::abort();
    }
}
