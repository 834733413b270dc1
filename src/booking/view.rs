//! This node's picture of the calendars it books on: each clinician's schedule, appointment
//! types and live blocked ranges, kept in memory so that an attempt at a time that is already
//! taken is answered `409 slot_taken` without a database round trip.
//!
//! It is never the guard. A "taken" answer means a live row blocked that time when this node
//! last looked; "free" proves nothing and the attempt goes on to the clinician's lock, a
//! read and the exclusion constraint, exactly as without the view. So a stale view can only
//! refuse an attempt that a caller arriving a moment earlier would also have lost, and never
//! lets an overlapping booking through.
//!
//! Freshness: a calendar is reloaded from Postgres when it is older than
//! `booking_view_max_age_ms` (default [`MAX_AGE`]); in
//! between, every committed change made on this node is applied before its request is
//! answered (`crate::booking::publish`, and inside the booking lock so queued attempts see
//! it), and changes made on other nodes arrive on the booking bus within milliseconds. Each
//! change carries the appointment's version, so a late or repeated message never undoes a
//! newer one. A message lost on the bus is corrected by the next reload.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::{PgPool, Row};
use uuid::Uuid;

use super::{list_types, load_schedule, require_slot, Appointment, AppointmentType, Schedule};
use crate::error::ApiError;

/// A calendar older than this is reloaded before it answers (the default of the
/// `booking_view_max_age_ms` setting).
pub const MAX_AGE: Duration = Duration::from_secs(1);
/// Calendars nobody asked about for this long are dropped (at the next reload of any).
const IDLE_DROP: Duration = Duration::from_secs(600);

/// What the view knows about an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// A live row blocks part of the attempt's range: answer `slot_taken`.
    Taken,
    /// Nothing known blocks it, or the view cannot judge (unknown type, a start that is not a
    /// slot by the cached schedule): take the full path.
    Unknown,
}

/// One committed change to an appointment, as the view needs it (ids and times only).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Change {
    pub appointment_id: Uuid,
    pub clinician_id: Uuid,
    pub status: String,
    pub block_start: DateTime<Utc>,
    pub block_end: DateTime<Utc>,
    pub expires_at: Option<DateTime<Utc>>,
    pub version: i32,
}

impl Change {
    pub fn of(a: &Appointment) -> Self {
        Change {
            appointment_id: a.id,
            clinician_id: a.clinician_id,
            status: a.status.clone(),
            block_start: a.block_start,
            block_end: a.block_end,
            expires_at: a.expires_at,
            version: a.version,
        }
    }

    fn live(&self) -> Option<Live> {
        Live::of(&self.status, self.block_start, self.block_end, self.expires_at, self.version)
    }
}

#[derive(Debug, Clone, Copy)]
struct Live {
    bs: DateTime<Utc>,
    be: DateTime<Utc>,
    /// Set for holds: the row stops blocking at this instant.
    expires_at: Option<DateTime<Utc>>,
    version: i32,
}

impl Live {
    /// The range a row with `status` blocks (`None`: the status blocks nothing); only a hold
    /// stops blocking at its expiry.
    fn of(
        status: &str,
        bs: DateTime<Utc>,
        be: DateTime<Utc>,
        expires_at: Option<DateTime<Utc>>,
        version: i32,
    ) -> Option<Live> {
        super::LIVE.contains(&status).then_some(Live {
            bs,
            be,
            expires_at: if status == "held" { expires_at } else { None },
            version,
        })
    }

    fn blocks(&self, bs: DateTime<Utc>, be: DateTime<Utc>, now: DateTime<Utc>) -> bool {
        self.bs < be && bs < self.be && self.expires_at.is_none_or(|e| e > now)
    }
}

struct Calendar {
    loaded: Instant,
    schedule: Option<Arc<Schedule>>,
    types: HashMap<Uuid, AppointmentType>,
    live: HashMap<Uuid, Live>,
    /// Versions of rows that stopped blocking since the load, so an older message cannot
    /// bring them back.
    gone: HashMap<Uuid, i32>,
}

