//! The audit trail: an append-only table (the database refuses UPDATE, DELETE and
//! TRUNCATE) in which every row's hash covers its own fields and the previous row's hash.
//! Rows name the actor, action, target, outcome, IP and request id — never PHI values.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sha2::{Digest, Sha256};
use sqlx::{PgPool, Row};
use uuid::Uuid;

/// Key of the advisory lock that serialises appends (the chain needs a total order).
const CHAIN_LOCK: i64 = 0x0A0D_17C4_A1A1;
/// `prev_hash` of the first row.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// One thing that happened.
#[derive(Debug, Clone, Default, Serialize)]
pub struct AuditEvent {
    pub actor_id: Option<Uuid>,
    pub actor_role: Option<String>,
    pub action: String,
    pub target_type: Option<String>,
    pub target_id: Option<String>,
    /// `success`, `denied` or `failure`.
    pub outcome: String,
    pub ip: Option<String>,
    pub request_id: Option<String>,
    /// Extra non-PHI facts (ids returned by a search, a reason code), as a JSON object.
    pub details: serde_json::Value,
}

impl AuditEvent {
    pub fn new(action: &str, outcome: &str) -> Self {
        Self { action: action.into(), outcome: outcome.into(), details: serde_json::json!({}), ..Default::default() }
    }
    pub fn target(mut self, kind: &str, id: impl ToString) -> Self {
        self.target_type = Some(kind.into());
        self.target_id = Some(id.to_string());
        self
    }
    pub fn details(mut self, details: serde_json::Value) -> Self {
        self.details = details;
        self
    }
}

/// The hash of one row, given the previous row's hash.
#[allow(clippy::too_many_arguments)]
fn row_hash(
    id: i64,
    at: DateTime<Utc>,
    actor_id: Option<Uuid>,
    actor_role: Option<&str>,
    action: &str,
    target_type: Option<&str>,
    target_id: Option<&str>,
    outcome: &str,
    ip: Option<&str>,
    request_id: Option<&str>,
    details: &str,
    prev_hash: &str,
) -> String {
    let canonical = serde_json::json!([
        id,
        at.timestamp_micros(),
        actor_id,
        actor_role,
        action,
        target_type,
        target_id,
        outcome,
        ip,
        request_id,
        details,
        prev_hash
    ]);
    hex::encode(Sha256::digest(canonical.to_string().as_bytes()))
}

/// Appends one row (in its own transaction).
pub async fn record(pool: &PgPool, at: DateTime<Utc>, ev: &AuditEvent) -> Result<i64, sqlx::Error> {
    let mut tx = pool.begin().await?;
    sqlx::query("SELECT pg_advisory_xact_lock($1)").bind(CHAIN_LOCK).execute(&mut *tx).await?;
    let last = sqlx::query("SELECT id, hash FROM audit_log ORDER BY id DESC LIMIT 1").fetch_optional(&mut *tx).await?;
    let (id, prev) = match last {
        Some(row) => (row.get::<i64, _>(0) + 1, row.get::<String, _>(1)),
        None => (1, GENESIS.to_string()),
    };
    let details = ev.details.to_string();
    let hash = row_hash(
        id,
        at,
        ev.actor_id,
        ev.actor_role.as_deref(),
        &ev.action,
        ev.target_type.as_deref(),
        ev.target_id.as_deref(),
        &ev.outcome,
        ev.ip.as_deref(),
        ev.request_id.as_deref(),
        &details,
        &prev,
    );
    sqlx::query(
        "INSERT INTO audit_log (id, at, actor_id, actor_role, action, target_type, target_id, outcome, ip, request_id, details, prev_hash, hash)
         VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12,$13)",
    )
    .bind(id)
    .bind(at)
    .bind(ev.actor_id)
    .bind(&ev.actor_role)
    .bind(&ev.action)
    .bind(&ev.target_type)
    .bind(&ev.target_id)
    .bind(&ev.outcome)
    .bind(&ev.ip)
    .bind(&ev.request_id)
    .bind(&details)
    .bind(&prev)
    .bind(&hash)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(id)
}

/// The outcome of checking the chain.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Every row checks; this many rows.
    Intact(u64),
    /// The first row whose hash or link does not match.
    Broken { id: i64, reason: String },
}

/// Walks the whole chain in id order.
pub async fn verify(pool: &PgPool) -> Result<Verdict, sqlx::Error> {
    let mut prev = GENESIS.to_string();
    let mut expected_id = 1i64;
    let mut count = 0u64;
    let mut after = 0i64;
    loop {
        let rows = sqlx::query(
            "SELECT id, at, actor_id, actor_role, action, target_type, target_id, outcome, ip, request_id, details, prev_hash, hash
             FROM audit_log WHERE id > $1 ORDER BY id LIMIT 5000",
        )
        .bind(after)
        .fetch_all(pool)
        .await?;
        if rows.is_empty() {
            return Ok(Verdict::Intact(count));
        }
        for r in rows {
            let id: i64 = r.get("id");
            if id != expected_id {
                return Ok(Verdict::Broken { id, reason: format!("row {expected_id} is missing") });
            }
            let stored_prev: String = r.get("prev_hash");
            if stored_prev != prev {
                return Ok(Verdict::Broken { id, reason: "link to the previous row does not match".into() });
            }
            let computed = row_hash(
                id,
                r.get("at"),
                r.get("actor_id"),
                r.get::<Option<String>, _>("actor_role").as_deref(),
                r.get::<String, _>("action").as_str(),
                r.get::<Option<String>, _>("target_type").as_deref(),
                r.get::<Option<String>, _>("target_id").as_deref(),
                r.get::<String, _>("outcome").as_str(),
                r.get::<Option<String>, _>("ip").as_deref(),
                r.get::<Option<String>, _>("request_id").as_deref(),
                r.get::<String, _>("details").as_str(),
                &stored_prev,
            );
            let stored: String = r.get("hash");
            if computed != stored {
                return Ok(Verdict::Broken { id, reason: "row contents do not match its hash".into() });
            }
            prev = stored;
            expected_id += 1;
            after = id;
            count += 1;
        }
    }
}
