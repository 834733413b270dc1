//! Booking in PostgreSQL: schedules, appointment types, appointments, the waitlist and the
//! booking outbox. [`PgBookingStore`] is the calendars' [`BookingStore`]; the free functions
//! are the reads and writes that take no calendar time (schedules, listings, the waitlist).
//!
//! Every change is one transaction that also appends its [`BookingEvent`]s to
//! `booking_outbox`. The `appointments_no_overlap` exclusion constraint makes overlapping
//! live bookings of one clinician impossible, whichever node writes (SQLSTATE 23P01 →
//! [`BookingError::SlotTaken`]). Holds expire by the application clock: a write first marks
//! the expired holds in its own range `expired`, and [`sweep`] expires the rest, passing
//! freed slots to the waitlist.

use async_trait::async_trait;
use chrono::{DateTime, NaiveTime, Utc};
use chrono_tz::Tz;
use coherency_actors::calendar::{
    slots, Appointment, AppointmentType, BookingError, BookingEvent, BookingStore, Done, EventKind, NewHold, Occupied,
    Schedule, Snapshot, HOLD_TTL, LIVE, MAX_ACTIVE_HOLDS, OFFER_TTL,
};
use serde::Serialize;
use sqlx::{PgConnection, PgPool};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::store::pg::DbFailure;

// Every statement is written out in full so the build checks it (`sqlx::query!`): the
// appointment queries all answer the columns of [`AppointmentRow`], and the live-overlap
// condition (clinician `$1`, blocked range overlapping `[$2, $3)`, expired holds at time `$4`
// excluded) appears in [`busy`] and [`taken`] alike.

struct AppointmentRow {
    id: Uuid,
    clinician_id: Uuid,
    patient_id: Uuid,
    type_id: Uuid,
    modality: String,
    start_at: DateTime<Utc>,
    end_at: DateTime<Utc>,
    status: String,
    expires_at: Option<DateTime<Utc>>,
    cancel_reason: Option<String>,
    rescheduled_from: Option<Uuid>,
    waitlist_id: Option<Uuid>,
    version: i32,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
    block_start: DateTime<Utc>,
    block_end: DateTime<Utc>,
}

impl From<AppointmentRow> for Appointment {
    fn from(r: AppointmentRow) -> Self {
        Appointment {
            id: r.id,
            clinician_id: r.clinician_id,
            patient_id: r.patient_id,
            type_id: r.type_id,
            modality: r.modality,
            start_at: r.start_at,
            end_at: r.end_at,
            status: r.status,
            expires_at: r.expires_at,
            cancel_reason: r.cancel_reason,
            rescheduled_from: r.rescheduled_from,
            waitlist_id: r.waitlist_id,
            version: r.version,
            created_at: r.created_at,
            updated_at: r.updated_at,
            block_start: r.block_start,
            block_end: r.block_end,
        }
    }
}

struct TypeRow {
    id: Uuid,
    clinician_id: Uuid,
    name: String,
    duration_min: i32,
    buffer_before_min: i32,
    buffer_after_min: i32,
    modality: String,
    active: bool,
}

impl From<TypeRow> for AppointmentType {
    fn from(r: TypeRow) -> Self {
        AppointmentType {
            id: r.id,
            clinician_id: r.clinician_id,
            name: r.name,
            duration_min: r.duration_min,
            buffer_before_min: r.buffer_before_min,
            buffer_after_min: r.buffer_after_min,
            modality: r.modality,
            active: r.active,
        }
    }
}

/// A waitlist entry.
#[derive(Debug, Clone, Serialize, ToSchema)]
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

/// A database failure in the catalogue's terms (the same codes and messages every other
/// route answers; the cause is logged, never sent).
pub fn db(e: sqlx::Error) -> BookingError {
    let failure = DbFailure::of(&e);
    if failure == DbFailure::Internal {
        tracing::error!(error = %e, "booking store failed");
    }
    BookingError::Store { code: failure.code(), message: failure.message().into() }
}

/// [`db`], except that the exclusion-constraint violation is [`BookingError::SlotTaken`].
fn db_write(e: sqlx::Error) -> BookingError {
    if let sqlx::Error::Database(d) = &e {
        if d.code().as_deref() == Some("23P01") {
            return BookingError::SlotTaken;
        }
    }
    db(e)
}

type Result<T, E = BookingError> = std::result::Result<T, E>;

// ---------------------------------------------------------------------------------------------
// Reads

pub async fn load(pg: &PgPool, id: Uuid) -> Result<Option<Appointment>> {
    let row = sqlx::query_as!(
        AppointmentRow,
        "SELECT id, clinician_id, patient_id, type_id, modality, start_at, end_at, status, expires_at, cancel_reason,
                rescheduled_from, waitlist_id, version, created_at, updated_at, block_start, block_end
           FROM appointments WHERE id = $1",
        id,
    )
    .fetch_optional(pg)
    .await
    .map_err(db)?;
    Ok(row.map(Into::into))
}

pub async fn load_type(pg: &PgPool, id: Uuid) -> Result<Option<AppointmentType>> {
    let row = sqlx::query_as!(
        TypeRow,
        "SELECT id, clinician_id, name, duration_min, buffer_before_min, buffer_after_min, modality, active
           FROM appointment_types WHERE id = $1",
        id,
    )
    .fetch_optional(pg)
    .await
    .map_err(db)?;
    Ok(row.map(Into::into))
}

