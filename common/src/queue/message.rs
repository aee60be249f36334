//! What travels on the queues: one tagged, versioned enum. A message names a range of items
//! (a chunk), never the items themselves: the texts stay in Postgres.

use serde::{Deserialize, Serialize};

use crate::types::{JobId, JobKind, TenantId};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum QueueMessage {
    #[serde(rename = "chunk.v1")]
    ChunkV1(ChunkMessage),
}

/// Items `[item_start, item_end)` of a job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkMessage {
    pub job_id: JobId,
    pub tenant_id: TenantId,
    pub kind: JobKind,
    pub chunk_index: i32,
    pub item_start: i32,
    pub item_end: i32,
}

impl QueueMessage {
    /// The routing key on the jobs exchange: the job kind.
    pub fn routing_key(&self) -> &'static str {
        match self {
            QueueMessage::ChunkV1(chunk) => chunk.kind.as_str(),
        }
    }

    pub fn to_json(&self) -> Result<serde_json::Value, serde_json::Error> {
        serde_json::to_value(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_wire_format_is_tagged_and_versioned() {
        let msg = QueueMessage::ChunkV1(ChunkMessage {
            job_id: JobId::new(),
            tenant_id: TenantId::new(),
            kind: JobKind::Moderate,
            chunk_index: 3,
            item_start: 300,
            item_end: 400,
        });
        let json = msg.to_json().expect("encode");
        assert_eq!(json["type"], "chunk.v1");
        assert_eq!(json["kind"], "moderate");
        assert_eq!(json["item_end"], 400);
        let back: QueueMessage = serde_json::from_value(json).expect("decode");
        assert_eq!(back, msg);
        assert_eq!(msg.routing_key(), "moderate");
    }
}
