//! Reading a job's results (rendered from their compact stored form with the chunk's models
//! and the job's policy version) and its refused input lines.

use std::collections::HashMap;

use gatehouse_common::{
    db::{self, Scope},
    job::{
        ItemStatus,
        result::{ChunkModel, ItemError, ItemResult, StoredOutcome},
        store::LineError,
    },
    moderation::Policy,
    types::{JobId, TenantId},
};
use serde::{Deserialize, Serialize};
use sqlx::PgPool;

/// One line of the results stream.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ResultLine {
    pub index: i32,
    pub custom_id: Option<String>,
    pub status: ItemStatus,
    /// The item's result (moderation, translation or both; see the README).
    #[schema(value_type = Option<Object>)]
    pub result: Option<ItemResult>,
    pub error: Option<ItemError>,
}

struct StoredLine {
    item_index: i32,
    custom_id: Option<String>,
    status: String,
    chunk_index: i32,
    result: Option<Vec<u8>>,
    legacy_result: Option<serde_json::Value>,
    error: Option<serde_json::Value>,
}

/// What rendering a job's results needs: its policy version and the models of its chunks
/// (loaded as pages need them).
pub struct ResultsReader {
    pool: PgPool,
    tenant: TenantId,
    job: JobId,
    policy: Policy,
    models: HashMap<i32, Vec<ChunkModel>>,
}

impl ResultsReader {
    pub async fn new(pool: &PgPool, tenant: TenantId, job: JobId) -> Result<Self, sqlx::Error> {
        let mut tx = db::begin(pool, Scope::Tenant(tenant)).await?;
        let row = sqlx::query!(
            r#"
            SELECT j.policy_version, p.policy AS "policy?" FROM jobs j
            LEFT JOIN moderation_policies p
                   ON p.tenant_id = j.tenant_id AND p.version = j.policy_version
            WHERE j.job_id = $1
            "#,
            job.0,
        )
        .fetch_optional(&mut *tx)
        .await?;
        tx.commit().await?;
        let policy = match row.and_then(|r| r.policy) {
            Some(raw) => serde_json::from_value(raw)
                .map_err(|e| sqlx::Error::Decode(format!("stored policy: {e}").into()))?,
            _ => Policy::default(),
        };
        Ok(Self {
            pool: pool.clone(),
            tenant,
            job,
            policy,
            models: HashMap::new(),
        })
    }

    /// Finished items after `after` (exclusive), in submission order; `status` keeps only
    /// succeeded or failed ones.
    pub async fn page(
        &mut self,
        after: i32,
        limit: i64,
        status: Option<ItemStatus>,
    ) -> Result<Vec<ResultLine>, sqlx::Error> {
        let mut tx = db::begin_keyset(&self.pool, Scope::Tenant(self.tenant)).await?;
        let lines = sqlx::query_as!(
            StoredLine,
            r"
            SELECT r.item_index, i.custom_id, r.status, r.chunk_index, r.result,
                   r.legacy_result, r.error
            FROM job_results r
            JOIN job_items i ON i.job_id = r.job_id AND i.item_index = r.item_index
            WHERE r.job_id = $1 AND r.item_index > $2 AND ($4::text IS NULL OR r.status = $4)
            ORDER BY r.item_index
            LIMIT $3
            ",
            self.job.0,
            after,
            limit,
            status.map(ItemStatus::as_str),
        )
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        let chunks: Vec<i32> = lines.iter().map(|l| l.chunk_index).collect();
        self.load_models(&chunks).await?;
        lines.into_iter().map(|l| self.render(l)).collect()
    }

    /// The models of `chunks` not loaded yet.
    async fn load_models(&mut self, chunks: &[i32]) -> Result<(), sqlx::Error> {
        let mut missing: Vec<i32> = chunks
            .iter()
            .copied()
            .filter(|c| !self.models.contains_key(c))
            .collect();
        missing.sort_unstable();
        missing.dedup();
        if missing.is_empty() {
            return Ok(());
        }
        let mut tx = db::begin(&self.pool, Scope::Tenant(self.tenant)).await?;
        let rows = sqlx::query!(
            "SELECT chunk_index, models FROM job_chunks WHERE job_id = $1 AND chunk_index = ANY($2)",
            self.job.0,
            &missing,
        )
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        for row in rows {
            let models = row
                .models
                .map(serde_json::from_value::<Vec<ChunkModel>>)
                .transpose()
                .map_err(|e| sqlx::Error::Decode(format!("chunk models: {e}").into()))?
                .unwrap_or_default();
            self.models.insert(row.chunk_index, models);
        }
        Ok(())
    }

