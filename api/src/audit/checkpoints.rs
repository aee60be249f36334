//! Signed checkpoints: every `GATEHOUSE_AUDIT_CHECKPOINT_INTERVAL_SECS` one replica (an
//! advisory lock) signs the head (sequence number and hash) of every chain that moved since
//! its last checkpoint. Tenants fetch them with `GET /v1/audit/checkpoints` and keep them:
//! a later rewrite of the chain cannot match a checkpoint they hold.

use chrono::{DateTime, SubsecRound as _, Utc};
use gatehouse_common::{
    db::{self, Scope},
    types::TenantId,
};
use serde::Serialize;
use sqlx::PgPool;

use super::signing::{self, CheckpointSigner, SignError, Statement};

/// `pg_try_advisory_xact_lock` key of the checkpoint round ("gh-audc").
const ROUND_LOCK: i64 = 0x0067_682d_6175_6463;

/// Writes a checkpoint of `statement` in `tx`; its id.
pub async fn insert(
    tx: &mut sqlx::PgConnection,
    signer: &CheckpointSigner,
    statement: &Statement,
) -> Result<i64, SignError> {
    let (key_id, signature) = signer.sign(statement).await?;
    let id = sqlx::query_scalar!(
        "INSERT INTO audit_checkpoints (tenant_id, seq, head_hash, kind, key_id, signature, created_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING checkpoint_id",
        statement.tenant.map(|t| t.0),
        statement.seq,
        statement.head.as_deref(),
        statement.kind,
        key_id,
        signature,
        statement.at,
    )
    .fetch_one(tx)
    .await?;
    Ok(id)
}

/// One round: a periodic checkpoint of every chain whose head moved. How many were written
/// (`None`: another replica holds the round).
pub async fn checkpoint_heads(
    pool: &PgPool,
    signer: &CheckpointSigner,
    now: DateTime<Utc>,
) -> Result<Option<u64>, SignError> {
    let mut tx = db::begin(pool, Scope::Platform).await?;
    let locked = sqlx::query_scalar!(
        r#"SELECT pg_try_advisory_xact_lock($1) AS "l!""#,
        ROUND_LOCK
    )
    .fetch_one(&mut *tx)
    .await?;
    if !locked {
        return Ok(None);
    }
    let heads = sqlx::query!(
        r#"
        SELECT h.chain_id, h.seq, h.hash
        FROM audit_chain_heads h
        WHERE h.seq > coalesce((
            SELECT max(c.seq) FROM audit_checkpoints c
            WHERE c.tenant_id IS NOT DISTINCT FROM nullif(h.chain_id, '00000000-0000-0000-0000-000000000000'::uuid)
        ), 0)
        "#
    )
    .fetch_all(&mut *tx)
    .await?;
    let at = now.trunc_subsecs(0);
    for head in &heads {
        let tenant = (!head.chain_id.is_nil()).then_some(TenantId(head.chain_id));
        let statement = Statement {
            tenant,
            seq: head.seq,
            head: head.hash.clone(),
            kind: "periodic",
            at,
        };
        insert(&mut tx, signer, &statement).await?;
    }
    tx.commit().await?;
    if !heads.is_empty() {
        metrics::counter!("gatehouse_api_audit_checkpoints_total").increment(heads.len() as u64);
    }
    Ok(Some(heads.len() as u64))
}

/// One checkpoint as `GET /v1/audit/checkpoints` shows it: everything needed to check it
/// with any Ed25519 library (the signed `message`, the `public_key`).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct CheckpointView {
    pub id: i64,
    pub seq: i64,
    /// Hex SHA-256 of record `seq` (`null`: an empty chain).
    pub head_hash: Option<String>,
    pub kind: String,
    pub key_id: String,
    /// Base64 (standard) of the raw 32-byte Ed25519 public key.
    pub public_key: Option<String>,
    /// Base64 (standard) of the 64-byte signature over `message`.
    pub signature: String,
    pub message: String,
    pub created_at: DateTime<Utc>,
}

/// A stored checkpoint.
pub struct Row {
    pub checkpoint_id: i64,
    pub seq: i64,
    pub head_hash: Option<Vec<u8>>,
    pub kind: String,
    pub key_id: String,
    pub signature: Vec<u8>,
    pub created_at: DateTime<Utc>,
}

impl Row {
    pub fn statement(&self, tenant: Option<TenantId>) -> Statement {
        Statement {
            tenant,
            seq: self.seq,
            head: self.head_hash.clone(),
            kind: if self.kind == "anchor" {
                "anchor"
            } else {
                "periodic"
            },
            at: self.created_at,
        }
    }
}

/// The chain's checkpoints after `after`, oldest first (`tenant` `None`: the platform's).
pub async fn rows(
    tx: &mut sqlx::PgConnection,
    tenant: Option<TenantId>,
    after: i64,
    limit: i64,
) -> Result<Vec<Row>, sqlx::Error> {
    sqlx::query_as!(
        Row,
        "SELECT checkpoint_id, seq, head_hash, kind, key_id, signature, created_at
         FROM audit_checkpoints
         WHERE tenant_id IS NOT DISTINCT FROM $1 AND checkpoint_id > $2
         ORDER BY checkpoint_id LIMIT $3",
        tenant.map(|t| t.0),
        after,
        limit,
    )
    .fetch_all(tx)
    .await
}

/// A page of the tenant's checkpoints, for the API.
pub async fn list(
    pool: &PgPool,
    tenant: TenantId,
    after: Option<i64>,
    limit: i64,
) -> Result<Vec<CheckpointView>, sqlx::Error> {
    use base64::{Engine as _, engine::general_purpose::STANDARD};
    let mut tx = db::begin(pool, Scope::Tenant(tenant)).await?;
    let rows = rows(&mut tx, Some(tenant), after.unwrap_or(0), limit).await?;
    let keys = signing::public_keys(&mut tx).await?;
    tx.commit().await?;
    Ok(rows
        .into_iter()
        .map(|r| CheckpointView {
            id: r.checkpoint_id,
            seq: r.seq,
            head_hash: r.head_hash.as_deref().map(hex::encode),
            message: r.statement(Some(tenant)).message(),
            public_key: keys
                .iter()
                .find(|(id, _)| *id == r.key_id)
                .map(|(_, k)| STANDARD.encode(k)),
            signature: STANDARD.encode(&r.signature),
            kind: r.kind,
            key_id: r.key_id,
            created_at: r.created_at,
        })
        .collect())
}