/// The clinician's active appointment types, oldest first.
pub async fn list_types(pg: &PgPool, clinician_id: Uuid) -> Result<Vec<AppointmentType>> {
    let rows = sqlx::query_as!(
        TypeRow,
        "SELECT id, clinician_id, name, duration_min, buffer_before_min, buffer_after_min, modality, active
           FROM appointment_types WHERE clinician_id = $1 AND active ORDER BY created_at, id",
        clinician_id,
    )
    .fetch_all(pg)
    .await
    .map_err(db)?;
    Ok(rows.into_iter().map(Into::into).collect())
}

/// One clinician's schedule with its rules and exceptions, in one round trip (a booking
/// attempt reads it every time).
pub async fn load_schedule(pg: &PgPool, clinician_id: Uuid) -> Result<Option<Schedule>> {
    // Each array is sorted on every column of its table, so the arrays of one table line up
    // row by row even where rows share a weekday or a day.
    // `ARRAY(subquery)` is never NULL (an empty array when no row matches); the exception
    // times are NULL on whole-day exceptions.
    let Some(row) = sqlx::query!(
        r#"SELECT s.tz, s.horizon_days, s.min_notice_min,
                ARRAY(SELECT weekday FROM schedule_rules r WHERE r.clinician_id = $1 ORDER BY weekday, start_time, end_time) AS "r_weekday!",
                ARRAY(SELECT start_time FROM schedule_rules r WHERE r.clinician_id = $1 ORDER BY weekday, start_time, end_time) AS "r_start!",
                ARRAY(SELECT end_time FROM schedule_rules r WHERE r.clinician_id = $1 ORDER BY weekday, start_time, end_time) AS "r_end!",
                ARRAY(SELECT day FROM schedule_exceptions e WHERE e.clinician_id = $1 ORDER BY day, kind, start_time, end_time) AS "e_day!",
                ARRAY(SELECT kind FROM schedule_exceptions e WHERE e.clinician_id = $1 ORDER BY day, kind, start_time, end_time) AS "e_kind!",
                ARRAY(SELECT start_time FROM schedule_exceptions e WHERE e.clinician_id = $1 ORDER BY day, kind, start_time, end_time) AS "e_start!: Vec<Option<NaiveTime>>",
                ARRAY(SELECT end_time FROM schedule_exceptions e WHERE e.clinician_id = $1 ORDER BY day, kind, start_time, end_time) AS "e_end!: Vec<Option<NaiveTime>>"
           FROM schedules s WHERE s.clinician_id = $1"#,
        clinician_id,
    )
    .fetch_optional(pg)
    .await
    .map_err(db)?
    else {
        return Ok(None);
    };
    let tz: Tz = row.tz.parse().map_err(|_| {
        tracing::error!("stored time zone does not parse");
        BookingError::internal()
    })?;
    let rules = row
        .r_weekday
        .into_iter()
        .zip(row.r_start)
        .zip(row.r_end)
        .map(|((weekday, start), end)| slots::Rule { weekday: weekday as u32, start, end })
        .collect();
    let exceptions = row
        .e_day
        .into_iter()
        .zip(row.e_kind)
        .zip(row.e_start.into_iter().zip(row.e_end))
        .map(|((day, kind), (s, e))| slots::Exception { day, extra: kind == "extra", hours: s.zip(e) })
        .collect();
    Ok(Some(Schedule {
        clinician_id,
        tz,
        horizon_days: row.horizon_days,
        min_notice_min: row.min_notice_min,
        rules,
        exceptions,
    }))
}

