//! Booking: schedules, slots, holds, bookings, the waitlist and the booking outbox.
//!
//! Every state change is one Postgres transaction that also appends to `booking_outbox`;
//! the `appointments_no_overlap` exclusion constraint makes overlapping live bookings of one
//! clinician impossible, whichever node writes (SQLSTATE 23P01 → 409 `slot_taken`). Holds
//! expire by the application clock: an attempt first marks the expired holds in its own
//! range `expired` (in its transaction), and [`sweep`] expires the rest, passing freed slots
//! to the waitlist. HTTP lives in `crate::http::booking`.

pub mod slots;
pub mod view;

use chrono::{DateTime, Duration, NaiveDate, NaiveTime, Utc};
use chrono_tz::Tz;
use coherency_protocol::Code;
use serde::Serialize;
use sqlx::{PgConnection, PgPool, Row};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::error::ApiError;
use crate::state::AppState;

/// How long a hold lasts.
pub const HOLD_TTL: Duration = Duration::minutes(5);
/// How long a waitlist offer (a hold made for the waiting patient) lasts.
pub const OFFER_TTL: Duration = Duration::minutes(5);
/// Most live holds one patient may have.
pub const MAX_ACTIVE_HOLDS: i64 = 3;
/// Longest range one slots query may cover.
pub const MAX_SLOT_RANGE_DAYS: i64 = 31;
/// Longest booking horizon a schedule may set, days.
pub const MAX_HORIZON_DAYS: i32 = 730;
/// Most weekly windows in one schedule (ten a day): each booking attempt and slot query
/// walks all of them for every day it covers.
pub const MAX_WEEKLY_WINDOWS: usize = 70;
/// Most dated exceptions in one schedule (every day of the longest horizon, and a year back).
pub const MAX_EXCEPTIONS: usize = 1100;
/// Dates and instants a booking input may name reach this many days into the past (so a
/// schedule read with `GET` can be written back with last year's exceptions)...
pub const MAX_PAST_DAYS: i64 = 366;
/// ...and this many days ahead: the longest horizon and one slot query beyond it.
pub const MAX_FUTURE_DAYS: i64 = MAX_HORIZON_DAYS as i64 + MAX_SLOT_RANGE_DAYS;

/// The instants a booking input may name at `now`: `[now − MAX_PAST_DAYS, now + MAX_FUTURE_DAYS]`.
pub fn calendar_bounds(now: DateTime<Utc>) -> (DateTime<Utc>, DateTime<Utc>) {
    (now - Duration::days(MAX_PAST_DAYS), now + Duration::days(MAX_FUTURE_DAYS))
}

/// Refuses an instant outside [`calendar_bounds`] (400 `invalid_field` naming `field`).
pub fn check_instant(field: &str, t: DateTime<Utc>, now: DateTime<Utc>) -> Result<(), ApiError> {
    let (lo, hi) = calendar_bounds(now);
    if t < lo || t > hi {
        return Err(out_of_calendar(field));
    }
    Ok(())
}

/// Refuses a calendar day outside [`calendar_bounds`] (compared with the UTC dates of its
/// ends, which a day in any zone is within a day of).
pub fn check_day(field: &str, day: NaiveDate, now: DateTime<Utc>) -> Result<(), ApiError> {
    let (lo, hi) = calendar_bounds(now);
    if day < lo.date_naive() || day > hi.date_naive() {
        return Err(out_of_calendar(field));
    }
    Ok(())
}

fn out_of_calendar(field: &str) -> ApiError {
    ApiError::field(
        Code::InvalidField,
        field,
        format!("must lie within {MAX_PAST_DAYS} days before and {MAX_FUTURE_DAYS} days after now"),
    )
}
/// How often each node sweeps expired holds.
pub const SWEEP_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

/// Statuses that occupy the calendar (the constraint's predicate).
pub const LIVE: &[&str] = &["held", "booked", "no_show"];

/// An appointment or hold.
#[derive(Debug, Clone, Serialize, ToSchema, sqlx::FromRow)]
pub struct Appointment {
    pub id: Uuid,
    pub clinician_id: Uuid,
    pub patient_id: Uuid,
    pub type_id: Uuid,
    /// `telehealth` or `in_person`.
    pub modality: String,
    pub start_at: DateTime<Utc>,
    pub end_at: DateTime<Utc>,
    /// `held`, `booked`, `cancelled`, `expired` or `no_show`.
    pub status: String,
    /// When a hold lapses.
    pub expires_at: Option<DateTime<Utc>>,
    pub cancel_reason: Option<String>,
    pub rescheduled_from: Option<Uuid>,
    /// Set when the hold is a waitlist offer.
    pub waitlist_id: Option<Uuid>,
    pub version: i32,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// The range the appointment blocks (buffers included); internal.
    #[serde(skip)]
    pub block_start: DateTime<Utc>,
    #[serde(skip)]
    pub block_end: DateTime<Utc>,
}

pub(crate) const COLS: &str =
    "id, clinician_id, patient_id, type_id, modality, start_at, end_at, status, expires_at, cancel_reason, \
                    rescheduled_from, waitlist_id, version, created_at, updated_at, block_start, block_end";

