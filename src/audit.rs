//! The audit trail: an append-only table (the database refuses UPDATE, DELETE and
//! TRUNCATE) in which every row's hash covers its own fields and the previous row's hash.
//! Rows name the actor, action, target, outcome, IP and request id — never PHI values.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sha2::{Digest, Sha256};
use sqlx::PgPool;
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot};
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

/// Appends one row (in its own transaction). Request handlers go through [`AuditLog`],
/// which merges concurrent appends into one transaction; this is for one-off callers (the
/// CLI) and for the group-commit task itself.
pub async fn record(pool: &PgPool, at: DateTime<Utc>, ev: &AuditEvent) -> Result<i64, sqlx::Error> {
    let ids = append(pool, &[(at, ev)]).await?;
    Ok(ids[0])
}

/// Appends rows in the order given, in one transaction: one advisory lock, one read of the
/// chain's tail, one `INSERT … SELECT FROM UNNEST`, one commit. Answers their ids.
async fn append(pool: &PgPool, events: &[(DateTime<Utc>, &AuditEvent)]) -> Result<Vec<i64>, sqlx::Error> {
    let mut tx = pool.begin().await?;
    sqlx::query!("SELECT pg_advisory_xact_lock($1)", CHAIN_LOCK).execute(&mut *tx).await?;
    let last = sqlx::query!("SELECT id, hash FROM audit_log ORDER BY id DESC LIMIT 1").fetch_optional(&mut *tx).await?;
    let (mut id, mut prev) = match last {
        Some(row) => (row.id, row.hash),
        None => (0, GENESIS.to_string()),
    };
    let n = events.len();
    let mut cols = Columns::with_capacity(n);
    for (at, ev) in events {
        id += 1;
        let details = ev.details.to_string();
        let hash = row_hash(
            id,
            *at,
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
        cols.ids.push(id);
        cols.at.push(*at);
        cols.actor_id.push(ev.actor_id);
        cols.actor_role.push(ev.actor_role.clone());
        cols.action.push(ev.action.clone());
        cols.target_type.push(ev.target_type.clone());
        cols.target_id.push(ev.target_id.clone());
        cols.outcome.push(ev.outcome.clone());
        cols.ip.push(ev.ip.clone());
        cols.request_id.push(ev.request_id.clone());
        cols.details.push(details);
        cols.prev_hash.push(std::mem::replace(&mut prev, hash.clone()));
        cols.hash.push(hash);
    }
    sqlx::query!(
        "INSERT INTO audit_log (id, at, actor_id, actor_role, action, target_type, target_id, outcome, ip, request_id, details, prev_hash, hash)
         SELECT * FROM UNNEST($1::bigint[], $2::timestamptz[], $3::uuid[], $4::text[], $5::text[], $6::text[], $7::text[],
                              $8::text[], $9::text[], $10::text[], $11::text[], $12::text[], $13::text[])",
        &cols.ids,
        &cols.at,
        &cols.actor_id as &[Option<Uuid>],
        &cols.actor_role as &[Option<String>],
        &cols.action,
        &cols.target_type as &[Option<String>],
        &cols.target_id as &[Option<String>],
        &cols.outcome,
        &cols.ip as &[Option<String>],
        &cols.request_id as &[Option<String>],
        &cols.details,
        &cols.prev_hash,
        &cols.hash
    )
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(cols.ids)
}

/// The rows of one append, column by column (for `UNNEST`).
#[derive(Default)]
struct Columns {
    ids: Vec<i64>,
    at: Vec<DateTime<Utc>>,
    actor_id: Vec<Option<Uuid>>,
    actor_role: Vec<Option<String>>,
    action: Vec<String>,
    target_type: Vec<Option<String>>,
    target_id: Vec<Option<String>>,
    outcome: Vec<String>,
    ip: Vec<Option<String>>,
    request_id: Vec<Option<String>>,
    details: Vec<String>,
    prev_hash: Vec<String>,
    hash: Vec<String>,
}

impl Columns {
    fn with_capacity(n: usize) -> Self {
        Self {
            ids: Vec::with_capacity(n),
            at: Vec::with_capacity(n),
            actor_id: Vec::with_capacity(n),
            actor_role: Vec::with_capacity(n),
            action: Vec::with_capacity(n),
            target_type: Vec::with_capacity(n),
            target_id: Vec::with_capacity(n),
            outcome: Vec::with_capacity(n),
            ip: Vec::with_capacity(n),
            request_id: Vec::with_capacity(n),
            details: Vec::with_capacity(n),
            prev_hash: Vec::with_capacity(n),
            hash: Vec::with_capacity(n),
        }
    }
}

/// Most rows merged into one append.
const GROUP_MAX: usize = 256;

/// The node's audit writer. Every append waits until its row is committed (an action is
/// not answered before it is on the record), but appends that arrive while a transaction is
/// in flight are merged into the next one, so under load one advisory-lock round and one
/// WAL flush cover many rows instead of one each. The chain's order is the order the writer
/// takes them in; across nodes the advisory lock still gives one total order.
#[derive(Clone)]
pub struct AuditLog {
    tx: mpsc::Sender<Pending>,
}

struct Pending {
    at: DateTime<Utc>,
    ev: AuditEvent,
    done: oneshot::Sender<Result<i64, AppendError>>,
}

/// Why an append failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum AppendError {
    #[error("audit append failed: {0}")]
    Database(Arc<sqlx::Error>),
    #[error("the audit writer stopped")]
    Stopped,
    #[error("the audit row was not written within {} s", APPEND_WAIT.as_secs())]
    TimedOut,
}