/// Live rows (expired holds excluded) whose blocked range overlaps `[from, to)`, by start
/// of that range.
pub async fn busy(
    pg: &PgPool,
    clinician_id: Uuid,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Result<Vec<Appointment>> {
    let rows = sqlx::query_as!(
        AppointmentRow,
        "SELECT id, clinician_id, patient_id, type_id, modality, start_at, end_at, status, expires_at, cancel_reason,
                rescheduled_from, waitlist_id, version, created_at, updated_at, block_start, block_end
           FROM appointments
          WHERE clinician_id = $1 AND status IN ('held','booked','no_show')
            AND NOT (status = 'held' AND expires_at <= $4)
            AND tstzrange(block_start, block_end, '[)') && tstzrange($2, $3, '[)')
          ORDER BY block_start",
        clinician_id,
        from,
        to,
        now,
    )
    .fetch_all(pg)
    .await
    .map_err(db)?;
    Ok(rows.into_iter().map(Into::into).collect())
}

/// Whether a live row (expired holds excluded) already blocks part of `[bs, be)`: a plain
/// read, no lock and no transaction. A yes is a final answer (the slot was taken when we
/// looked, which is what a caller arriving a moment later would also have seen); a no
/// proves nothing, and the attempt goes on to the calendar's mailbox and the constraint.
pub async fn taken(
    pg: &PgPool,
    clinician_id: Uuid,
    bs: DateTime<Utc>,
    be: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Result<bool> {
    sqlx::query_scalar!(
        r#"SELECT EXISTS (SELECT 1 FROM appointments
          WHERE clinician_id = $1 AND status IN ('held','booked','no_show')
            AND NOT (status = 'held' AND expires_at <= $4)
            AND tstzrange(block_start, block_end, '[)') && tstzrange($2, $3, '[)')) AS "taken!""#,
        clinician_id,
        bs,
        be,
        now,
    )
    .fetch_one(pg)
    .await
    .map_err(db)
}

/// The existing appointment a (caller, idempotency key) pair created, if any.
pub async fn by_idempotency_key(pg: &PgPool, created_by: Uuid, key: &str) -> Result<Option<Appointment>> {
    let row = sqlx::query_as!(
        AppointmentRow,
        "SELECT id, clinician_id, patient_id, type_id, modality, start_at, end_at, status, expires_at, cancel_reason,
                rescheduled_from, waitlist_id, version, created_at, updated_at, block_start, block_end
           FROM appointments WHERE created_by = $1 AND idempotency_key = $2",
        created_by,
        key,
    )
    .fetch_optional(pg)
    .await
    .map_err(db)?;
    Ok(row.map(Into::into))
}

/// The clinician's calendar for their calendar actor's view.
pub async fn load_calendar(pg: &PgPool, clinician_id: Uuid, now: DateTime<Utc>) -> Result<Snapshot> {
    let schedule = load_schedule(pg, clinician_id).await?;
    let types = list_types(pg, clinician_id).await?;
    let rows = sqlx::query!(
        "SELECT id, block_start, block_end, status, expires_at, version FROM appointments
          WHERE clinician_id = $1 AND status = ANY($3) AND block_end > $2",
        clinician_id,
        now,
        LIVE as &[&str],
    )
    .fetch_all(pg)
    .await
    .map_err(db)?;
    let occupied = rows
        .into_iter()
        .map(|r| Occupied {
            appointment_id: r.id,
            status: r.status,
            block_start: r.block_start,
            block_end: r.block_end,
            expires_at: r.expires_at,
            version: r.version,
        })
        .collect();
    Ok(Snapshot { schedule, types, occupied })
}

/// Appointments by start (at most 500): of `patient` and/or `clinician`, ending after
/// `from` and starting before `to`, each filter only when given.
pub async fn search(
    pg: &PgPool,
    patient: Option<Uuid>,
    clinician: Option<Uuid>,
    from: Option<DateTime<Utc>>,
    to: Option<DateTime<Utc>>,
) -> Result<Vec<Appointment>> {
    let rows = sqlx::query_as!(
        AppointmentRow,
        "SELECT id, clinician_id, patient_id, type_id, modality, start_at, end_at, status, expires_at, cancel_reason,
                rescheduled_from, waitlist_id, version, created_at, updated_at, block_start, block_end
           FROM appointments
          WHERE ($1::uuid IS NULL OR patient_id = $1) AND ($2::uuid IS NULL OR clinician_id = $2)
            AND ($3::timestamptz IS NULL OR end_at > $3) AND ($4::timestamptz IS NULL OR start_at < $4)
          ORDER BY start_at, id LIMIT 500",
        patient,
        clinician,
        from,
        to,
    )
    .fetch_all(pg)
    .await
    .map_err(db)?;
    Ok(rows.into_iter().map(Into::into).collect())
}

/// The clinician an appointment type belongs to (active or not).
pub async fn type_clinician(pg: &PgPool, type_id: Uuid) -> Result<Option<Uuid>> {
    sqlx::query_scalar!("SELECT clinician_id FROM appointment_types WHERE id = $1", type_id)
        .fetch_optional(pg)
        .await
        .map_err(db)
}

/// Whether `id` is a clinician's user id.
pub async fn is_clinician(pg: &PgPool, id: Uuid) -> Result<bool> {
    sqlx::query_scalar!(
        r#"SELECT EXISTS (SELECT 1 FROM users WHERE id = $1 AND role = 'clinician') AS "clinician!""#,
        id
    )
    .fetch_one(pg)
    .await
    .map_err(db)
}

/// How many pairs of live rows of one clinician overlap (the invariant query): always zero.
pub async fn overlaps(pg: &PgPool) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar!(
        r#"SELECT count(*) AS "n!" FROM appointments a JOIN appointments b
            ON a.clinician_id = b.clinician_id AND a.id < b.id
           AND tstzrange(a.block_start, a.block_end, '[)') && tstzrange(b.block_start, b.block_end, '[)')
         WHERE a.status IN ('held','booked','no_show') AND b.status IN ('held','booked','no_show')"#
    )
    .fetch_one(pg)
    .await
}

// ---------------------------------------------------------------------------------------------
// Schedules, types and the waitlist (no calendar time taken)

/// A schedule to store (the rules' and exceptions' times are wall-clock in `tz`).
pub struct NewSchedule<'a> {
    pub tz: Tz,
    pub horizon_days: i32,
    pub min_notice_min: i32,
    pub rules: &'a [slots::Rule],
    pub exceptions: &'a [slots::Exception],
}

