use sqlx::PgPool;

use crate::{
    db::{self, Scope},
    job::options::JobOptions,
    queue::ChunkMessage,
    types::JobKind,
};

/// A chunk a worker has taken: its attempt counter already bumped (and committed, so a
/// worker that crashes on a poison message still counts towards the bound), with everything
/// needed to process it.
#[derive(Debug, Clone)]
pub struct Claim {
    pub attempts: i32,
    /// The previous attempt's error, if it failed.
    pub last_error: Option<String>,
    /// The job's options; `Err` (permanent: retrying cannot help) when the stored options do
    /// not parse.
    pub options: Result<JobOptions, String>,
    /// The moderation policy version the job was accepted under (0 = built-in default).
    pub policy_version: i32,
    /// That version's policy, unless it is 0 or the caller said it has it cached.
    pub policy: Option<serde_json::Value>,
    /// `(index, text)` of the chunk's items without a result, in order.
    pub items: Vec<(i32, String)>,
    /// This claim started the job (`queued` → `running`): `waited` is then its queue wait.
    pub started_job: bool,
    /// Accepted → now, for the queue-wait histogram.
    pub waited: std::time::Duration,
}

struct ClaimRow {
    attempts: i32,
    last_error: Option<String>,
    kind: String,
    options: serde_json::Value,
    policy_version: i32,
    policy: Option<serde_json::Value>,
    indexes: Vec<i32>,
    texts: Vec<String>,
    started: i64,
    waited_ms: f64,
}

/// Claims a pending chunk in one statement: bumps its attempts, marks the job running, and
/// returns its pending items, the job's options and (unless `cached_policies` holds its
/// version) the job's policy. `None`: the chunk is already done (a redelivery) or unknown.
pub async fn claim(
    pool: &PgPool,
    chunk: &ChunkMessage,
    cached_policies: &[i32],
) -> Result<Option<Claim>, sqlx::Error> {
    let mut tx = db::begin_point_lookups(pool, Scope::Tenant(chunk.tenant_id)).await?;
    let row = sqlx::query_as!(
        ClaimRow,
        r#"
        WITH claimed AS (
            UPDATE job_chunks SET attempts = attempts + 1, last_attempt_at = now()
            WHERE job_id = $1 AND chunk_index = $2 AND status = 'pending'
            RETURNING attempts, last_error, item_start, item_end
        ), started AS (
            UPDATE jobs SET status = 'running', started_at = coalesce(started_at, now())
            WHERE job_id = $1 AND status = 'queued' AND EXISTS (SELECT 1 FROM claimed)
            RETURNING 1
        )
        SELECT c.attempts AS "attempts!", c.last_error, j.kind, j.options, j.policy_version,
               CASE WHEN j.policy_version = 0 OR j.policy_version = ANY($3) THEN NULL
                    ELSE (SELECT p.policy FROM moderation_policies p
                          WHERE p.tenant_id = j.tenant_id AND p.version = j.policy_version)
               END AS policy,
               ARRAY(SELECT i.item_index FROM job_items i
                     WHERE i.job_id = $1 AND i.item_index >= c.item_start
                       AND i.item_index < c.item_end
                       AND NOT EXISTS (SELECT 1 FROM job_results r
                                       WHERE r.job_id = $1 AND r.item_index = i.item_index)
                     ORDER BY i.item_index) AS "indexes!",
               ARRAY(SELECT i.input FROM job_items i
                     WHERE i.job_id = $1 AND i.item_index >= c.item_start
                       AND i.item_index < c.item_end
                       AND NOT EXISTS (SELECT 1 FROM job_results r
                                       WHERE r.job_id = $1 AND r.item_index = i.item_index)
                     ORDER BY i.item_index) AS "texts!",
               (SELECT count(*) FROM started) AS "started!",
               (extract(epoch FROM clock_timestamp() - j.created_at) * 1000)::float8 AS "waited_ms!"
        FROM claimed c JOIN jobs j ON j.job_id = $1
        "#,
        chunk.job_id.0,
        chunk.chunk_index,
        cached_policies,
    )
    .fetch_optional(&mut *tx)
    .await?;
    tx.commit().await?;
    let Some(row) = row else { return Ok(None) };
    let options = row
        .kind
        .parse::<JobKind>()
        .and_then(|kind| JobOptions::parse(kind, Some(row.options)).map_err(|e| e.to_string()));
    Ok(Some(Claim {
        attempts: row.attempts,
        last_error: row.last_error,
        options,
        policy_version: row.policy_version,
        policy: row.policy,
        items: row.indexes.into_iter().zip(row.texts).collect(),
        started_job: row.started > 0,
        waited: std::time::Duration::from_secs_f64(row.waited_ms.max(0.0) / 1000.0),
    }))
}

/// Keeps the last transient error on the chunk, for operators and the give-up message.
pub async fn record_error(
    pool: &PgPool,
    chunk: &ChunkMessage,
    error: &str,
) -> Result<(), sqlx::Error> {
    let mut tx = db::begin(pool, Scope::Tenant(chunk.tenant_id)).await?;
    sqlx::query!(
        "UPDATE job_chunks SET last_error = $3 WHERE job_id = $1 AND chunk_index = $2",
        chunk.job_id.0,
        chunk.chunk_index,
        error,
    )
    .execute(&mut *tx)
    .await?;
    tx.commit().await
}