/// Longest a request waits for its audit row: past it the request fails with 503 (an
/// audited action does not go ahead unaudited), and the row is not written if the writer
/// has not taken it yet.
pub const APPEND_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

impl AuditLog {
    /// Starts the writer task on the store I/O runtime (every audited request waits for
    /// it, so it must not share a thread with other work); it ends when every handle is
    /// dropped.
    pub fn start(pool: PgPool) -> Self {
        let (tx, rx) = mpsc::channel(GROUP_MAX * 8);
        crate::store::io_runtime().spawn(writer(pool, rx));
        Self { tx }
    }

    /// Appends `ev` and answers its row id once committed, within [`APPEND_WAIT`].
    pub async fn append(&self, at: DateTime<Utc>, ev: AuditEvent) -> Result<i64, AppendError> {
        let (done, rx) = oneshot::channel();
        let appended = async {
            self.tx.send(Pending { at, ev, done }).await.map_err(|_| AppendError::Stopped)?;
            rx.await.map_err(|_| AppendError::Stopped)?
        };
        tokio::time::timeout(APPEND_WAIT, appended).await.map_err(|_| AppendError::TimedOut)?
    }
}

async fn writer(pool: PgPool, mut rx: mpsc::Receiver<Pending>) {
    let mut batch: Vec<Pending> = Vec::with_capacity(GROUP_MAX);
    while let Some(first) = rx.recv().await {
        batch.push(first);
        while batch.len() < GROUP_MAX {
            match rx.try_recv() {
                Ok(next) => batch.push(next),
                Err(_) => break,
            }
        }
        // A request that stopped waiting (APPEND_WAIT) has answered 503: its action did not
        // happen, so its row is not written.
        batch.retain(|p| !p.done.is_closed());
        if batch.is_empty() {
            continue;
        }
        let events: Vec<(DateTime<Utc>, &AuditEvent)> = batch.iter().map(|p| (p.at, &p.ev)).collect();
        match append(&pool, &events).await {
            Ok(ids) => {
                for (p, id) in batch.drain(..).zip(ids) {
                    let _ = p.done.send(Ok(id));
                }
            }
            // One bad row must not fail the others: each is tried on its own.
            Err(_) if batch.len() > 1 => {
                for p in batch.drain(..) {
                    let res = append(&pool, &[(p.at, &p.ev)]).await;
                    let _ = p.done.send(res.map(|ids| ids[0]).map_err(|e| AppendError::Database(Arc::new(e))));
                }
            }
            Err(e) => {
                let e = AppendError::Database(Arc::new(e));
                for p in batch.drain(..) {
                    let _ = p.done.send(Err(e.clone()));
                }
            }
        }
    }
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
        let rows = sqlx::query!(
            "SELECT id, at, actor_id, actor_role, action, target_type, target_id, outcome, ip, request_id, details, prev_hash, hash
             FROM audit_log WHERE id > $1 ORDER BY id LIMIT 5000",
            after
        )
        .fetch_all(pool)
        .await?;
        if rows.is_empty() {
            return Ok(Verdict::Intact(count));
        }
        for r in rows {
            let id = r.id;
            if id != expected_id {
                return Ok(Verdict::Broken { id, reason: format!("row {expected_id} is missing") });
            }
            let stored_prev = r.prev_hash;
            if stored_prev != prev {
                return Ok(Verdict::Broken { id, reason: "link to the previous row does not match".into() });
            }
            let computed = row_hash(
                id,
                r.at,
                r.actor_id,
                r.actor_role.as_deref(),
                &r.action,
                r.target_type.as_deref(),
                r.target_id.as_deref(),
                &r.outcome,
                r.ip.as_deref(),
                r.request_id.as_deref(),
                &r.details,
                &stored_prev,
            );
            let stored = r.hash;
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