/// Replaces the clinician's schedule, rules and exceptions in one transaction.
pub async fn put_schedule(pg: &PgPool, clinician_id: Uuid, s: NewSchedule<'_>, now: DateTime<Utc>) -> Result<()> {
    let mut tx = pg.begin().await.map_err(db)?;
    sqlx::query!(
        "INSERT INTO schedules (clinician_id, tz, horizon_days, min_notice_min, updated_at) VALUES ($1,$2,$3,$4,$5)
         ON CONFLICT (clinician_id) DO UPDATE SET tz = $2, horizon_days = $3, min_notice_min = $4, updated_at = $5",
        clinician_id,
        s.tz.name(),
        s.horizon_days,
        s.min_notice_min,
        now,
    )
    .execute(&mut *tx)
    .await
    .map_err(db)?;
    sqlx::query!("DELETE FROM schedule_rules WHERE clinician_id = $1", clinician_id)
        .execute(&mut *tx)
        .await
        .map_err(db)?;
    sqlx::query!("DELETE FROM schedule_exceptions WHERE clinician_id = $1", clinician_id)
        .execute(&mut *tx)
        .await
        .map_err(db)?;
    for r in s.rules {
        sqlx::query!(
            "INSERT INTO schedule_rules (id, clinician_id, weekday, start_time, end_time) VALUES ($1,$2,$3,$4,$5)",
            Uuid::now_v7(),
            clinician_id,
            r.weekday as i16,
            r.start,
            r.end,
        )
        .execute(&mut *tx)
        .await
        .map_err(db)?;
    }
    for e in s.exceptions {
        sqlx::query!(
            "INSERT INTO schedule_exceptions (id, clinician_id, day, kind, start_time, end_time) VALUES ($1,$2,$3,$4,$5,$6)",
            Uuid::now_v7(),
            clinician_id,
            e.day,
            if e.extra { "extra" } else { "off" },
            e.hours.map(|h| h.0),
            e.hours.map(|h| h.1),
        )
        .execute(&mut *tx)
        .await
        .map_err(db)?;
    }
    tx.commit().await.map_err(db)
}

/// A new appointment type of a clinician.
pub struct NewType<'a> {
    pub name: &'a str,
    pub duration_min: i32,
    pub buffer_before_min: i32,
    pub buffer_after_min: i32,
    pub modality: &'a str,
}

pub async fn create_type(
    pg: &PgPool,
    clinician_id: Uuid,
    t: NewType<'_>,
    now: DateTime<Utc>,
) -> Result<AppointmentType> {
    let row = sqlx::query_as!(
        TypeRow,
        "INSERT INTO appointment_types (id, clinician_id, name, duration_min, buffer_before_min, buffer_after_min, modality, created_at)
         VALUES ($1,$2,$3,$4,$5,$6,$7,$8)
         RETURNING id, clinician_id, name, duration_min, buffer_before_min, buffer_after_min, modality, active",
        Uuid::now_v7(),
        clinician_id,
        t.name,
        t.duration_min,
        t.buffer_before_min,
        t.buffer_after_min,
        t.modality,
        now,
    )
    .fetch_one(pg)
    .await
    .map_err(db)?;
    Ok(row.into())
}

/// Puts a patient on the clinician's waitlist for `[from, to)`.
pub async fn join_waitlist(
    pg: &PgPool,
    clinician_id: Uuid,
    patient_id: Uuid,
    type_id: Uuid,
    (from, to): (DateTime<Utc>, DateTime<Utc>),
    now: DateTime<Utc>,
) -> Result<WaitlistEntry> {
    sqlx::query_as!(
        WaitlistEntry,
        "INSERT INTO waitlist (id, clinician_id, patient_id, type_id, from_at, to_at, status, created_at, updated_at)
         VALUES ($1,$2,$3,$4,$5,$6,'waiting',$7,$7)
         RETURNING id, clinician_id, patient_id, type_id, from_at, to_at, status, offered_appointment_id, offers_made, created_at",
        Uuid::now_v7(),
        clinician_id,
        patient_id,
        type_id,
        from,
        to,
        now,
    )
    .fetch_one(pg)
    .await
    .map_err(db)
}

pub async fn waitlist_entry(pg: &PgPool, id: Uuid) -> Result<Option<WaitlistEntry>> {
    sqlx::query_as!(
        WaitlistEntry,
        "SELECT id, clinician_id, patient_id, type_id, from_at, to_at, status, offered_appointment_id, offers_made, created_at
           FROM waitlist WHERE id = $1",
        id,
    )
    .fetch_optional(pg)
        .await
        .map_err(db)
}

