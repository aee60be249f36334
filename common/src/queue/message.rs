//! What travels on the queues: one tagged, versioned enum. A message names a range of items
//! (a chunk), never the items themselves: the texts stay in Postgres.

use serde::{Deserialize, Serialize};

use crate::{
    job::Lane,
    types::{JobId, JobKind, TenantId},
};

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
    /// `sync` chunks travel in the priority queues; absent (older messages) = `bulk`.
    #[serde(default)]
    pub lane: Lane,
}

impl QueueMessage {
    /// The routing key on the jobs exchange: the job kind, `.sync` for the priority lane.
    pub fn routing_key(&self) -> String {
        match self {
            QueueMessage::ChunkV1(chunk) => routing_key(chunk.kind, chunk.lane),
        }
    }

    pub fn to_json(&self) -> Result<serde_json::Value, serde_json::Error> {
        serde_json::to_value(self)
    }
}

/// `moderate`, `moderate.sync`, ...
pub fn routing_key(kind: JobKind, lane: Lane) -> String {
    match lane {
        Lane::Bulk => kind.as_str().to_string(),
        Lane::Sync => format!("{}.sync", kind.as_str()),
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
            lane: Lane::Bulk,
        });
        let json = msg.to_json().expect("encode");
        assert_eq!(json["type"], "chunk.v1");
        assert_eq!(json["kind"], "moderate");
        assert_eq!(json["item_end"], 400);
        let back: QueueMessage = serde_json::from_value(json.clone()).expect("decode");
        assert_eq!(back, msg);
        assert_eq!(msg.routing_key(), "moderate");
        // Messages from before the lanes read as bulk.
        let mut old = json.clone();
        old.as_object_mut().expect("object").remove("lane");
        let back: QueueMessage = serde_json::from_value(old).expect("old message");
        assert_eq!(back, msg);
    }
}
