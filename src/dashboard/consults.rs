//! The waiting and consults sections of the board, fed by the rooms' own event stream
//! (`<prefix>consult.events`, one [`RoomEvent`] per message, the same events the consult
//! log and webhooks carry).
//!
//! - **Waiting**: one item per checked-in participant (id = participant id) from
//!   `checked_in` until `admitted`, `denied`, `left_before_joined` or `removed`;
//!   `since_ms` is the check-in, `data.consult_id` the consult.
//! - **Consults**: one item per consult (id = consult id) while someone besides the host
//!   is admitted and the consult has not ended; `data.participants` lists the roles of
//!   everyone admitted, `data.connected` the roles of those whose signalling connection is in
//!   the room now (joined, not left), `since_ms` is the first join (or, before that, the first
//!   admission).
//!
//! A consult item is recomputed from PostgreSQL on every event that can change it: the room
//! writes each event in the transaction that makes the change, so the rows are at least as
//! new as the event, and events are applied one at a time, so the board ends where the
//! database is. Items carry ids, roles and times only.

use chrono::{DateTime, Utc};
use coherency_protocol::consult::{EventKind, RoomEvent};
use coherency_protocol::dashboard::{Change, Item, Section};
use serde_json::{Map, Value};
use sqlx::PgPool;
use uuid::Uuid;

/// A candidate for the board: a consult not ended with someone admitted ([`consult_item`]
/// keeps it if that someone is not only the host, or the host is in the room). The two queries selecting it share
/// their text (grouped by `c.id`, the key, so the other columns of `c` may be selected);
/// they are two statements, not one with an optional filter, so the per-event one stays an
/// index lookup by `c.id`.
struct InProgress {
    id: Uuid,
    clinician_id: Uuid,
    patient_id: Option<Uuid>,
    since: Option<DateTime<Utc>>,
    updated: Option<DateTime<Utc>>,
    roles: Vec<String>,
    /// The roles of those admitted whose signalling connection is in the room now.
    connected: Vec<String>,
}

/// The board changes `ev` makes.
pub async fn changes(pg: &PgPool, ev: &RoomEvent, now_ms: i64) -> Result<Vec<Change>, sqlx::Error> {
    let consult = ev.consult_id.as_uuid();
    let at_ms = DateTime::parse_from_rfc3339(&ev.at).map(|t| t.timestamp_millis()).unwrap_or(now_ms);
    let mut out = Vec::new();
    match (ev.kind, ev.participant_id) {
        (EventKind::CheckedIn, Some(pid)) => {
            let row = sqlx::query!(
                "SELECT clinician_id, patient_id FROM consults WHERE id = $1 AND status <> 'ended'",
                consult
            )
            .fetch_optional(pg)
            .await?;
            if let Some(r) = row {
                let role = ev.role.map(|r| r.as_str()).unwrap_or("patient");
                out.push(Change::Upsert {
                    item: waiting_item(pid, consult, r.clinician_id, r.patient_id, role, at_ms, at_ms),
                });
            }
        }
        (EventKind::Admitted | EventKind::Denied | EventKind::LeftBeforeJoined | EventKind::Removed, Some(pid)) => {
            out.push(Change::Remove { section: Section::Waiting, id: pid });
        }
        _ => {}
    }
    let consult_may_change = matches!(
        ev.kind,
        EventKind::Admitted
            | EventKind::Joined
            | EventKind::Left
            | EventKind::LeftBeforeJoined
            | EventKind::Removed
            | EventKind::Ended
    );
    if consult_may_change {
        let row = sqlx::query_as!(
            InProgress,
            r#"SELECT c.id, c.clinician_id, c.patient_id,
                    coalesce(c.started_at, min(p.admitted_at) FILTER (WHERE p.role <> 'host')) AS since,
                    max(p.updated_at) AS updated,
                    array_agg(p.role ORDER BY p.admitted_at, p.id) AS "roles!",
                    coalesce(array_agg(p.role ORDER BY p.admitted_at, p.id)
                               FILTER (WHERE p.joined_at IS NOT NULL AND p.left_at IS NULL), '{}') AS "connected!"
               FROM consults c
               JOIN consult_participants p ON p.consult_id = c.id AND p.state = 'admitted'
              WHERE c.status <> 'ended' AND c.id = $1
              GROUP BY c.id"#,
            consult
        )
        .fetch_optional(pg)
        .await?;
        out.push(match row.and_then(|r| consult_item(r, at_ms)) {
            Some(item) => Change::Upsert { item },
            None => Change::Remove { section: Section::Consults, id: consult },
        });
    }
    Ok(out)
}

