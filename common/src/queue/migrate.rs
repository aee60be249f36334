//! `gatehouse-api admin queues migrate`: moves an existing deployment from classic queues to
//! the quorum topology. A queue's type cannot change in place (redeclaring it with
//! `x-queue-type=quorum` fails with 406 PRECONDITION_FAILED), so each queue whose arguments
//! differ is emptied into a holding quorum queue `<name>.migrating`, deleted, declared anew
//! under its own name, and refilled. The old single delay queue `<p>.retry` is not part of
//! the new topology: its messages go straight back to `<p>.jobs` (retried now), and it and its
//! exchange are deleted.
//!
//! Every move is publish-with-confirm, then ack: a crash mid-way duplicates at most a few
//! messages (harmless: the chunk guard) and never loses one; running the command again
//! resumes (a leftover holding queue is drained into its queue). Queues with consumers are
//! refused (`if_unused`): stop the workers first. Publishers need not stop: while a work queue
//! is unbound, the dispatcher's publishes come back unroutable and it retries them later
//! (the chunks stay in Postgres).

use lapin::{
    Channel, Connection,
    options::{BasicAckOptions, BasicGetOptions, QueueDeclareOptions, QueueDeleteOptions},
    types::{AMQPValue, FieldTable},
};
use serde::Serialize;

use super::{Publisher, QueueError, Topology, topology::QueueSpec};

/// What happened to one queue.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct QueueMigration {
    pub queue: String,
    /// `current` (already as declared), `migrated` (recreated as a quorum queue), or
    /// `removed` (the old single retry queue).
    pub action: &'static str,
    /// Messages carried over into the new queue (or, for `removed`, back to `<p>.jobs`).
    pub messages: u64,
}

/// Migrates every queue of `topology`; idempotent.
pub async fn migrate(
    conn: &Connection,
    topology: &Topology,
) -> Result<Vec<QueueMigration>, QueueError> {
    let publisher = Publisher::new(conn).await?;
    let mut report = Vec::new();
    // 0. The exchanges (the same kinds as before), so probing a queue fails only on the queue.
    let ch = channel(conn).await?;
    for (name, kind) in topology.exchanges() {
        super::topology::exchange(&ch, &name, kind).await?;
    }
    // 1. Every queue whose declaration fails although it exists: empty it into its holding
    //    queue and delete it.
    for spec in topology.queues() {
        let probe = channel(conn).await?;
        let declared = spec.declare(&probe).await;
        let _ = probe.close(200, "probe".into()).await;
        if declared.is_ok() {
            continue;
        }
        if !exists(conn, &spec.name).await? {
            return declared.map(|()| Vec::new());
        }
        ensure_unused(conn, &spec.name).await?;
        let ch = channel(conn).await?;
        let _ = ch
            .queue_unbind(
                spec.name.as_str().into(),
                spec.exchange.as_str().into(),
                spec.routing_key.as_str().into(),
                FieldTable::default(),
            )
            .await;
        let ch = channel(conn).await?;
        ch.queue_declare(
            holding(&spec).as_str().into(),
            QueueDeclareOptions::durable(),
            holding_args(),
        )
        .await
        .map_err(QueueError::amqp("declare holding queue"))?;
        drain(&ch, &publisher, &spec.name, |_| ("", holding(&spec))).await?;
        delete(conn, &ch, &spec.name).await?;
        tracing::info!(queue = %spec.name, "classic queue emptied into its holding queue and deleted");
    }
    // 2. The new topology, then every holding queue back into its queue.
    let ch = channel(conn).await?;
    topology.declare(&ch).await?;
    for spec in topology.queues() {
        let hold = holding(&spec);
        if !exists(conn, &hold).await? {
            report.push(QueueMigration {
                queue: spec.name,
                action: "current",
                messages: 0,
            });
            continue;
        }
        let ch = channel(conn).await?;
        let moved = drain(&ch, &publisher, &hold, |_| ("", spec.name.clone())).await?;
        delete(conn, &ch, &hold).await?;
        report.push(QueueMigration {
            queue: spec.name,
            action: "migrated",
            messages: moved,
        });
    }
    // 3. The old single delay queue: its messages retried now.
    let legacy = format!("{}.retry", topology.prefix());
    if exists(conn, &legacy).await? {
        let ch = channel(conn).await?;
        let jobs = topology.jobs_exchange();
        let moved = drain(&ch, &publisher, &legacy, |key| {
            (jobs.as_str(), key.to_string())
        })
        .await?;
        delete(conn, &ch, &legacy).await?;
        ch.exchange_delete(legacy.as_str().into(), Default::default())
            .await
            .map_err(QueueError::amqp("delete the old retry exchange"))?;
        report.push(QueueMigration {
            queue: legacy,
            action: "removed",
            messages: moved,
        });
    }
    let _ = publisher.channel().close(200, "migrated".into()).await;
    Ok(report)
}