impl Appointment {
    /// Whether the range this appointment blocks overlaps `[bs, be)` (half-open ranges).
    pub fn blocks(&self, bs: DateTime<Utc>, be: DateTime<Utc>) -> bool {
        bs < self.block_end && self.block_start < be
    }
}

/// An appointment type.
#[derive(Debug, Clone, Serialize, ToSchema, sqlx::FromRow)]
pub struct AppointmentType {
    pub id: Uuid,
    pub clinician_id: Uuid,
    pub name: String,
    pub duration_min: i32,
    pub buffer_before_min: i32,
    pub buffer_after_min: i32,
    pub modality: String,
    pub active: bool,
}

impl AppointmentType {
    pub fn shape(&self) -> slots::Shape {
        slots::Shape {
            duration: Duration::minutes(self.duration_min.into()),
            buffer_before: Duration::minutes(self.buffer_before_min.into()),
            buffer_after: Duration::minutes(self.buffer_after_min.into()),
        }
    }
    /// The range an appointment of this type starting at `start` blocks.
    pub fn block(&self, start: DateTime<Utc>) -> (DateTime<Utc>, DateTime<Utc>, DateTime<Utc>, DateTime<Utc>) {
        let s = self.shape();
        let end = start + s.duration;
        (start, end, start - s.buffer_before, end + s.buffer_after)
    }
}

/// A clinician's schedule, loaded.
#[derive(Debug, Clone)]
pub struct Schedule {
    pub clinician_id: Uuid,
    pub tz: Tz,
    pub horizon_days: i32,
    pub min_notice_min: i32,
    pub rules: Vec<slots::Rule>,
    pub exceptions: Vec<slots::Exception>,
}

/// Maps the exclusion-constraint violation to `slot_taken`.
pub fn db_error(e: sqlx::Error) -> ApiError {
    if let sqlx::Error::Database(d) = &e {
        if d.code().as_deref() == Some("23P01") {
            return slot_taken();
        }
    }
    ApiError::from(e)
}

pub async fn load_type(pg: &PgPool, id: Uuid) -> Result<Option<AppointmentType>, ApiError> {
    Ok(sqlx::query_as::<_, AppointmentType>(
        "SELECT id, clinician_id, name, duration_min, buffer_before_min, buffer_after_min, modality, active
           FROM appointment_types WHERE id = $1",
    )
    .bind(id)
    .fetch_optional(pg)
    .await?)
}

pub async fn list_types(pg: &PgPool, clinician_id: Uuid) -> Result<Vec<AppointmentType>, ApiError> {
    Ok(sqlx::query_as::<_, AppointmentType>(
        "SELECT id, clinician_id, name, duration_min, buffer_before_min, buffer_after_min, modality, active
           FROM appointment_types WHERE clinician_id = $1 AND active ORDER BY created_at, id",
    )
    .bind(clinician_id)
    .fetch_all(pg)
    .await?)
}

/// One clinician's schedule with its rules and exceptions, in one round trip (a booking
/// attempt reads it every time).
pub async fn load_schedule(pg: &PgPool, clinician_id: Uuid) -> Result<Option<Schedule>, ApiError> {
    // Each array is sorted on every column of its table, so the arrays of one table line up
    // row by row even where rows share a weekday or a day.
    let Some(row) = sqlx::query(
        "SELECT s.tz, s.horizon_days, s.min_notice_min,
                ARRAY(SELECT weekday FROM schedule_rules r WHERE r.clinician_id = $1 ORDER BY weekday, start_time, end_time) AS r_weekday,
                ARRAY(SELECT start_time FROM schedule_rules r WHERE r.clinician_id = $1 ORDER BY weekday, start_time, end_time) AS r_start,
                ARRAY(SELECT end_time FROM schedule_rules r WHERE r.clinician_id = $1 ORDER BY weekday, start_time, end_time) AS r_end,
                ARRAY(SELECT day FROM schedule_exceptions e WHERE e.clinician_id = $1 ORDER BY day, kind, start_time, end_time) AS e_day,
                ARRAY(SELECT kind FROM schedule_exceptions e WHERE e.clinician_id = $1 ORDER BY day, kind, start_time, end_time) AS e_kind,
                ARRAY(SELECT start_time FROM schedule_exceptions e WHERE e.clinician_id = $1 ORDER BY day, kind, start_time, end_time) AS e_start,
                ARRAY(SELECT end_time FROM schedule_exceptions e WHERE e.clinician_id = $1 ORDER BY day, kind, start_time, end_time) AS e_end
           FROM schedules s WHERE s.clinician_id = $1",
    )
    .bind(clinician_id)
    .fetch_optional(pg)
    .await?
    else {
        return Ok(None);
    };
    let tz: String = row.get("tz");
    let tz: Tz = tz.parse().map_err(|_| ApiError::internal("stored time zone does not parse"))?;
    let weekdays: Vec<i16> = row.get("r_weekday");
    let starts: Vec<NaiveTime> = row.get("r_start");
    let ends: Vec<NaiveTime> = row.get("r_end");
    let rules = weekdays
        .into_iter()
        .zip(starts)
        .zip(ends)
        .map(|((weekday, start), end)| slots::Rule { weekday: weekday as u32, start, end })
        .collect();
    let days: Vec<NaiveDate> = row.get("e_day");
    let kinds: Vec<String> = row.get("e_kind");
    let e_starts: Vec<Option<NaiveTime>> = row.get("e_start");
    let e_ends: Vec<Option<NaiveTime>> = row.get("e_end");
    let exceptions = days
        .into_iter()
        .zip(kinds)
        .zip(e_starts.into_iter().zip(e_ends))
        .map(|((day, kind), (s, e))| slots::Exception { day, extra: kind == "extra", hours: s.zip(e) })
        .collect();
    Ok(Some(Schedule {
        clinician_id,
        tz,
        horizon_days: row.get("horizon_days"),
        min_notice_min: row.get("min_notice_min"),
        rules,
        exceptions,
    }))
}

