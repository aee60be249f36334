//! Verifying a chain: walk its records in sequence order, a page at a time (constant
//! memory), and check that each record's number follows the previous one (no gap: nothing
//! deleted or reordered), that it names the previous record's hash, and that its hash is
//! SHA-256(previous hash ‖ canonical content) — the content recomputed from the stored
//! columns by `gatehouse_audit_canonical`. The walk starts at the newest `anchor` checkpoint
//! (the purge's new start) or at record 1. Every checkpoint's signature is checked, and each
//! must match the record at its number (a rewritten chain, or a deleted tail, cannot).

use std::collections::BTreeMap;

use gatehouse_common::{
    db::{self, Scope},
    types::TenantId,
};
use serde::Serialize;
use sha2::{Digest as _, Sha256};
use sqlx::PgPool;

use super::{checkpoints, signing};

const PAGE: i64 = 1000;

/// The first problem found.
#[derive(Debug, Clone, Serialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct Broken {
    /// The sequence number where the chain breaks.
    pub seq: i64,
    /// The record found there (`None`: missing).
    pub audit_id: Option<i64>,
    /// `gap`, `prev_hash_mismatch`, `hash_mismatch`, `checkpoint_signature_invalid`,
    /// `checkpoint_mismatch`, `truncated`.
    pub reason: &'static str,
}

/// What a walk found.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Report {
    /// `ten_…`, or `null` for the platform's own chain.
    pub tenant: Option<TenantId>,
    pub ok: bool,
    pub records: u64,
    /// The first number walked (after the anchor), and the last.
    pub first_seq: Option<i64>,
    pub last_seq: Option<i64>,
    pub checkpoints: u64,
    pub broken: Option<Broken>,
}

struct Record {
    audit_id: i64,
    seq: i64,
    prev_hash: Option<Vec<u8>>,
    hash: Vec<u8>,
    canonical: String,
}

fn break_at(seq: i64, audit_id: Option<i64>, reason: &'static str) -> Option<Broken> {
    Some(Broken {
        seq,
        audit_id,
        reason,
    })
}

/// Verifies one chain (`tenant` `None`: the platform's).
pub async fn verify(pool: &PgPool, tenant: Option<TenantId>) -> Result<Report, sqlx::Error> {
    let scope = tenant.map_or(Scope::Platform, Scope::Tenant);
    let mut tx = db::begin(pool, scope).await?;
    let keys = signing::public_keys(&mut tx).await?;
    let mut all = Vec::new();
    let mut after = 0;
    loop {
        let page = checkpoints::rows(&mut tx, tenant, after, PAGE).await?;
        let Some(last) = page.last() else { break };
        after = last.checkpoint_id;
        all.extend(page);
    }
    let mut report = Report {
        tenant,
        ok: true,
        records: 0,
        first_seq: None,
        last_seq: None,
        checkpoints: all.len() as u64,
        broken: None,
    };
    // Signatures first: a forged checkpoint says nothing.
    for c in &all {
        let valid = keys
            .iter()
            .find(|(id, _)| *id == c.key_id)
            .is_some_and(|(_, public)| signing::verify(&c.statement(tenant), public, &c.signature));
        if !valid {
            report.broken = break_at(c.seq, None, "checkpoint_signature_invalid");
            report.ok = false;
            return Ok(report);
        }
    }
    let anchor = all
        .iter()
        .filter(|c| c.kind == "anchor")
        .max_by_key(|c| c.seq);
    let (start, mut prev) = match anchor {
        Some(a) => (a.seq, a.head_hash.clone()),
        None => (0, None),
    };
    // The head each checkpoint names, by number (later ones win: the same head twice).
    let mut expected: BTreeMap<i64, Option<Vec<u8>>> = all
        .iter()
        .filter(|c| c.seq > start)
        .map(|c| (c.seq, c.head_hash.clone()))
        .collect();
    let mut next = start + 1;
    loop {
        let page = sqlx::query_as!(
            Record,
            r#"
            SELECT a.audit_id, a.seq, a.prev_hash, a.hash,
                   gatehouse_audit_canonical(a) AS "canonical!"
            FROM audit_events a
            WHERE a.tenant_id IS NOT DISTINCT FROM $1 AND a.seq >= $2
            ORDER BY a.seq LIMIT $3
            "#,
            tenant.map(|t| t.0),
            next,
            PAGE,
        )
        .fetch_all(&mut *tx)
        .await?;
        let done = (page.len() as i64) < PAGE;
        for r in page {
            report.first_seq.get_or_insert(r.seq);
            let broken = if r.seq != next {
                break_at(next, None, "gap")
            } else if r.prev_hash != prev {
                break_at(r.seq, Some(r.audit_id), "prev_hash_mismatch")
            } else if hash(prev.as_deref(), &r.canonical) != r.hash {
                break_at(r.seq, Some(r.audit_id), "hash_mismatch")
            } else if expected
                .remove(&r.seq)
                .is_some_and(|h| h.as_deref() != Some(r.hash.as_slice()))
            {
                break_at(r.seq, Some(r.audit_id), "checkpoint_mismatch")
            } else {
                None
            };
            if broken.is_some() {
                report.broken = broken;
                report.ok = false;
                tx.commit().await?;
                return Ok(report);
            }
            report.records += 1;
            report.last_seq = Some(r.seq);
            prev = Some(r.hash);
            next = r.seq + 1;
        }
        if done {
            break;
        }
    }
    // A checkpoint (or the chain's head) beyond the last record: the tail was deleted.
    let head = sqlx::query_scalar!(
        "SELECT seq FROM audit_chain_heads WHERE chain_id = $1",
        tenant.map_or(uuid::Uuid::nil(), |t| t.0),
    )
    .fetch_optional(&mut *tx)
    .await?
    .unwrap_or(0);
    if !expected.is_empty() || head >= next {
        report.broken = break_at(next, None, "truncated");
        report.ok = false;
    }
    tx.commit().await?;
    Ok(report)
}

/// Every chain with records or checkpoints (the platform's as `None`).
pub async fn chains(pool: &PgPool) -> Result<Vec<Option<TenantId>>, sqlx::Error> {
    let mut tx = db::begin(pool, Scope::Platform).await?;
    let ids = sqlx::query_scalar!("SELECT chain_id FROM audit_chain_heads ORDER BY chain_id")
        .fetch_all(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(ids
        .into_iter()
        .map(|id| (!id.is_nil()).then_some(TenantId(id)))
        .collect())
}

/// SHA-256(previous hash ‖ canonical content), as the insert trigger computes it.
pub fn hash(prev: Option<&[u8]>, canonical: &str) -> Vec<u8> {
    let mut h = Sha256::new();
    h.update(prev.unwrap_or_default());
    h.update(canonical.as_bytes());
    h.finalize().to_vec()
}
