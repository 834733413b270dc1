//! Booking calendars: one [`Calendar`] actor per clinician booked on this node, owning that
//! clinician's in-memory calendar view and running every change to their appointments
//! (`Hold`, `Confirm`, `Cancel`, `Reschedule`, `NoShow`, and the changes other nodes and the
//! hold sweeper made, applied as messages). It reaches storage through [`BookingStore`] and
//! the other nodes through [`EventBus`]; the server implements both.
//!
//! This module also owns the booking domain's shared vocabulary: appointments and their
//! types, schedules and the slot arithmetic ([`slots`]), the one typed [`BookingEvent`] that
//! the outbox, the bus, the calendar views and the dashboard all read, and [`BookingError`].
//!
//! The mailbox orders one clinician's writers on this node; the database's exclusion
//! constraint stays the guard (`docs/booking.md`, "Which layers serialise what").

mod actor;
mod error;
pub mod slots;
mod view;

use async_trait::async_trait;
use chrono::{DateTime, Duration, NaiveDate, Utc};
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

pub use actor::{
    Apply, Calendar, CalendarDeps, Calendars, Cancel, Check, Confirm, Held, Hold, Invalidate, NoShow, Now, Reschedule,
};
pub use error::BookingError;
pub use view::{Verdict, MAX_AGE};

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
/// Dates and instants a booking input may name reach this many days into the past (so a
/// schedule read with `GET` can be written back with last year's exceptions)...
pub const MAX_PAST_DAYS: i64 = 366;
/// ...and this many days ahead: the longest horizon and one slot query beyond it.
pub const MAX_FUTURE_DAYS: i64 = MAX_HORIZON_DAYS as i64 + MAX_SLOT_RANGE_DAYS;

/// The instants a booking input may name at `now`: `[now − MAX_PAST_DAYS, now + MAX_FUTURE_DAYS]`.
pub fn calendar_bounds(now: DateTime<Utc>) -> (DateTime<Utc>, DateTime<Utc>) {
    (now - Duration::days(MAX_PAST_DAYS), now + Duration::days(MAX_FUTURE_DAYS))
}

/// Refuses an instant outside [`calendar_bounds`], naming `field`.
pub fn check_instant(field: &str, t: DateTime<Utc>, now: DateTime<Utc>) -> Result<(), BookingError> {
    let (lo, hi) = calendar_bounds(now);
    if t < lo || t > hi {
        return Err(BookingError::OutOfCalendar { field: field.into() });
    }
    Ok(())
}

/// Refuses a calendar day outside [`calendar_bounds`] (compared with the UTC dates of its
/// ends, which a day in any zone is within a day of).
pub fn check_day(field: &str, day: NaiveDate, now: DateTime<Utc>) -> Result<(), BookingError> {
    let (lo, hi) = calendar_bounds(now);
    if day < lo.date_naive() || day > hi.date_naive() {
        return Err(BookingError::OutOfCalendar { field: field.into() });
    }
    Ok(())
}

/// Statuses that occupy the calendar (the constraint's predicate).
pub const LIVE: &[&str] = &["held", "booked", "no_show"];

/// An appointment or hold.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
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

impl Appointment {
    /// Whether the range this appointment blocks overlaps `[bs, be)` (half-open ranges).
    pub fn blocks(&self, bs: DateTime<Utc>, be: DateTime<Utc>) -> bool {
        bs < self.block_end && self.block_start < be
    }
}

/// An appointment type.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
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

    /// The appointment an appointment of this type starting at `start` makes, and the range
    /// it blocks: `(start, end, block_start, block_end)`.
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

/// Refuses a start that is not one of the type's slots (grid, hours, notice, horizon).
pub fn require_slot(
    sched: &Schedule,
    ty: &AppointmentType,
    start: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Result<(), BookingError> {
    let cands = candidate_slots(sched, ty, start, start + Duration::seconds(1), now);
    if cands.iter().any(|(s, _)| *s == start) {
        Ok(())
    } else {
        Err(BookingError::NotASlot)
    }
}

/// What happened to an appointment, as the outbox's `kind` column names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    Held,
    Booked,
    Cancelled,
    Rescheduled,
    Offered,
    Expired,
    NoShow,
}

impl EventKind {
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Held => "held",
            EventKind::Booked => "booked",
            EventKind::Cancelled => "cancelled",
            EventKind::Rescheduled => "rescheduled",
            EventKind::Offered => "offered",
            EventKind::Expired => "expired",
            EventKind::NoShow => "no_show",
        }
    }
}

