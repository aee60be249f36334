//! Connecting to RabbitMQ and publishing with publisher confirms.

use lapin::{
    BasicProperties, Channel, Confirmation, Connection, ConnectionProperties,
    options::{BasicPublishOptions, ConfirmSelectOptions},
    types::FieldTable,
};

use super::QueueError;

pub async fn connect(url: &str, name: &str) -> Result<Connection, QueueError> {
    let props = ConnectionProperties::default().with_connection_name(name.into());
    Connection::connect(url, props)
        .await
        .map_err(QueueError::amqp("connect"))
}

/// A channel in confirm mode. Each `publish` returns only once the broker has taken
/// responsibility for the message (persisted for durable queues), or fails.
#[derive(Clone)]
pub struct Publisher {
    channel: Channel,
}

impl Publisher {
    pub async fn new(connection: &Connection) -> Result<Self, QueueError> {
        let channel = connection
            .create_channel()
            .await
            .map_err(QueueError::amqp("open publisher channel"))?;
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await
            .map_err(QueueError::amqp("enable publisher confirms"))?;
        Ok(Self { channel })
    }

    pub fn channel(&self) -> &Channel {
        &self.channel
    }

    pub fn is_usable(&self) -> bool {
        self.channel.status().connected()
    }

    /// Publishes a persistent, mandatory message and waits for its confirm.
    pub async fn publish(
        &self,
        exchange: &str,
        routing_key: &str,
        payload: &[u8],
        headers: FieldTable,
    ) -> Result<(), QueueError> {
        self.publish_expiring(exchange, routing_key, payload, headers, None)
            .await
    }

    /// [`Publisher::publish`] with a per-message TTL (`expiration`), for the delay queues.
    pub async fn publish_expiring(
        &self,
        exchange: &str,
        routing_key: &str,
        payload: &[u8],
        headers: FieldTable,
        expiration: Option<std::time::Duration>,
    ) -> Result<(), QueueError> {
        let mut properties = BasicProperties::default()
            .with_delivery_mode(2)
            .with_content_type("application/json".into())
            .with_headers(headers);
        if let Some(ttl) = expiration {
            properties = properties.with_expiration(ttl.as_millis().to_string().into());
        }
        self.publish_properties(exchange, routing_key, payload, properties)
            .await
    }

    /// Publishes `payload` with exactly `properties` (mandatory), waiting for the confirm.
    pub async fn publish_properties(
        &self,
        exchange: &str,
        routing_key: &str,
        payload: &[u8],
        properties: BasicProperties,
    ) -> Result<(), QueueError> {
        let confirm = self
            .channel
            .basic_publish(
                exchange.into(),
                routing_key.into(),
                BasicPublishOptions {
                    mandatory: true,
                    ..BasicPublishOptions::default()
                },
                payload,
                properties,
            )
            .await
            .map_err(QueueError::amqp("publish"))?
            .await
            .map_err(QueueError::amqp("await publisher confirm"))?;
        match confirm {
            Confirmation::Ack(None) => Ok(()),
            Confirmation::Ack(Some(_)) => Err(QueueError::Unroutable),
            Confirmation::Nack(_) => Err(QueueError::Nacked),
            Confirmation::NotRequested => Ok(()),
        }
    }
}

/// A lazily (re)connected publishing connection with the topology declared, shared by the
/// api's outbox relay and its readiness check.
pub struct Broker {
    url: String,
    name: String,
    topology: super::Topology,
    inner: tokio::sync::Mutex<Option<(Connection, Publisher)>>,
}

impl Broker {
    pub fn new(url: &str, name: &str, topology: super::Topology) -> Self {
        Self {
            url: url.to_string(),
            name: name.to_string(),
            topology,
            inner: tokio::sync::Mutex::new(None),
        }
    }

    pub fn topology(&self) -> &super::Topology {
        &self.topology
    }

    /// A usable publisher, connecting (and declaring the topology) when needed.
    pub async fn publisher(&self) -> Result<Publisher, QueueError> {
        let mut guard = self.inner.lock().await;
        if let Some((conn, publisher)) = guard.as_ref()
            && conn.status().connected()
            && publisher.is_usable()
        {
            return Ok(publisher.clone());
        }
        if let Some((conn, _)) = guard.take() {
            let _ = conn.close(200, "reconnecting".into()).await;
        }
        let connect = async {
            let conn = connect(&self.url, &self.name).await?;
            let publisher = Publisher::new(&conn).await?;
            self.topology.declare(publisher.channel()).await?;
            Ok::<_, QueueError>((conn, publisher))
        };
        let (conn, publisher) = tokio::time::timeout(std::time::Duration::from_secs(10), connect)
            .await
            .map_err(|_| QueueError::Timeout)??;
        *guard = Some((conn, publisher.clone()));
        Ok(publisher)
    }

    /// Forgets the current connection after an error; the next call reconnects.
    pub async fn reset(&self) {
        if let Some((conn, _)) = self.inner.lock().await.take() {
            let _ = conn.close(200, "reset".into()).await;
        }
    }

    pub async fn close(&self) {
        self.reset().await;
    }
}