impl Calendar {
    fn apply(&mut self, c: &Change) {
        let newest = self.live.get(&c.appointment_id).map(|l| l.version).max(self.gone.get(&c.appointment_id).copied());
        if newest.is_some_and(|v| v > c.version) {
            return;
        }
        match c.live() {
            Some(l) => {
                self.gone.remove(&c.appointment_id);
                self.live.insert(c.appointment_id, l);
            }
            None => {
                self.live.remove(&c.appointment_id);
                self.gone.insert(c.appointment_id, c.version);
            }
        }
    }

    fn verdict(&self, type_id: Uuid, start: DateTime<Utc>, now: DateTime<Utc>) -> Verdict {
        let (Some(sched), Some(ty)) = (&self.schedule, self.types.get(&type_id)) else { return Verdict::Unknown };
        if require_slot(sched, ty, start, now).is_err() {
            return Verdict::Unknown;
        }
        let (_, _, bs, be) = ty.block(start);
        if self.live.values().any(|l| l.blocks(bs, be, now)) {
            Verdict::Taken
        } else {
            Verdict::Unknown
        }
    }
}

#[derive(Default)]
struct SlotState {
    cal: Option<Calendar>,
    used: Option<Instant>,
    /// Changes seen while a reload is in flight, applied on top of what it read.
    during_load: Option<Vec<Change>>,
}

#[derive(Default)]
struct Slot {
    state: Mutex<SlotState>,
    /// One reload at a time per calendar; the others wait for it.
    reload: tokio::sync::Mutex<()>,
}

impl Slot {
    fn lock(&self) -> MutexGuard<'_, SlotState> {
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// This node's calendars, one per clinician asked about.
pub struct Calendars {
    slots: Mutex<HashMap<Uuid, Arc<Slot>>>,
    max_age: Duration,
}

impl Default for Calendars {
    fn default() -> Self {
        Self::new(MAX_AGE)
    }
}

impl Calendars {
    /// Calendars reloaded when older than `max_age`.
    pub fn new(max_age: Duration) -> Self {
        Calendars { slots: Mutex::default(), max_age }
    }

    fn slots(&self) -> MutexGuard<'_, HashMap<Uuid, Arc<Slot>>> {
        self.slots.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn slot(&self, clinician_id: Uuid) -> Arc<Slot> {
        self.slots().entry(clinician_id).or_default().clone()
    }