/// One committed change to an appointment: the `booking_outbox` row's payload, the message
/// on the booking bus, what every node's calendar view applies and what the dashboard turns
/// into a board change. Ids, times and statuses only, never PHI.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BookingEvent {
    pub kind: EventKind,
    pub appointment_id: Uuid,
    pub clinician_id: Uuid,
    pub patient_id: Uuid,
    pub start_at: DateTime<Utc>,
    pub end_at: DateTime<Utc>,
    /// The appointment's status after the change.
    pub status: String,
    /// The range the appointment blocks (buffers included).
    pub block_start: DateTime<Utc>,
    pub block_end: DateTime<Utc>,
    /// When a hold lapses.
    pub expires_at: Option<DateTime<Utc>>,
    /// Set when the appointment is a waitlist offer.
    pub waitlist_id: Option<Uuid>,
    /// The row's version after the change: a view never lets an older one undo a newer one.
    pub version: i32,
}

impl BookingEvent {
    pub fn of(kind: EventKind, a: &Appointment) -> Self {
        BookingEvent {
            kind,
            appointment_id: a.id,
            clinician_id: a.clinician_id,
            patient_id: a.patient_id,
            start_at: a.start_at,
            end_at: a.end_at,
            status: a.status.clone(),
            block_start: a.block_start,
            block_end: a.block_end,
            expires_at: a.expires_at,
            waitlist_id: a.waitlist_id,
            version: a.version,
        }
    }
}

/// A committed change and the events it made (in commit order).
#[derive(Debug, Clone)]
pub struct Done {
    /// The appointment the caller asked about, as it now is.
    pub appointment: Appointment,
    pub events: Vec<BookingEvent>,
}

/// A row that occupied the calendar when it was read.
#[derive(Debug, Clone)]
pub struct Occupied {
    pub appointment_id: Uuid,
    pub status: String,
    pub block_start: DateTime<Utc>,
    pub block_end: DateTime<Utc>,
    pub expires_at: Option<DateTime<Utc>>,
    pub version: i32,
}

/// One clinician's calendar as the store has it: what a [`Calendar`] reloads its view from.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    pub schedule: Option<Schedule>,
    /// The clinician's active appointment types.
    pub types: Vec<AppointmentType>,
    /// Live rows (held, booked, no-show) whose blocked range has not ended.
    pub occupied: Vec<Occupied>,
}

/// A request for calendar time: a hold, or a booking outright with `confirm`.
#[derive(Debug, Clone)]
pub struct NewHold {
    pub clinician_id: Uuid,
    pub patient_id: Uuid,
    pub type_id: Uuid,
    pub start: DateTime<Utc>,
    pub confirm: bool,
    /// The caller (user id).
    pub created_by: Uuid,
    pub idempotency_key: Option<String>,
}

/// What a calendar needs from the system of record. Every write is one transaction that
/// also appends its [`BookingEvent`]s to the outbox; the exclusion constraint answers
/// [`BookingError::SlotTaken`] to a write that would overlap a live row.
#[async_trait]
pub trait BookingStore: Send + Sync + 'static {
    /// The clinician's schedule, active types and live rows ending after `now`.
    async fn load_calendar(&self, clinician_id: Uuid, now: DateTime<Utc>) -> Result<Snapshot, BookingError>;
    async fn load_schedule(&self, clinician_id: Uuid) -> Result<Option<Schedule>, BookingError>;
    async fn load_type(&self, type_id: Uuid) -> Result<Option<AppointmentType>, BookingError>;
    /// Whether a live row (expired holds excluded) blocks part of `[bs, be)` at `now`.
    async fn taken(
        &self,
        clinician_id: Uuid,
        bs: DateTime<Utc>,
        be: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<bool, BookingError>;
    /// The appointment a (caller, idempotency key) pair made, if any.
    async fn by_idempotency_key(&self, created_by: Uuid, key: &str) -> Result<Option<Appointment>, BookingError>;
    /// Holds (or books) `ty` at `h.start`; expired holds in its range are expired first.
    async fn hold(&self, h: &NewHold, ty: &AppointmentType, now: DateTime<Utc>) -> Result<Done, BookingError>;
    /// Confirms a live hold (a booked row answers unchanged, with no events).
    async fn confirm(&self, id: Uuid, now: DateTime<Utc>) -> Result<Done, BookingError>;
    /// Cancels a hold or booking, offering the freed time to the waitlist.
    async fn cancel(&self, id: Uuid, by: Uuid, reason: &str, now: DateTime<Utc>) -> Result<Done, BookingError>;
    /// Moves a hold or booking to `start` with `ty` (new row in, old row cancelled).
    async fn reschedule(
        &self,
        id: Uuid,
        by: Uuid,
        ty: &AppointmentType,
        start: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<Done, BookingError>;
    /// Marks a started booking a no-show.
    async fn no_show(&self, id: Uuid, now: DateTime<Utc>) -> Result<Done, BookingError>;
    /// Expires lapsed holds (of every clinician) and offers the freed time on.
    async fn sweep(&self, now: DateTime<Utc>) -> Result<Vec<BookingEvent>, BookingError>;
}

/// Carries committed booking events to every node (their calendars and dashboards). Best
/// effort: the outbox is the durable record, and views reload within their maximum age.
pub trait EventBus: Send + Sync + 'static {
    fn publish(&self, events: Vec<BookingEvent>);
}

#[cfg(test)]
mod tests;
