//! The api's background work, run by every replica: the outbox relay (sync-lane messages and
//! anything a crash left unpublished) and the dispatcher (fair release of bulk chunks).

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::{dispatch::Dispatcher, relay::Relay, state::AppState};

/// Starts the relay and the dispatcher; both stop on `shutdown`.
pub fn spawn(state: &AppState, shutdown: CancellationToken) -> JoinHandle<()> {
    let relay = Relay::new(state);
    let dispatcher = Dispatcher::new(state);
    tokio::spawn(async move {
        tokio::join!(relay.run(shutdown.clone()), dispatcher.run(shutdown));
    })
}