/// Candidate slots of `ty` in `[from, to)` by the schedule alone (notice and horizon applied,
/// bookings not yet removed).
pub fn candidate_slots(
    sched: &Schedule,
    ty: &AppointmentType,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Vec<(DateTime<Utc>, DateTime<Utc>)> {
    let earliest = from.max(now + Duration::minutes(sched.min_notice_min.into()));
    let latest = to.min(now + Duration::days(sched.horizon_days.into()));
    if earliest >= latest {
        return Vec::new();
    }
    let from_day = earliest.with_timezone(&sched.tz).date_naive() - Duration::days(1);
    let to_day = latest.with_timezone(&sched.tz).date_naive() + Duration::days(1);
    let w = slots::windows(sched.tz, &sched.rules, &sched.exceptions, from_day, to_day);
    slots::slots(&w, ty.shape()).into_iter().filter(|(s, _)| *s >= earliest && *s < latest).collect()
}

/// Live rows (expired holds excluded) of clinician `$1` whose blocked range overlaps
/// `[$2, $3)`, at time `$4`.
const LIVE_OVERLAP: &str = "clinician_id = $1 AND status IN ('held','booked','no_show')
    AND NOT (status = 'held' AND expires_at <= $4)
    AND tstzrange(block_start, block_end, '[)') && tstzrange($2, $3, '[)')";

/// Live rows (expired holds excluded) whose blocked range overlaps `[from, to)`, by start
/// of that range.
pub async fn busy(
    pg: &PgPool,
    clinician_id: Uuid,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Result<Vec<Appointment>, ApiError> {
    Ok(sqlx::query_as::<_, Appointment>(&format!(
        "SELECT {COLS} FROM appointments WHERE {LIVE_OVERLAP} ORDER BY block_start"
    ))
    .bind(clinician_id)
    .bind(from)
    .bind(to)
    .bind(now)
    .fetch_all(pg)
    .await?)
}

/// Whether a live row (expired holds excluded) already blocks part of `[bs, be)`: a plain
/// read, no lock and no transaction. A yes is a final answer (the slot was taken when we
/// looked, which is what a caller arriving a moment later would also have seen); a no
/// proves nothing, and the attempt goes on to the lock and the constraint.
pub async fn taken(
    pg: &PgPool,
    clinician_id: Uuid,
    bs: DateTime<Utc>,
    be: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Result<bool, ApiError> {
    Ok(sqlx::query_scalar(&format!("SELECT EXISTS (SELECT 1 FROM appointments WHERE {LIVE_OVERLAP})"))
        .bind(clinician_id)
        .bind(bs)
        .bind(be)
        .bind(now)
        .fetch_one(pg)
        .await?)
}

/// The answer to an attempt at a time a live row blocks.
pub fn slot_taken() -> ApiError {
    ApiError::new(Code::SlotTaken, "that time is no longer available")
}

/// Free slots: candidates whose blocked range overlaps nothing live.
pub async fn free_slots(
    state: &AppState,
    sched: &Schedule,
    ty: &AppointmentType,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> Result<Vec<(DateTime<Utc>, DateTime<Utc>)>, ApiError> {
    let now = state.clock.now();
    let cands = candidate_slots(sched, ty, from, to, now);
    let (Some(first), Some(last)) = (cands.first(), cands.last()) else { return Ok(Vec::new()) };
    let s = ty.shape();
    let taken =
        busy(&state.stores.pg, sched.clinician_id, first.0 - s.buffer_before, last.1 + s.buffer_after, now).await?;
    Ok(cands
        .into_iter()
        .filter(|(st, en)| {
            let (bs, be) = (*st - s.buffer_before, *en + s.buffer_after);
            !taken.iter().any(|a| a.blocks(bs, be))
        })
        .collect())
}

/// Refuses a start that is not one of the type's slots (grid, hours, notice, horizon).
pub fn require_slot(
    sched: &Schedule,
    ty: &AppointmentType,
    start: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Result<(), ApiError> {
    let cands = candidate_slots(sched, ty, start, start + Duration::seconds(1), now);
    if cands.iter().any(|(s, _)| *s == start) {
        Ok(())
    } else {
        Err(ApiError::field(
            Code::InvalidField,
            "start",
            "start is not an available slot of this appointment type (hours, notice, horizon)",
        ))
    }
}

/// Appends an event to the outbox (inside the caller's transaction).
pub async fn emit(conn: &mut PgConnection, now: DateTime<Utc>, kind: &str, a: &Appointment) -> Result<(), ApiError> {
    let payload = serde_json::json!({
        "kind": kind, "appointment_id": a.id, "clinician_id": a.clinician_id, "patient_id": a.patient_id,
        "start_at": a.start_at, "end_at": a.end_at, "status": a.status, "waitlist_id": a.waitlist_id,
    });
    sqlx::query(
        "INSERT INTO booking_outbox (at, kind, appointment_id, clinician_id, patient_id, payload) VALUES ($1,$2,$3,$4,$5,$6)",
    )
    .bind(now)
    .bind(kind)
    .bind(a.id)
    .bind(a.clinician_id)
    .bind(a.patient_id)
    .bind(payload)
    .execute(conn)
    .await?;
    Ok(())
}

/// Publishes committed events to the node bus (`<prefix>booking.events`) for the dashboard
/// hubs and the calendar views of every node, after applying them to this node's view.
/// Best effort: the outbox is the durable record.
pub fn publish(state: &AppState, events: Vec<(&'static str, Appointment)>) {
    if events.is_empty() {
        return;
    }
    state.calendars.apply(&events.iter().map(|(_, a)| view::Change::of(a)).collect::<Vec<_>>());
    let mut conn = state.stores.redis.conn.clone();
    let channel = state.stores.redis.key("booking.events");
    tokio::spawn(async move {
        for (kind, a) in events {
            // Ids and times only (no PHI); the hub scopes each viewer by these ids.
            let msg = serde_json::json!({"kind": kind, "appointment_id": a.id, "clinician_id": a.clinician_id,
                "patient_id": a.patient_id, "start_at": a.start_at, "end_at": a.end_at, "status": a.status,
                "block_start": a.block_start, "block_end": a.block_end, "expires_at": a.expires_at,
                "version": a.version})
            .to_string();
            let r: Result<i64, _> = redis::cmd("PUBLISH").arg(&channel).arg(msg).query_async(&mut conn).await;
            if let Err(e) = r {
                tracing::warn!(error = %e, "booking event publish failed");
                return;
            }
        }
    });
}

/// Marks expired holds overlapping `[bs, be)` expired (in the caller's transaction); waitlist
/// offers among them go back to the queue, remembering the slot the patient let lapse.
async fn expire_overlapping(
    conn: &mut PgConnection,
    clinician_id: Uuid,
    bs: DateTime<Utc>,
    be: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Result<Vec<Appointment>, ApiError> {
    let expired = sqlx::query_as::<_, Appointment>(&format!(
        "UPDATE appointments SET status = 'expired', updated_at = $4, version = version + 1
          WHERE clinician_id = $1 AND status = 'held' AND expires_at <= $4
            AND tstzrange(block_start, block_end, '[)') && tstzrange($2, $3, '[)')
          RETURNING {COLS}"
    ))
    .bind(clinician_id)
    .bind(bs)
    .bind(be)
    .bind(now)
    .fetch_all(&mut *conn)
    .await?;
    for a in &expired {
        requeue_offer(conn, a, now).await?;
        emit(conn, now, "expired", a).await?;
    }
    Ok(expired)
}

async fn requeue_offer(conn: &mut PgConnection, a: &Appointment, now: DateTime<Utc>) -> Result<(), ApiError> {
    if let Some(w) = a.waitlist_id {
        sqlx::query(
            "UPDATE waitlist SET status = 'waiting', offered_appointment_id = NULL, updated_at = $2
              WHERE id = $1 AND status = 'offered'",
        )
        .bind(w)
        .bind(now)
        .execute(&mut *conn)
        .await?;
        sqlx::query("INSERT INTO waitlist_declined (waitlist_id, start_at) VALUES ($1, $2) ON CONFLICT DO NOTHING")
            .bind(w)
            .bind(a.start_at)
            .execute(&mut *conn)
            .await?;
    }
    Ok(())
}

/// First key of the clinician calendar locks (two-key advisory locks; the audit chain uses
/// the one-key space, which does not overlap).
const CALENDAR_LOCK_CLASS: i32 = 0x6361_6c31;

/// Takes the clinician's calendar lock until the transaction ends. Writers that insert into
/// one calendar, on any node, then go one at a time: two overlapping inserts never wait on
/// each other's exclusion-constraint check, which Postgres can only settle as a deadlock
/// after `deadlock_timeout` (a second), aborting one with an error instead of `slot_taken`.
/// The constraint still decides; the lock only orders the writers.
async fn lock_calendar(conn: &mut PgConnection, clinician_id: Uuid) -> Result<(), ApiError> {
    let b = clinician_id.as_bytes();
    let key = (0..4).fold(0i32, |k, i| k ^ i32::from_le_bytes([b[4 * i], b[4 * i + 1], b[4 * i + 2], b[4 * i + 3]]));
    sqlx::query("SELECT pg_advisory_xact_lock($1, $2)").bind(CALENDAR_LOCK_CLASS).bind(key).execute(conn).await?;
    Ok(())
}

/// A request to hold (or directly book) a slot.
pub struct NewHold {
    pub clinician_id: Uuid,
    pub patient_id: Uuid,
    pub ty: AppointmentType,
    pub start: DateTime<Utc>,
    pub confirm: bool,
    pub created_by: Uuid,
    pub idempotency_key: Option<String>,
}

/// Holds (or books) a slot. The constraint decides races.
pub async fn hold(state: &AppState, h: NewHold) -> Result<(Appointment, Vec<(&'static str, Appointment)>), ApiError> {
    let now = state.clock.now();
    let (start, end, bs, be) = h.ty.block(h.start);
    let mut tx = state.stores.pg.begin().await?;
    lock_calendar(&mut tx, h.clinician_id).await?;
    let mut events = Vec::new();
    for a in expire_overlapping(&mut tx, h.clinician_id, bs, be, now).await? {
        events.push(("expired", a));
    }
    if !h.confirm {
        // One patient's holds are counted under the patient row's lock, so concurrent holds
        // from one patient cannot all pass the cap.
        sqlx::query("SELECT 1 FROM patients WHERE id = $1 FOR UPDATE").bind(h.patient_id).execute(&mut *tx).await?;
        let live: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM appointments WHERE patient_id = $1 AND status = 'held' AND expires_at > $2",
        )
        .bind(h.patient_id)
        .bind(now)
        .fetch_one(&mut *tx)
        .await?;
        if live >= MAX_ACTIVE_HOLDS {
            return Err(ApiError::new(
                Code::TooManyHolds,
                format!("at most {MAX_ACTIVE_HOLDS} active holds per patient; confirm or release one"),
            ));
        }
    }
    let (status, expires) = if h.confirm { ("booked", None) } else { ("held", Some(now + HOLD_TTL)) };
    let a = sqlx::query_as::<_, Appointment>(&format!(
        "INSERT INTO appointments (id, clinician_id, patient_id, type_id, modality, start_at, end_at, block_start, block_end,
                                   status, expires_at, idempotency_key, created_by, created_at, updated_at)
         VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12,$13,$14,$14) RETURNING {COLS}"
    ))
    .bind(Uuid::now_v7())
    .bind(h.clinician_id)
    .bind(h.patient_id)
    .bind(h.ty.id)
    .bind(&h.ty.modality)
    .bind(start)
    .bind(end)
    .bind(bs)
    .bind(be)
    .bind(status)
    .bind(expires)
    .bind(&h.idempotency_key)
    .bind(h.created_by)
    .bind(now)
    .fetch_one(&mut *tx)
    .await
    .map_err(db_error)?;
    let kind = if h.confirm { "booked" } else { "held" };
    emit(&mut tx, now, kind, &a).await?;
    tx.commit().await.map_err(db_error)?;
    events.push((kind, a.clone()));
    Ok((a, events))
}

/// The existing appointment a (caller, idempotency key) pair created, if any.
pub async fn by_idempotency_key(pg: &PgPool, created_by: Uuid, key: &str) -> Result<Option<Appointment>, ApiError> {
    Ok(sqlx::query_as::<_, Appointment>(&format!(
        "SELECT {COLS} FROM appointments WHERE created_by = $1 AND idempotency_key = $2"
    ))
    .bind(created_by)
    .bind(key)
    .fetch_optional(pg)
    .await?)
}

pub async fn load(pg: &PgPool, id: Uuid) -> Result<Option<Appointment>, ApiError> {
    Ok(sqlx::query_as::<_, Appointment>(&format!("SELECT {COLS} FROM appointments WHERE id = $1"))
        .bind(id)
        .fetch_optional(pg)
        .await?)
}

async fn lock_row(conn: &mut PgConnection, id: Uuid) -> Result<Appointment, ApiError> {
    sqlx::query_as::<_, Appointment>(&format!("SELECT {COLS} FROM appointments WHERE id = $1 FOR UPDATE"))
        .bind(id)
        .fetch_optional(conn)
        .await?
        .ok_or_else(ApiError::not_found)
}

fn not_live(a: &Appointment, now: DateTime<Utc>) -> ApiError {
    match a.status.as_str() {
        "expired" => ApiError::new(Code::HoldExpired, "the hold expired; choose the slot again"),
        "held" if a.expires_at.is_some_and(|e| e <= now) => {
            ApiError::new(Code::HoldExpired, "the hold expired; choose the slot again")
        }
        s => ApiError::new(Code::Conflict, format!("the appointment is {s}")),
    }
}

type Done = (Appointment, Vec<(&'static str, Appointment)>);

/// Confirms a live hold. Confirming a booked appointment again answers it unchanged.
pub async fn confirm(state: &AppState, id: Uuid) -> Result<Done, ApiError> {
    let now = state.clock.now();
    let mut tx = state.stores.pg.begin().await?;
    let cur = lock_row(&mut tx, id).await?;
    if cur.status == "booked" {
        return Ok((cur, Vec::new()));
    }
    if cur.status != "held" || cur.expires_at.is_some_and(|e| e <= now) {
        return Err(not_live(&cur, now));
    }
    let a = sqlx::query_as::<_, Appointment>(&format!(
        "UPDATE appointments SET status = 'booked', expires_at = NULL, updated_at = $2, version = version + 1
          WHERE id = $1 RETURNING {COLS}"
    ))
    .bind(id)
    .bind(now)
    .fetch_one(&mut *tx)
    .await?;
    if let Some(w) = a.waitlist_id {
        sqlx::query("UPDATE waitlist SET status = 'claimed', updated_at = $2 WHERE id = $1")
            .bind(w)
            .bind(now)
            .execute(&mut *tx)
            .await?;
    }
    emit(&mut tx, now, "booked", &a).await?;
    tx.commit().await?;
    Ok((a.clone(), vec![("booked", a)]))
}

/// Cancels a hold or booking; the freed time is offered to the waitlist in the same
/// transaction.
pub async fn cancel(state: &AppState, id: Uuid, by: Uuid, reason: &str) -> Result<Done, ApiError> {
    let now = state.clock.now();
    let mut tx = state.stores.pg.begin().await?;
    let cur = lock_row(&mut tx, id).await?;
    if cur.status == "cancelled" {
        return Ok((cur, Vec::new()));
    }
    if !matches!(cur.status.as_str(), "held" | "booked") {
        return Err(ApiError::new(Code::Conflict, format!("the appointment is {}", cur.status)));
    }
    let a = sqlx::query_as::<_, Appointment>(&format!(
        "UPDATE appointments SET status = 'cancelled', cancel_reason = $2, cancelled_by = $3, expires_at = NULL,
                updated_at = $4, version = version + 1
          WHERE id = $1 RETURNING {COLS}"
    ))
    .bind(id)
    .bind(reason)
    .bind(by)
    .bind(now)
    .fetch_one(&mut *tx)
    .await?;
    if a.waitlist_id.is_some() {
        // A patient declining their own offer passes it on.
        requeue_offer(&mut tx, &cur, now).await?;
    }
    emit(&mut tx, now, "cancelled", &a).await?;
    let mut events = vec![("cancelled", a.clone())];
    if let Some(o) = offer_freed(&mut tx, &a, now).await? {
        events.push(("offered", o));
    }
    tx.commit().await?;
    Ok((a, events))
}

/// Moves an appointment atomically: the new row is taken and the old released in one
/// transaction, so a lost race leaves the original untouched.
pub async fn reschedule(
    state: &AppState,
    id: Uuid,
    by: Uuid,
    ty: &AppointmentType,
    new_start: DateTime<Utc>,
) -> Result<Done, ApiError> {
    let now = state.clock.now();
    let (start, end, bs, be) = ty.block(new_start);
    let mut tx = state.stores.pg.begin().await?;
    // The calendar lock before the row lock, in the same order as a hold takes them (an
    // appointment's clinician never changes, so a plain read names the calendar).
    let clinician: Option<Uuid> = sqlx::query_scalar("SELECT clinician_id FROM appointments WHERE id = $1")
        .bind(id)
        .fetch_optional(&mut *tx)
        .await?;
    if let Some(c) = clinician {
        lock_calendar(&mut tx, c).await?;
    }
    let cur = lock_row(&mut tx, id).await?;
    if !matches!(cur.status.as_str(), "held" | "booked") || cur.expires_at.is_some_and(|e| e <= now) {
        return Err(not_live(&cur, now));
    }
    let mut events = Vec::new();
    for a in expire_overlapping(&mut tx, cur.clinician_id, bs, be, now).await? {
        events.push(("expired", a));
    }
    let old = sqlx::query_as::<_, Appointment>(&format!(
        "UPDATE appointments SET status = 'cancelled', cancel_reason = 'rescheduled', cancelled_by = $2,
                expires_at = NULL, updated_at = $3, version = version + 1
          WHERE id = $1 RETURNING {COLS}"
    ))
    .bind(id)
    .bind(by)
    .bind(now)
    .fetch_one(&mut *tx)
    .await?;
    let expires = if cur.status == "held" { Some(now + HOLD_TTL) } else { None };
    let new = sqlx::query_as::<_, Appointment>(&format!(
        "INSERT INTO appointments (id, clinician_id, patient_id, type_id, modality, start_at, end_at, block_start, block_end,
                                   status, expires_at, created_by, rescheduled_from, created_at, updated_at)
         VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12,$13,$14,$14) RETURNING {COLS}"
    ))
    .bind(Uuid::now_v7())
    .bind(cur.clinician_id)
    .bind(cur.patient_id)
    .bind(ty.id)
    .bind(&ty.modality)
    .bind(start)
    .bind(end)
    .bind(bs)
    .bind(be)
    .bind(&cur.status)
    .bind(expires)
    .bind(by)
    .bind(cur.id)
    .bind(now)
    .fetch_one(&mut *tx)
    .await
    .map_err(db_error)?;
    emit(&mut tx, now, "rescheduled", &new).await?;
    events.push(("rescheduled", new.clone()));
    if let Some(o) = offer_freed(&mut tx, &old, now).await? {
        events.push(("offered", o));
    }
    tx.commit().await.map_err(db_error)?;
    Ok((new, events))
}

/// Marks a booked appointment whose start has passed as a no-show.
pub async fn no_show(state: &AppState, id: Uuid) -> Result<Done, ApiError> {
    let now = state.clock.now();
    let mut tx = state.stores.pg.begin().await?;
    let cur = lock_row(&mut tx, id).await?;
    if cur.status == "no_show" {
        return Ok((cur, Vec::new()));
    }
    if cur.status != "booked" {
        return Err(ApiError::new(Code::Conflict, format!("the appointment is {}", cur.status)));
    }
    if cur.start_at > now {
        return Err(ApiError::new(Code::Conflict, "the appointment has not started yet"));
    }
    let a = sqlx::query_as::<_, Appointment>(&format!(
        "UPDATE appointments SET status = 'no_show', updated_at = $2, version = version + 1 WHERE id = $1 RETURNING {COLS}"
    ))
    .bind(id)
    .bind(now)
    .fetch_one(&mut *tx)
    .await?;
    emit(&mut tx, now, "no_show", &a).await?;
    tx.commit().await?;
    Ok((a.clone(), vec![("no_show", a)]))
}

/// Offers the time `freed` occupied to the first waiting patient whose range covers it (and
/// who has not let this slot lapse before): a hold of their type, for [`OFFER_TTL`].
async fn offer_freed(
    conn: &mut PgConnection,
    freed: &Appointment,
    now: DateTime<Utc>,
) -> Result<Option<Appointment>, ApiError> {
    if freed.start_at <= now {
        return Ok(None);
    }
    let cands = sqlx::query(
        "SELECT w.id, w.patient_id, w.type_id FROM waitlist w
          WHERE w.clinician_id = $1 AND w.status = 'waiting' AND w.from_at <= $2 AND w.to_at >= $3
            AND NOT EXISTS (SELECT 1 FROM waitlist_declined d WHERE d.waitlist_id = w.id AND d.start_at = $2)
          ORDER BY w.created_at, w.id
          LIMIT 5
          FOR UPDATE SKIP LOCKED",
    )
    .bind(freed.clinician_id)
    .bind(freed.start_at)
    .bind(freed.end_at)
    .fetch_all(&mut *conn)
    .await?;
    for row in cands {
        let wid: Uuid = row.get("id");
        let patient: Uuid = row.get("patient_id");
        let type_id: Uuid = row.get("type_id");
        let Some(ty) = sqlx::query_as::<_, AppointmentType>(
            "SELECT id, clinician_id, name, duration_min, buffer_before_min, buffer_after_min, modality, active
               FROM appointment_types WHERE id = $1",
        )
        .bind(type_id)
        .fetch_optional(&mut *conn)
        .await?
        else {
            continue;
        };
        let (start, end, bs, be) = ty.block(freed.start_at);
        // A savepoint: if this patient's type does not fit, try the next.
        let mut sp = sqlx::Connection::begin(&mut *conn).await?;
        let res = sqlx::query_as::<_, Appointment>(&format!(
            "INSERT INTO appointments (id, clinician_id, patient_id, type_id, modality, start_at, end_at, block_start, block_end,
                                       status, expires_at, created_by, waitlist_id, created_at, updated_at)
             SELECT $1,$2,$3,$4,$5,$6,$7,$8,$9,'held',$10, u.user_id, $11, $12, $12
               FROM (SELECT coalesce(p.user_id, $13) AS user_id FROM patients p WHERE p.id = $3) u
             RETURNING {COLS}"
        ))
        .bind(Uuid::now_v7())
        .bind(freed.clinician_id)
        .bind(patient)
        .bind(ty.id)
        .bind(&ty.modality)
        .bind(start)
        .bind(end)
        .bind(bs)
        .bind(be)
        .bind(now + OFFER_TTL)
        .bind(wid)
        .bind(now)
        .bind(freed.clinician_id)
        .fetch_optional(&mut *sp)
        .await;
        match res {
            Ok(Some(a)) => {
                sp.commit().await?;
                sqlx::query(
                    "UPDATE waitlist SET status = 'offered', offered_appointment_id = $2, offers_made = offers_made + 1,
                            updated_at = $3 WHERE id = $1",
                )
                .bind(wid)
                .bind(a.id)
                .bind(now)
                .execute(&mut *conn)
                .await?;
                emit(conn, now, "offered", &a).await?;
                return Ok(Some(a));
            }
            Ok(None) => sp.rollback().await?,
            Err(e) => {
                sp.rollback().await?;
                if !matches!(db_error(e).code, Code::SlotTaken) {
                    return Err(ApiError::internal("waitlist offer failed"));
                }
            }
        }
    }
    Ok(None)
}

/// A waitlist entry.
#[derive(Debug, Clone, Serialize, ToSchema, sqlx::FromRow)]
pub struct WaitlistEntry {
    pub id: Uuid,
    pub clinician_id: Uuid,
    pub patient_id: Uuid,
    pub type_id: Uuid,
    pub from_at: DateTime<Utc>,
    pub to_at: DateTime<Utc>,
    /// `waiting`, `offered`, `claimed` or `cancelled`.
    pub status: String,
    pub offered_appointment_id: Option<Uuid>,
    pub offers_made: i32,
    pub created_at: DateTime<Utc>,
}

pub const WAITLIST_COLS: &str =
    "id, clinician_id, patient_id, type_id, from_at, to_at, status, offered_appointment_id, offers_made, created_at";

/// Expires every lapsed hold (this node's share: rows locked by another sweeper are
/// skipped), returns waitlist offers to the queue and offers each freed slot on.
pub async fn sweep(state: &AppState) -> Result<usize, ApiError> {
    let now = state.clock.now();
    let mut tx = state.stores.pg.begin().await?;
    let expired = sqlx::query_as::<_, Appointment>(&format!(
        "UPDATE appointments SET status = 'expired', updated_at = $1, version = version + 1
          WHERE id IN (SELECT id FROM appointments WHERE status = 'held' AND expires_at <= $1
                        ORDER BY expires_at LIMIT 500 FOR UPDATE SKIP LOCKED)
          RETURNING {COLS}"
    ))
    .bind(now)
    .fetch_all(&mut *tx)
    .await?;
    let mut events = Vec::new();
    for a in &expired {
        requeue_offer(&mut tx, a, now).await?;
        emit(&mut tx, now, "expired", a).await?;
        events.push(("expired", a.clone()));
        if let Some(o) = offer_freed(&mut tx, a, now).await? {
            events.push(("offered", o));
        }
    }
    tx.commit().await?;
    publish(state, events);
    Ok(expired.len())
}

/// Runs [`sweep`] every [`SWEEP_EVERY`] until shutdown.
pub fn spawn_sweeper(state: actix_web::web::Data<AppState>) {
    let mut stop = state.lifecycle.subscribe();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(SWEEP_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {
                    if let Err(e) = sweep(&state).await {
                        tracing::warn!(code = e.code.as_str(), "booking sweep failed");
                    }
                }
                _ = stop.changed() => break,
            }
        }
    });
}

/// Rows that break the invariant (two live rows of one clinician overlapping); always zero.
pub const OVERLAP_QUERY: &str = "SELECT count(*) FROM appointments a JOIN appointments b
    ON a.clinician_id = b.clinician_id AND a.id < b.id
   AND tstzrange(a.block_start, a.block_end, '[)') && tstzrange(b.block_start, b.block_end, '[)')
 WHERE a.status IN ('held','booked','no_show') AND b.status IN ('held','booked','no_show')";

/// `seed-demo`: gives every clinician without a schedule weekday hours (09:00–17:00 in
/// Europe/London) and two appointment types (30 min telehealth; 45 min in person with
/// 10 min buffers). Idempotent.
pub async fn seed_schedules(state: &AppState) -> anyhow::Result<()> {
    let now = state.clock.now();
    let clinicians: Vec<Uuid> = sqlx::query_scalar(
        "SELECT u.id FROM users u WHERE u.role = 'clinician' AND NOT EXISTS (SELECT 1 FROM schedules s WHERE s.clinician_id = u.id)",
    )
    .fetch_all(&state.stores.pg)
    .await?;
    for c in clinicians {
        let mut tx = state.stores.pg.begin().await?;
        sqlx::query(
            "INSERT INTO schedules (clinician_id, tz, horizon_days, min_notice_min, updated_at) VALUES ($1, 'Europe/London', 60, 60, $2)",
        )
        .bind(c)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        for wd in 1..=5i16 {
            sqlx::query(
                "INSERT INTO schedule_rules (id, clinician_id, weekday, start_time, end_time) VALUES ($1,$2,$3,'09:00','17:00')",
            )
            .bind(Uuid::now_v7())
            .bind(c)
            .bind(wd)
            .execute(&mut *tx)
            .await?;
        }
        for (name, dur, buf, modality) in
            [("Wound review (video)", 30, 0, "telehealth"), ("Dressing change", 45, 10, "in_person")]
        {
            sqlx::query(
                "INSERT INTO appointment_types (id, clinician_id, name, duration_min, buffer_before_min, buffer_after_min, modality, created_at)
                 VALUES ($1,$2,$3,$4,$5,$5,$6,$7)",
            )
            .bind(Uuid::now_v7())
            .bind(c)
            .bind(name)
            .bind(dur)
            .bind(buf)
            .bind(modality)
            .bind(now)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
    }
    Ok(())
}

/// Whether `pg` holds any overlap (the invariant query).
pub async fn overlaps(pg: &PgPool) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar(OVERLAP_QUERY).fetch_one(pg).await
}
