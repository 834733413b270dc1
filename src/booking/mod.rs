//! Booking: schedules, slots, holds, bookings, the waitlist and their events.
//!
//! Changes to a clinician's calendar go through their `Calendar` actor
//! ([`coherency_actors::calendar`], which owns the domain's types, the slot arithmetic and
//! [`BookingError`]); the SQL is `crate::store::booking`, the booking bus
//! `crate::cluster::bus::BookingBus`, HTTP `crate::http::booking`. This module wires them
//! together for the node: the calendars' dependencies, the hold sweeper, free slots, the
//! demo schedules, and the one conversion of a [`BookingError`] to the HTTP envelope.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use coherency_actors::calendar::CalendarDeps;
use coherency_protocol::ErrorCode;
use sqlx::PgPool;

pub use crate::store::booking::{
    busy, by_idempotency_key, list_types, load, load_schedule, load_type, overlaps, taken, WaitlistEntry,
};
pub use coherency_actors::calendar::{
    calendar_bounds, candidate_slots, check_day, check_instant, require_slot, slots, Appointment, AppointmentType,
    BookingError, BookingEvent, Calendars, Cancel, EventKind, NewHold, Reschedule, Schedule, HOLD_TTL, LIVE,
    MAX_ACTIVE_HOLDS, MAX_FUTURE_DAYS, MAX_HORIZON_DAYS, MAX_PAST_DAYS, MAX_SLOT_RANGE_DAYS, OFFER_TTL,
};

/// Most weekly windows in one schedule (ten a day): each booking attempt and slot query
/// walks all of them for every day it covers.
pub const MAX_WEEKLY_WINDOWS: usize = 70;
/// Most dated exceptions in one schedule (every day of the longest horizon, and a year back).
pub const MAX_EXCEPTIONS: usize = 1100;
/// How often each node sweeps expired holds.
pub const SWEEP_EVERY: std::time::Duration = std::time::Duration::from_secs(1);
/// A calendar nobody booked on for this long stops on this node (its view with it).
pub const CALENDAR_IDLE: std::time::Duration = std::time::Duration::from_secs(600);

impl crate::error::DomainError for BookingError {
    fn field(&self) -> Option<&str> {
        BookingError::field(self)
    }
}

/// This node's calendars over PostgreSQL and the booking bus; views older than `max_age`
/// are reloaded before they answer.
pub fn calendars(
    pg: PgPool,
    bus: Arc<crate::cluster::bus::BookingBus>,
    clock: crate::clock::Clock,
    max_age: std::time::Duration,
) -> Arc<Calendars> {
    Calendars::new(CalendarDeps {
        store: Arc::new(crate::store::booking::PgBookingStore { pg }),
        bus,
        now: Arc::new(move || clock.now()),
        max_age,
        idle: CALENDAR_IDLE,
    })
}

/// Free slots: candidates whose blocked range overlaps nothing live.
pub async fn free_slots(
    pg: &PgPool,
    now: DateTime<Utc>,
    sched: &Schedule,
    ty: &AppointmentType,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> Result<Vec<(DateTime<Utc>, DateTime<Utc>)>, BookingError> {
    let cands = candidate_slots(sched, ty, from, to, now);
    let (Some(first), Some(last)) = (cands.first(), cands.last()) else { return Ok(Vec::new()) };
    let s = ty.shape();
    let taken = busy(pg, sched.clinician_id, first.0 - s.buffer_before, last.1 + s.buffer_after, now).await?;
    Ok(cands
        .into_iter()
        .filter(|(st, en)| {
            let (bs, be) = (*st - s.buffer_before, *en + s.buffer_after);
            !taken.iter().any(|a| a.blocks(bs, be))
        })
        .collect())
}

/// Expires every lapsed hold (this node's share: rows locked by another sweeper are
/// skipped), returns waitlist offers to the queue and offers each freed slot on; the
/// changes reach this node's calendars and every other node's. Answers how many expired.
pub async fn sweep(calendars: &Calendars) -> Result<usize, BookingError> {
    calendars.sweep().await
}

/// Runs [`sweep`] every [`SWEEP_EVERY`] until `stop` turns (shutdown).
pub fn spawn_sweeper(calendars: Arc<Calendars>, mut stop: tokio::sync::watch::Receiver<bool>) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(SWEEP_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {
                    if let Err(e) = sweep(&calendars).await {
                        tracing::warn!(code = e.code().as_str(), "booking sweep failed");
                    }
                }
                _ = stop.changed() => break,
            }
        }
    });
}

/// `seed-demo`: gives every clinician without a schedule weekday hours (09:00–17:00 in
/// Europe/London) and two appointment types (30 min telehealth; 45 min in person with
/// 10 min buffers). Idempotent.
pub async fn seed_schedules(pg: &PgPool, now: DateTime<Utc>) -> anyhow::Result<()> {
    Ok(crate::store::booking::seed_schedules(pg, now).await?)
}
