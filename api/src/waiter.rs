//! Waiting for jobs to finish without polling: one `LISTEN gatehouse_job_done` connection per
//! api process (workers `NOTIFY` in the transaction that finishes a job), fanned out to the
//! requests waiting on a broadcast channel.

use std::{sync::Arc, time::Duration};

use gatehouse_common::db::{CHUNK_DONE_CHANNEL, JOB_DONE_CHANNEL};
use sqlx::postgres::PgListener;
use tokio::sync::Notify;
use tokio::sync::broadcast;
use uuid::Uuid;

#[derive(Clone)]
pub struct JobWaiter {
    tx: Arc<broadcast::Sender<Uuid>>,
}

impl JobWaiter {
    /// Starts listening on `database_url`; the listener stops once every waiter is dropped.
    /// Finished chunks wake `chunk_done` (the dispatcher).
    pub fn start(database_url: String, chunk_done: Arc<Notify>) -> Self {
        let (tx, _) = broadcast::channel(1024);
        let tx = Arc::new(tx);
        let weak = Arc::downgrade(&tx);
        tokio::spawn(async move {
            let mut backoff = Duration::from_millis(200);
            loop {
                if weak.strong_count() == 0 {
                    return;
                }
                match listen(&database_url, &weak, &chunk_done).await {
                    Ok(()) => return,
                    Err(error) => {
                        tracing::warn!(%error, "job notifications listener failed; reconnecting");
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(Duration::from_secs(10));
                    }
                }
            }
        });
        Self { tx }
    }

    /// Subscribe *before* checking the job, so no notification can slip between the two.
    pub fn subscribe(&self) -> broadcast::Receiver<Uuid> {
        self.tx.subscribe()
    }
}

async fn listen(
    url: &str,
    tx: &std::sync::Weak<broadcast::Sender<Uuid>>,
    chunk_done: &Notify,
) -> Result<(), sqlx::Error> {
    let mut listener = PgListener::connect(url).await?;
    listener
        .listen_all([JOB_DONE_CHANNEL, CHUNK_DONE_CHANNEL])
        .await?;
    loop {
        let notification = listener.recv().await?;
        if notification.channel() == CHUNK_DONE_CHANNEL {
            chunk_done.notify_one();
            continue;
        }
        let Some(tx) = tx.upgrade() else {
            return Ok(());
        };
        if let Ok(id) = Uuid::try_parse(notification.payload()) {
            let _ = tx.send(id);
        }
    }
}