    /// What the view knows about an attempt at `start` with appointment type `type_id`.
    pub async fn verdict(
        &self,
        pg: &PgPool,
        clinician_id: Uuid,
        type_id: Uuid,
        start: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<Verdict, ApiError> {
        let slot = self.slot(clinician_id);
        let fresh = |s: &SlotState| s.cal.as_ref().is_some_and(|c| c.loaded.elapsed() < self.max_age);
        {
            let mut s = slot.lock();
            s.used = Some(Instant::now());
            if fresh(&s) {
                return Ok(s.cal.as_ref().map_or(Verdict::Unknown, |c| c.verdict(type_id, start, now)));
            }
        }
        let _one = slot.reload.lock().await;
        if !fresh(&slot.lock()) {
            slot.lock().during_load = Some(Vec::new());
            let loaded = load(pg, clinician_id, now).await;
            let mut s = slot.lock();
            let seen = s.during_load.take().unwrap_or_default();
            let mut cal = loaded?;
            for c in &seen {
                cal.apply(c);
            }
            s.cal = Some(cal);
        }
        self.drop_idle();
        let s = slot.lock();
        Ok(s.cal.as_ref().map_or(Verdict::Unknown, |c| c.verdict(type_id, start, now)))
    }

    /// Applies committed changes (this node's, or from the bus).
    pub fn apply(&self, changes: &[Change]) {
        for c in changes {
            let Some(slot) = self.slots().get(&c.clinician_id).cloned() else { continue };
            let mut s = slot.lock();
            if let Some(seen) = s.during_load.as_mut() {
                seen.push(c.clone());
            }
            if let Some(cal) = s.cal.as_mut() {
                cal.apply(c);
            }
        }
    }

    /// Forgets a clinician's schedule and types (after they changed on this node); the
    /// next attempt reloads them.
    pub fn invalidate(&self, clinician_id: Uuid) {
        if let Some(slot) = self.slots().get(&clinician_id) {
            slot.lock().cal = None;
        }
    }

    fn drop_idle(&self) {
        self.slots()
            .retain(|_, slot| Arc::strong_count(slot) > 1 || slot.lock().used.is_some_and(|u| u.elapsed() < IDLE_DROP));
    }
}

async fn load(pg: &PgPool, clinician_id: Uuid, now: DateTime<Utc>) -> Result<Calendar, ApiError> {
    let loaded = Instant::now();
    let schedule = load_schedule(pg, clinician_id).await?.map(Arc::new);
    let types = list_types(pg, clinician_id).await?.into_iter().map(|t| (t.id, t)).collect();
    let rows = sqlx::query(
        "SELECT id, block_start, block_end, status, expires_at, version FROM appointments
          WHERE clinician_id = $1 AND status = ANY($3) AND block_end > $2",
    )
    .bind(clinician_id)
    .bind(now)
    .bind(super::LIVE)
    .fetch_all(pg)
    .await?;
    let mut live = HashMap::with_capacity(rows.len());
    for r in rows {
        let status: String = r.get("status");
        let range = Live::of(&status, r.get("block_start"), r.get("block_end"), r.get("expires_at"), r.get("version"));
        if let Some(l) = range {
            live.insert(r.get("id"), l);
        }
    }
    Ok(Calendar { loaded, schedule, types, live, gone: HashMap::new() })
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Duration as D;

    fn cal() -> Calendar {
        Calendar {
            loaded: Instant::now(),
            schedule: None,
            types: HashMap::new(),
            live: HashMap::new(),
            gone: HashMap::new(),
        }
    }

    fn change(id: Uuid, status: &str, version: i32, at: DateTime<Utc>) -> Change {
        Change {
            appointment_id: id,
            clinician_id: Uuid::nil(),
            status: status.into(),
            block_start: at,
            block_end: at + D::minutes(30),
            expires_at: (status == "held").then_some(at),
            version,
        }
    }

    #[test]
    fn an_older_message_never_brings_back_a_cancelled_row() {
        let (id, at) = (Uuid::now_v7(), Utc::now());
        let mut c = cal();
        c.apply(&change(id, "booked", 1, at));
        c.apply(&change(id, "cancelled", 2, at));
        c.apply(&change(id, "booked", 1, at));
        assert!(c.live.is_empty(), "a replayed booked message resurrected a cancelled appointment");
        c.apply(&change(id, "booked", 3, at));
        assert_eq!(c.live.len(), 1);
    }

    #[test]
    fn a_lapsed_hold_blocks_nothing_and_ranges_are_half_open() {
        let at = Utc::now();
        let l = Live { bs: at, be: at + D::minutes(30), expires_at: Some(at + D::minutes(5)), version: 1 };
        assert!(l.blocks(at, at + D::minutes(1), at));
        assert!(!l.blocks(at, at + D::minutes(1), at + D::minutes(5)), "an expired hold still blocks");
        let b = Live { expires_at: None, ..l };
        assert!(!b.blocks(at + D::minutes(30), at + D::minutes(60), at), "[a,b) and [b,c) overlap");
        assert!(!b.blocks(at - D::minutes(30), at, at));
        assert!(b.blocks(at + D::minutes(29), at + D::minutes(60), at));
    }
}