/// `seed-demo`: gives every clinician without a schedule weekday hours (09:00–17:00 in
/// Europe/London) and two appointment types (30 min telehealth; 45 min in person with
/// 10 min buffers). Idempotent.
pub async fn seed_schedules(pg: &PgPool, now: DateTime<Utc>) -> Result<(), sqlx::Error> {
    let clinicians: Vec<Uuid> = sqlx::query_scalar!(
        "SELECT u.id FROM users u WHERE u.role = 'clinician' AND NOT EXISTS (SELECT 1 FROM schedules s WHERE s.clinician_id = u.id)",
    )
    .fetch_all(pg)
    .await?;
    for c in clinicians {
        let mut tx = pg.begin().await?;
        sqlx::query!(
            "INSERT INTO schedules (clinician_id, tz, horizon_days, min_notice_min, updated_at) VALUES ($1, 'Europe/London', 60, 60, $2)",
            c,
            now,
        )
        .execute(&mut *tx)
        .await?;
        for wd in 1..=5i16 {
            sqlx::query!(
                "INSERT INTO schedule_rules (id, clinician_id, weekday, start_time, end_time) VALUES ($1,$2,$3,'09:00','17:00')",
                Uuid::now_v7(),
                c,
                wd,
            )
            .execute(&mut *tx)
            .await?;
        }
        for (name, dur, buf, modality) in
            [("Wound review (video)", 30, 0, "telehealth"), ("Dressing change", 45, 10, "in_person")]
        {
            sqlx::query!(
                "INSERT INTO appointment_types (id, clinician_id, name, duration_min, buffer_before_min, buffer_after_min, modality, created_at)
                 VALUES ($1,$2,$3,$4,$5,$5,$6,$7)",
                Uuid::now_v7(),
                c,
                name,
                dur,
                buf,
                modality,
                now,
            )
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Calendar writes

/// Appends an event to the outbox (inside the caller's transaction).
async fn emit(conn: &mut PgConnection, now: DateTime<Utc>, kind: EventKind, a: &Appointment) -> Result<BookingEvent> {
    let ev = BookingEvent::of(kind, a);
    let payload = serde_json::to_value(&ev).map_err(|e| {
        tracing::error!(error = %e, "booking event does not encode");
        BookingError::internal()
    })?;
    sqlx::query!(
        "INSERT INTO booking_outbox (at, kind, appointment_id, clinician_id, patient_id, payload) VALUES ($1,$2,$3,$4,$5,$6)",
        now,
        kind.as_str(),
        a.id,
        a.clinician_id,
        a.patient_id,
        payload,
    )
    .execute(conn)
    .await
    .map_err(db)?;
    Ok(ev)
}

/// First key of the clinician calendar locks (two-key advisory locks; the audit chain uses
/// the one-key space, which does not overlap).
const CALENDAR_LOCK_CLASS: i32 = 0x6361_6c31;

/// Takes the clinician's calendar lock until the transaction ends. Writers that insert into
/// one calendar, on any node, then go one at a time: two overlapping inserts never wait on
/// each other's exclusion-constraint check, which Postgres can only settle as a deadlock
/// after `deadlock_timeout` (a second), aborting one with an error instead of `slot_taken`.
/// The constraint still decides; the lock only orders the writers.
async fn lock_calendar(conn: &mut PgConnection, clinician_id: Uuid) -> Result<()> {
    let b = clinician_id.as_bytes();
    let key = (0..4).fold(0i32, |k, i| k ^ i32::from_le_bytes([b[4 * i], b[4 * i + 1], b[4 * i + 2], b[4 * i + 3]]));
    // In FROM: the function returns `void`, which has no Rust type to check against.
    sqlx::query!(r#"SELECT 1 AS "locked!" FROM pg_advisory_xact_lock($1, $2)"#, CALENDAR_LOCK_CLASS, key)
        .fetch_one(conn)
        .await
        .map_err(db)?;
    Ok(())
}

async fn lock_row(conn: &mut PgConnection, id: Uuid) -> Result<Appointment> {
    sqlx::query_as!(
        AppointmentRow,
        "SELECT id, clinician_id, patient_id, type_id, modality, start_at, end_at, status, expires_at, cancel_reason,
                rescheduled_from, waitlist_id, version, created_at, updated_at, block_start, block_end
           FROM appointments WHERE id = $1 FOR UPDATE",
        id,
    )
    .fetch_optional(conn)
    .await
    .map_err(db)?
    .map(Into::into)
    .ok_or(BookingError::NotFound)
}

fn not_live(a: &Appointment, now: DateTime<Utc>) -> BookingError {
    match a.status.as_str() {
        "expired" => BookingError::HoldExpired,
        "held" if a.expires_at.is_some_and(|e| e <= now) => BookingError::HoldExpired,
        s => BookingError::NotLive(s.into()),
    }
}

async fn requeue_offer(conn: &mut PgConnection, a: &Appointment, now: DateTime<Utc>) -> Result<()> {
    if let Some(w) = a.waitlist_id {
        sqlx::query!(
            "UPDATE waitlist SET status = 'waiting', offered_appointment_id = NULL, updated_at = $2
              WHERE id = $1 AND status = 'offered'",
            w,
            now,
        )
        .execute(&mut *conn)
        .await
        .map_err(db)?;
        sqlx::query!(
            "INSERT INTO waitlist_declined (waitlist_id, start_at) VALUES ($1, $2) ON CONFLICT DO NOTHING",
            w,
            a.start_at,
        )
        .execute(&mut *conn)
        .await
        .map_err(db)?;
    }
    Ok(())
}

/// Marks expired holds overlapping `[bs, be)` expired (in the caller's transaction); waitlist
/// offers among them go back to the queue, remembering the slot the patient let lapse.
async fn expire_overlapping(
    conn: &mut PgConnection,
    clinician_id: Uuid,
    bs: DateTime<Utc>,
    be: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Result<Vec<BookingEvent>> {
    let expired = sqlx::query_as!(
        AppointmentRow,
        "UPDATE appointments SET status = 'expired', updated_at = $4, version = version + 1
          WHERE clinician_id = $1 AND status = 'held' AND expires_at <= $4
            AND tstzrange(block_start, block_end, '[)') && tstzrange($2, $3, '[)')
          RETURNING id, clinician_id, patient_id, type_id, modality, start_at, end_at, status, expires_at, cancel_reason,
                rescheduled_from, waitlist_id, version, created_at, updated_at, block_start, block_end",
        clinician_id,
        bs,
        be,
        now,
    )
    .fetch_all(&mut *conn)
    .await
    .map_err(db)?;
    let mut events = Vec::with_capacity(expired.len());
    for a in expired {
        let a = Appointment::from(a);
        requeue_offer(conn, &a, now).await?;
        events.push(emit(conn, now, EventKind::Expired, &a).await?);
    }
    Ok(events)
}

/// Holds (or books) a slot. The constraint decides races.
pub async fn hold(pg: &PgPool, h: &NewHold, ty: &AppointmentType, now: DateTime<Utc>) -> Result<Done> {
    let (start, end, bs, be) = ty.block(h.start);
    let mut tx = pg.begin().await.map_err(db)?;
    lock_calendar(&mut tx, h.clinician_id).await?;
    let mut events = expire_overlapping(&mut tx, h.clinician_id, bs, be, now).await?;
    if !h.confirm {
        // One patient's holds are counted under the patient row's lock, so concurrent holds
        // from one patient cannot all pass the cap.
        sqlx::query!(r#"SELECT 1 AS "locked!" FROM patients WHERE id = $1 FOR UPDATE"#, h.patient_id)
            .fetch_optional(&mut *tx)
            .await
            .map_err(db)?;
        let live: i64 = sqlx::query_scalar!(
            r#"SELECT count(*) AS "n!" FROM appointments WHERE patient_id = $1 AND status = 'held' AND expires_at > $2"#,
            h.patient_id,
            now,
        )
        .fetch_one(&mut *tx)
        .await
        .map_err(db)?;
        if live >= MAX_ACTIVE_HOLDS {
            return Err(BookingError::TooManyHolds);
        }
    }
    let (status, expires) = if h.confirm { ("booked", None) } else { ("held", Some(now + HOLD_TTL)) };
    let a: Appointment = sqlx::query_as!(
        AppointmentRow,
        "INSERT INTO appointments (id, clinician_id, patient_id, type_id, modality, start_at, end_at, block_start, block_end,
                                   status, expires_at, idempotency_key, created_by, created_at, updated_at)
         VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12,$13,$14,$14)
         RETURNING id, clinician_id, patient_id, type_id, modality, start_at, end_at, status, expires_at, cancel_reason,
                rescheduled_from, waitlist_id, version, created_at, updated_at, block_start, block_end",
        Uuid::now_v7(),
        h.clinician_id,
        h.patient_id,
        ty.id,
        &ty.modality,
        start,
        end,
        bs,
        be,
        status,
        expires,
        h.idempotency_key.as_deref(),
        h.created_by,
        now,
    )
    .fetch_one(&mut *tx)
    .await
    .map_err(db_write)?
    .into();
    let kind = if h.confirm { EventKind::Booked } else { EventKind::Held };
    events.push(emit(&mut tx, now, kind, &a).await?);
    tx.commit().await.map_err(db_write)?;
    Ok(Done { appointment: a, events })
}

/// Confirms a live hold. Confirming a booked appointment again answers it unchanged.
pub async fn confirm(pg: &PgPool, id: Uuid, now: DateTime<Utc>) -> Result<Done> {
    let mut tx = pg.begin().await.map_err(db)?;
    let cur = lock_row(&mut tx, id).await?;
    if cur.status == "booked" {
        return Ok(Done { appointment: cur, events: Vec::new() });
    }
    if cur.status != "held" || cur.expires_at.is_some_and(|e| e <= now) {
        return Err(not_live(&cur, now));
    }
    let a: Appointment = sqlx::query_as!(
        AppointmentRow,
        "UPDATE appointments SET status = 'booked', expires_at = NULL, updated_at = $2, version = version + 1
          WHERE id = $1
          RETURNING id, clinician_id, patient_id, type_id, modality, start_at, end_at, status, expires_at, cancel_reason,
                rescheduled_from, waitlist_id, version, created_at, updated_at, block_start, block_end",
        id,
        now,
    )
    .fetch_one(&mut *tx)
    .await
    .map_err(db)?
    .into();
    if let Some(w) = a.waitlist_id {
        sqlx::query!("UPDATE waitlist SET status = 'claimed', updated_at = $2 WHERE id = $1", w, now)
            .execute(&mut *tx)
            .await
            .map_err(db)?;
    }
    let ev = emit(&mut tx, now, EventKind::Booked, &a).await?;
    tx.commit().await.map_err(db)?;
    Ok(Done { appointment: a, events: vec![ev] })
}

/// Cancels a hold or booking; the freed time is offered to the waitlist in the same
/// transaction.
pub async fn cancel(pg: &PgPool, id: Uuid, by: Uuid, reason: &str, now: DateTime<Utc>) -> Result<Done> {
    let mut tx = pg.begin().await.map_err(db)?;
    let cur = lock_row(&mut tx, id).await?;
    if cur.status == "cancelled" {
        return Ok(Done { appointment: cur, events: Vec::new() });
    }
    if !matches!(cur.status.as_str(), "held" | "booked") {
        return Err(BookingError::NotLive(cur.status));
    }
    let a: Appointment = sqlx::query_as!(
        AppointmentRow,
        "UPDATE appointments SET status = 'cancelled', cancel_reason = $2, cancelled_by = $3, expires_at = NULL,
                updated_at = $4, version = version + 1
          WHERE id = $1
          RETURNING id, clinician_id, patient_id, type_id, modality, start_at, end_at, status, expires_at, cancel_reason,
                rescheduled_from, waitlist_id, version, created_at, updated_at, block_start, block_end",
        id,
        reason,
        by,
        now,
    )
    .fetch_one(&mut *tx)
    .await
    .map_err(db)?
    .into();
    if a.waitlist_id.is_some() {
        // A patient declining their own offer passes it on.
        requeue_offer(&mut tx, &cur, now).await?;
    }
    let mut events = vec![emit(&mut tx, now, EventKind::Cancelled, &a).await?];
    events.extend(offer_freed(&mut tx, &a, now).await?);
    tx.commit().await.map_err(db)?;
    Ok(Done { appointment: a, events })
}

/// Moves an appointment atomically: the new row is taken and the old released in one
/// transaction, so a lost race leaves the original untouched.
pub async fn reschedule(
    pg: &PgPool,
    id: Uuid,
    by: Uuid,
    ty: &AppointmentType,
    new_start: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Result<Done> {
    let (start, end, bs, be) = ty.block(new_start);
    let mut tx = pg.begin().await.map_err(db)?;
    // The calendar lock before the row lock, in the same order as a hold takes them (an
    // appointment's clinician never changes, so a plain read names the calendar).
    let clinician: Option<Uuid> = sqlx::query_scalar!("SELECT clinician_id FROM appointments WHERE id = $1", id)
        .fetch_optional(&mut *tx)
        .await
        .map_err(db)?;
    if let Some(c) = clinician {
        lock_calendar(&mut tx, c).await?;
    }
    let cur = lock_row(&mut tx, id).await?;
    if !matches!(cur.status.as_str(), "held" | "booked") || cur.expires_at.is_some_and(|e| e <= now) {
        return Err(not_live(&cur, now));
    }
    let mut events = expire_overlapping(&mut tx, cur.clinician_id, bs, be, now).await?;
    let old: Appointment = sqlx::query_as!(
        AppointmentRow,
        "UPDATE appointments SET status = 'cancelled', cancel_reason = 'rescheduled', cancelled_by = $2,
                expires_at = NULL, updated_at = $3, version = version + 1
          WHERE id = $1
          RETURNING id, clinician_id, patient_id, type_id, modality, start_at, end_at, status, expires_at, cancel_reason,
                rescheduled_from, waitlist_id, version, created_at, updated_at, block_start, block_end",
        id,
        by,
        now,
    )
    .fetch_one(&mut *tx)
    .await
    .map_err(db)?
    .into();
    let expires = if cur.status == "held" { Some(now + HOLD_TTL) } else { None };
    let new: Appointment = sqlx::query_as!(
        AppointmentRow,
        "INSERT INTO appointments (id, clinician_id, patient_id, type_id, modality, start_at, end_at, block_start, block_end,
                                   status, expires_at, created_by, rescheduled_from, created_at, updated_at)
         VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12,$13,$14,$14)
         RETURNING id, clinician_id, patient_id, type_id, modality, start_at, end_at, status, expires_at, cancel_reason,
                rescheduled_from, waitlist_id, version, created_at, updated_at, block_start, block_end",
        Uuid::now_v7(),
        cur.clinician_id,
        cur.patient_id,
        ty.id,
        &ty.modality,
        start,
        end,
        bs,
        be,
        &cur.status,
        expires,
        by,
        cur.id,
        now,
    )
    .fetch_one(&mut *tx)
    .await
    .map_err(db_write)?
    .into();
    events.push(emit(&mut tx, now, EventKind::Rescheduled, &new).await?);
    events.extend(offer_freed(&mut tx, &old, now).await?);
    tx.commit().await.map_err(db_write)?;
    Ok(Done { appointment: new, events })
}

/// Marks a booked appointment whose start has passed as a no-show.
pub async fn no_show(pg: &PgPool, id: Uuid, now: DateTime<Utc>) -> Result<Done> {
    let mut tx = pg.begin().await.map_err(db)?;
    let cur = lock_row(&mut tx, id).await?;
    if cur.status == "no_show" {
        return Ok(Done { appointment: cur, events: Vec::new() });
    }
    if cur.status != "booked" {
        return Err(BookingError::NotLive(cur.status));
    }
    if cur.start_at > now {
        return Err(BookingError::NotStarted);
    }
    let a: Appointment = sqlx::query_as!(
        AppointmentRow,
        "UPDATE appointments SET status = 'no_show', updated_at = $2, version = version + 1
          WHERE id = $1
          RETURNING id, clinician_id, patient_id, type_id, modality, start_at, end_at, status, expires_at, cancel_reason,
                rescheduled_from, waitlist_id, version, created_at, updated_at, block_start, block_end",
        id,
        now,
    )
    .fetch_one(&mut *tx)
    .await
    .map_err(db)?
    .into();
    let ev = emit(&mut tx, now, EventKind::NoShow, &a).await?;
    tx.commit().await.map_err(db)?;
    Ok(Done { appointment: a, events: vec![ev] })
}

/// Offers the time `freed` occupied to the first waiting patient whose range covers it (and
/// who has not let this slot lapse before): a hold of their type, for [`OFFER_TTL`].
async fn offer_freed(conn: &mut PgConnection, freed: &Appointment, now: DateTime<Utc>) -> Result<Option<BookingEvent>> {
    if freed.start_at <= now {
        return Ok(None);
    }
    let cands = sqlx::query!(
        "SELECT w.id, w.patient_id, w.type_id FROM waitlist w
          WHERE w.clinician_id = $1 AND w.status = 'waiting' AND w.from_at <= $2 AND w.to_at >= $3
            AND NOT EXISTS (SELECT 1 FROM waitlist_declined d WHERE d.waitlist_id = w.id AND d.start_at = $2)
          ORDER BY w.created_at, w.id
          LIMIT 5
          FOR UPDATE SKIP LOCKED",
        freed.clinician_id,
        freed.start_at,
        freed.end_at,
    )
    .fetch_all(&mut *conn)
    .await
    .map_err(db)?;
    for row in cands {
        let (wid, patient, type_id) = (row.id, row.patient_id, row.type_id);
        let Some(ty) = sqlx::query_as!(
            TypeRow,
            "SELECT id, clinician_id, name, duration_min, buffer_before_min, buffer_after_min, modality, active
               FROM appointment_types WHERE id = $1",
            type_id,
        )
        .fetch_optional(&mut *conn)
        .await
        .map_err(db)?
        .map(AppointmentType::from) else {
            continue;
        };
        let (start, end, bs, be) = ty.block(freed.start_at);
        // A savepoint: if this patient's type does not fit, try the next.
        let mut sp = sqlx::Connection::begin(&mut *conn).await.map_err(db)?;
        let res = sqlx::query_as!(
            AppointmentRow,
            "INSERT INTO appointments (id, clinician_id, patient_id, type_id, modality, start_at, end_at, block_start, block_end,
                                       status, expires_at, created_by, waitlist_id, created_at, updated_at)
             SELECT $1,$2,$3,$4,$5,$6,$7,$8,$9,'held',$10, u.user_id, $11, $12, $12
               FROM (SELECT coalesce(p.user_id, $13) AS user_id FROM patients p WHERE p.id = $3) u
             RETURNING id, clinician_id, patient_id, type_id, modality, start_at, end_at, status, expires_at, cancel_reason,
                rescheduled_from, waitlist_id, version, created_at, updated_at, block_start, block_end",
            Uuid::now_v7(),
            freed.clinician_id,
            patient,
            ty.id,
            &ty.modality,
            start,
            end,
            bs,
            be,
            now + OFFER_TTL,
            wid,
            now,
            freed.clinician_id,
        )
        .fetch_optional(&mut *sp)
        .await;
        match res {
            Ok(Some(a)) => {
                let a = Appointment::from(a);
                sp.commit().await.map_err(db)?;
                sqlx::query!(
                    "UPDATE waitlist SET status = 'offered', offered_appointment_id = $2, offers_made = offers_made + 1,
                            updated_at = $3 WHERE id = $1",
                    wid,
                    a.id,
                    now,
                )
                .execute(&mut *conn)
                .await
                .map_err(db)?;
                return Ok(Some(emit(conn, now, EventKind::Offered, &a).await?));
            }
            Ok(None) => sp.rollback().await.map_err(db)?,
            Err(e) => {
                sp.rollback().await.map_err(db)?;
                if db_write(e) != BookingError::SlotTaken {
                    tracing::error!("waitlist offer failed");
                    return Err(BookingError::internal());
                }
            }
        }
    }
    Ok(None)
}

/// Expires every lapsed hold (this node's share: rows locked by another sweeper are
/// skipped), returns waitlist offers to the queue and offers each freed slot on.
pub async fn sweep(pg: &PgPool, now: DateTime<Utc>) -> Result<Vec<BookingEvent>> {
    let mut tx = pg.begin().await.map_err(db)?;
    let expired = sqlx::query_as!(
        AppointmentRow,
        "UPDATE appointments SET status = 'expired', updated_at = $1, version = version + 1
          WHERE id IN (SELECT id FROM appointments WHERE status = 'held' AND expires_at <= $1
                        ORDER BY expires_at LIMIT 500 FOR UPDATE SKIP LOCKED)
          RETURNING id, clinician_id, patient_id, type_id, modality, start_at, end_at, status, expires_at, cancel_reason,
                rescheduled_from, waitlist_id, version, created_at, updated_at, block_start, block_end",
        now,
    )
    .fetch_all(&mut *tx)
    .await
    .map_err(db)?;
    let mut events = Vec::new();
    for a in expired {
        let a = Appointment::from(a);
        requeue_offer(&mut tx, &a, now).await?;
        events.push(emit(&mut tx, now, EventKind::Expired, &a).await?);
        events.extend(offer_freed(&mut tx, &a, now).await?);
    }
    tx.commit().await.map_err(db)?;
    Ok(events)
}

/// The calendars' store: PostgreSQL.
pub struct PgBookingStore {
    pub pg: PgPool,
}

#[async_trait]
impl BookingStore for PgBookingStore {
    async fn load_calendar(&self, clinician_id: Uuid, now: DateTime<Utc>) -> Result<Snapshot> {
        load_calendar(&self.pg, clinician_id, now).await
    }
    async fn load_schedule(&self, clinician_id: Uuid) -> Result<Option<Schedule>> {
        load_schedule(&self.pg, clinician_id).await
    }
    async fn load_type(&self, type_id: Uuid) -> Result<Option<AppointmentType>> {
        load_type(&self.pg, type_id).await
    }
    async fn taken(
        &self,
        clinician_id: Uuid,
        bs: DateTime<Utc>,
        be: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<bool> {
        taken(&self.pg, clinician_id, bs, be, now).await
    }
    async fn by_idempotency_key(&self, created_by: Uuid, key: &str) -> Result<Option<Appointment>> {
        by_idempotency_key(&self.pg, created_by, key).await
    }
    async fn hold(&self, h: &NewHold, ty: &AppointmentType, now: DateTime<Utc>) -> Result<Done> {
        hold(&self.pg, h, ty, now).await
    }
    async fn confirm(&self, id: Uuid, now: DateTime<Utc>) -> Result<Done> {
        confirm(&self.pg, id, now).await
    }
    async fn cancel(&self, id: Uuid, by: Uuid, reason: &str, now: DateTime<Utc>) -> Result<Done> {
        cancel(&self.pg, id, by, reason, now).await
    }
    async fn reschedule(
        &self,
        id: Uuid,
        by: Uuid,
        ty: &AppointmentType,
        start: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<Done> {
        reschedule(&self.pg, id, by, ty, start, now).await
    }
    async fn no_show(&self, id: Uuid, now: DateTime<Utc>) -> Result<Done> {
        no_show(&self.pg, id, now).await
    }
    async fn sweep(&self, now: DateTime<Utc>) -> Result<Vec<BookingEvent>> {
        sweep(&self.pg, now).await
    }
}
