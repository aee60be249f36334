//! The api's background work, run by every replica: the outbox relay (sync-lane messages and
//! anything a crash left unpublished), the dispatcher (fair release of bulk chunks) and the
//! retention purge (jobs, files and audit records), and the audit rounds (checkpoints, key
//! rotation reminders).

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::{dispatch::Dispatcher, relay::Relay, retention::Purger, state::AppState};

/// Starts the relay, the dispatcher and the purge; all stop on `shutdown`.
pub fn spawn(state: &AppState, shutdown: CancellationToken) -> JoinHandle<()> {
    let relay = Relay::new(state);
    let dispatcher = Dispatcher::new(state);
    let purger = Purger::new(state);
    let audit = crate::audit::background::AuditRounds::new(state);
    tokio::spawn(async move {
        tokio::join!(
            relay.run(shutdown.clone()),
            dispatcher.run(shutdown.clone()),
            purger.run(shutdown.clone()),
            audit.run(shutdown)
        );
    })
}