fn holding(spec: &QueueSpec) -> String {
    format!("{}.migrating", spec.name)
}

/// A plain quorum queue: no TTL, no dead-lettering, nothing expires while it waits.
fn holding_args() -> FieldTable {
    let mut args = FieldTable::default();
    args.insert(
        "x-queue-type".into(),
        AMQPValue::LongString("quorum".into()),
    );
    args
}

async fn channel(conn: &Connection) -> Result<Channel, QueueError> {
    conn.create_channel()
        .await
        .map_err(QueueError::amqp("open channel"))
}

/// Whether `queue` exists (a passive declare on a throwaway channel: a 404 closes it).
async fn exists(conn: &Connection, queue: &str) -> Result<bool, QueueError> {
    let ch = channel(conn).await?;
    let found = ch
        .queue_declare(
            queue.into(),
            QueueDeclareOptions {
                passive: true,
                ..QueueDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await
        .is_ok();
    if found {
        let _ = ch.close(200, "probe".into()).await;
    }
    Ok(found)
}

/// Moves every message of `from` to `to(routing key)` = (exchange, routing key), keeping its
/// properties and headers: publish (confirmed), then ack. Returns how many moved.
async fn drain<'a>(
    ch: &Channel,
    publisher: &Publisher,
    from: &str,
    to: impl Fn(&str) -> (&'a str, String),
) -> Result<u64, QueueError> {
    let mut moved = 0;
    while let Some(got) = ch
        .basic_get(from.into(), BasicGetOptions { no_ack: false })
        .await
        .map_err(QueueError::amqp("get"))?
    {
        let delivery = got.delivery;
        let (exchange, key) = to(delivery.routing_key.as_str());
        publisher
            .publish_properties(exchange, &key, &delivery.data, delivery.properties.clone())
            .await?;
        delivery
            .ack(BasicAckOptions::default())
            .await
            .map_err(QueueError::amqp("ack"))?;
        moved += 1;
    }
    Ok(moved)
}

/// Deletes `queue`, refusing while it has consumers (stop the workers first). Checked by
/// hand: quorum queues do not support `if_unused`.
async fn delete(conn: &Connection, ch: &Channel, queue: &str) -> Result<(), QueueError> {
    ensure_unused(conn, queue).await?;
    ch.queue_delete(queue.into(), QueueDeleteOptions::default())
        .await
        .map_err(QueueError::amqp("delete queue"))?;
    Ok(())
}

async fn ensure_unused(conn: &Connection, queue: &str) -> Result<(), QueueError> {
    let probe = channel(conn).await?;
    let consumers = probe
        .queue_declare(
            queue.into(),
            QueueDeclareOptions {
                passive: true,
                ..QueueDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await
        .map_err(QueueError::amqp("inspect queue"))?
        .consumer_count();
    let _ = probe.close(200, "probe".into()).await;
    if consumers > 0 {
        return Err(QueueError::InUse {
            queue: queue.to_string(),
            consumers,
        });
    }
    Ok(())
}