    fn render(&self, line: StoredLine) -> Result<ResultLine, sqlx::Error> {
        let decode = |e: String| sqlx::Error::Decode(e.into());
        let status: ItemStatus = line.status.parse().map_err(decode)?;
        let result = match (line.result, line.legacy_result) {
            (Some(bytes), _) => {
                let stored = StoredOutcome::decode(&bytes).map_err(|e| decode(e.to_string()))?;
                let models = self
                    .models
                    .get(&line.chunk_index)
                    .map(Vec::as_slice)
                    .unwrap_or(&[]);
                ItemResult::render(stored, models, &self.policy)
            }
            (None, Some(legacy)) => Some(ItemResult::Legacy(legacy)),
            (None, None) => None,
        };
        let error = line
            .error
            .map(serde_json::from_value::<ItemError>)
            .transpose()
            .map_err(|e| decode(e.to_string()))?;
        Ok(ResultLine {
            index: line.item_index,
            custom_id: line.custom_id,
            status,
            result,
            error,
        })
    }
}

/// Refused input lines of a job (`on_invalid: skip`) after `after` (a line number), in order.
pub async fn line_errors(
    pool: &PgPool,
    tenant: TenantId,
    job: JobId,
    after: i32,
    limit: i64,
) -> Result<Vec<LineError>, sqlx::Error> {
    let mut tx = db::begin_keyset(pool, Scope::Tenant(tenant)).await?;
    let rows = sqlx::query!(
        r"
        SELECT line_no, field, code, message FROM job_line_errors
        WHERE job_id = $1 AND line_no > $2 ORDER BY line_no LIMIT $3
        ",
        job.0,
        after,
        limit
    )
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(rows
        .into_iter()
        .map(|r| LineError {
            line: r.line_no,
            field: r.field,
            code: r.code,
            message: r.message,
        })
        .collect())
}

/// One item of a job in order, finished or not (for batch output files, which emit a line
/// only when every item of it has a result).
pub struct ItemState {
    pub index: i32,
    pub line_no: Option<i32>,
    pub custom_id: Option<String>,
    /// `None` while pending.
    pub result: Option<ResultLine>,
}

struct ItemRow {
    item_index: i32,
    line_no: Option<i32>,
    custom_id: Option<String>,
    status: Option<String>,
    chunk_index: Option<i32>,
    result: Option<Vec<u8>>,
    legacy_result: Option<serde_json::Value>,
    error: Option<serde_json::Value>,
}

impl ResultsReader {
    /// Items after `after` (exclusive) with their results where they have one.
    pub async fn items(&mut self, after: i32, limit: i64) -> Result<Vec<ItemState>, sqlx::Error> {
        let mut tx = db::begin_keyset(&self.pool, Scope::Tenant(self.tenant)).await?;
        let rows = sqlx::query_as!(
            ItemRow,
            r#"
            SELECT i.item_index, i.line_no, i.custom_id, r.status AS "status?",
                   r.chunk_index AS "chunk_index?", r.result AS "result?",
                   r.legacy_result AS "legacy_result?", r.error AS "error?"
            FROM job_items i
            LEFT JOIN job_results r ON r.job_id = i.job_id AND r.item_index = i.item_index
            WHERE i.job_id = $1 AND i.item_index > $2
            ORDER BY i.item_index
            LIMIT $3
            "#,
            self.job.0,
            after,
            limit,
        )
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        let chunks: Vec<i32> = rows.iter().filter_map(|r| r.chunk_index).collect();
        self.load_models(&chunks).await?;
        rows.into_iter()
            .map(|r| {
                let result = match (r.status, r.chunk_index) {
                    (Some(status), Some(chunk_index)) => Some(self.render(StoredLine {
                        item_index: r.item_index,
                        custom_id: r.custom_id.clone(),
                        status,
                        chunk_index,
                        result: r.result,
                        legacy_result: r.legacy_result,
                        error: r.error,
                    })?),
                    _ => None,
                };
                Ok(ItemState {
                    index: r.item_index,
                    line_no: r.line_no,
                    custom_id: r.custom_id,
                    result,
                })
            })
            .collect()
    }
}