/// The waiting and consults sections as the database has them (for a reload).
pub async fn reload(pg: &PgPool) -> Result<Vec<Item>, sqlx::Error> {
    let mut items = Vec::new();
    let rows = sqlx::query!(
        "SELECT p.id, p.consult_id, p.role, p.checked_in_at, p.updated_at, c.clinician_id, c.patient_id
           FROM consult_participants p JOIN consults c ON c.id = p.consult_id
          WHERE p.state = 'waiting' AND c.status <> 'ended'
          ORDER BY p.checked_in_at LIMIT 5000",
    )
    .fetch_all(pg)
    .await?;
    for r in rows {
        let updated = r.updated_at.timestamp_millis();
        let since = r.checked_in_at.map_or(updated, |t| t.timestamp_millis());
        items.push(waiting_item(r.id, r.consult_id, r.clinician_id, r.patient_id, &r.role, since, updated));
    }
    let rows = sqlx::query_as!(
        InProgress,
        r#"SELECT c.id, c.clinician_id, c.patient_id,
                coalesce(c.started_at, min(p.admitted_at) FILTER (WHERE p.role <> 'host')) AS since,
                max(p.updated_at) AS updated,
                array_agg(p.role ORDER BY p.admitted_at, p.id) AS "roles!",
                coalesce(array_agg(p.role ORDER BY p.admitted_at, p.id)
                           FILTER (WHERE p.joined_at IS NOT NULL AND p.left_at IS NULL), '{}') AS "connected!"
           FROM consults c
           JOIN consult_participants p ON p.consult_id = c.id AND p.state = 'admitted'
          WHERE c.status <> 'ended'
          GROUP BY c.id LIMIT 5000"#
    )
    .fetch_all(pg)
    .await?;
    for r in rows {
        let updated = r.updated.map_or(0, |t| t.timestamp_millis());
        items.extend(consult_item(r, updated));
    }
    Ok(items)
}

fn waiting_item(
    participant: Uuid,
    consult: Uuid,
    clinician: Uuid,
    patient: Option<Uuid>,
    role: &str,
    since_ms: i64,
    updated_ms: i64,
) -> Item {
    let mut data = Map::new();
    data.insert("consult_id".into(), consult.to_string().into());
    data.insert("role".into(), role.into());
    Item {
        section: Section::Waiting,
        id: participant,
        patient_id: patient,
        clinician_id: Some(clinician),
        status: "waiting".into(),
        since_ms,
        updated_ms,
        data,
        patient_name: None,
        wound: None,
    }
}

/// The consult item of an [`InProgress`] row, if someone besides the host is admitted.
fn consult_item(r: InProgress, updated_ms: i64) -> Option<Item> {
    let roles = r.roles;
    // A consult only its host is admitted to shows while the host is in the room (an ad hoc
    // consult, or an appointment's opened early, the patient can join from their board); one
    // opened and left is not in progress.
    let host_only = roles.iter().all(|r| r == "host");
    if host_only && !r.connected.iter().any(|c| c == "host") {
        return None;
    }
    let since_ms = r.since.map_or(updated_ms, |t| t.timestamp_millis());
    let mut data = Map::new();
    data.insert("participants".into(), Value::from(roles));
    data.insert("connected".into(), Value::from(r.connected));
    Some(Item {
        section: Section::Consults,
        id: r.id,
        patient_id: r.patient_id,
        clinician_id: Some(r.clinician_id),
        status: if host_only { "open" } else { "in_consult" }.into(),
        since_ms,
        updated_ms,
        data,
        patient_name: None,
        wound: None,
    })
}
