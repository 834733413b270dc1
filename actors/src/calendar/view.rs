//! A calendar actor's picture of its clinician's calendar: the schedule, the appointment
//! types and the live blocked ranges, kept in memory so that an attempt at a time that is
//! already taken is answered `slot_taken` without a database round trip.
//!
//! It is never the guard. A "taken" answer means a live row blocked that time when this node
//! last looked; "free" proves nothing and the attempt goes on to a read and the exclusion
//! constraint. So a stale view can only refuse an attempt that a caller arriving a moment
//! earlier would also have lost, and never lets an overlapping booking through.
//!
//! Freshness: the actor reloads the view when it is older than its maximum age (default
//! [`MAX_AGE`]); in between, every change committed on this node is applied before its
//! request is answered, and changes made on other nodes arrive as messages within
//! milliseconds. Each change carries the appointment's version, so a late or repeated
//! message never undoes a newer one. A message lost on the bus is corrected by the next
//! reload.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::{require_slot, AppointmentType, BookingEvent, Occupied, Schedule, Snapshot, LIVE};

/// A view older than this is reloaded before it answers (the default of the
/// `booking_view_max_age_ms` setting).
pub const MAX_AGE: Duration = Duration::from_secs(1);

/// What the view knows about an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// A live row blocks part of the attempt's range: answer `slot_taken`.
    Taken,
    /// Nothing known blocks it, or the view cannot judge (unknown type, a start that is not a
    /// slot by the cached schedule): take the full path.
    Unknown,
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
        LIVE.contains(&status).then_some(Live {
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

/// One clinician's calendar in memory.
pub(super) struct View {
    loaded: Instant,
    schedule: Option<Schedule>,
    types: HashMap<Uuid, AppointmentType>,
    live: HashMap<Uuid, Live>,
    /// Versions of rows that stopped blocking since the load, so an older message cannot
    /// bring them back.
    gone: HashMap<Uuid, i32>,
}

impl View {
    /// The view of `snap`, read starting at `loaded`.
    pub(super) fn new(loaded: Instant, snap: Snapshot) -> Self {
        let live = snap
            .occupied
            .iter()
            .filter_map(|o| {
                Live::of(&o.status, o.block_start, o.block_end, o.expires_at, o.version).map(|l| (o.appointment_id, l))
            })
            .collect();
        View {
            loaded,
            schedule: snap.schedule,
            types: snap.types.into_iter().map(|t| (t.id, t)).collect(),
            live,
            gone: HashMap::new(),
        }
    }

    /// Whether the view was read less than `max_age` ago.
    pub(super) fn fresh(&self, max_age: Duration) -> bool {
        self.loaded.elapsed() < max_age
    }

    /// Applies one committed change (this node's, or another's).
    pub(super) fn apply(&mut self, e: &BookingEvent) {
        self.apply_row(&Occupied {
            appointment_id: e.appointment_id,
            status: e.status.clone(),
            block_start: e.block_start,
            block_end: e.block_end,
            expires_at: e.expires_at,
            version: e.version,
        });
    }

    fn apply_row(&mut self, c: &Occupied) {
        let newest = self.live.get(&c.appointment_id).map(|l| l.version).max(self.gone.get(&c.appointment_id).copied());
        if newest.is_some_and(|v| v > c.version) {
            return;
        }
        match Live::of(&c.status, c.block_start, c.block_end, c.expires_at, c.version) {
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

    /// What the view knows about an attempt at `start` with appointment type `type_id`.
    pub(super) fn verdict(&self, type_id: Uuid, start: DateTime<Utc>, now: DateTime<Utc>) -> Verdict {
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

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Duration as D;

    fn change(id: Uuid, status: &str, version: i32, at: DateTime<Utc>) -> Occupied {
        Occupied {
            appointment_id: id,
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
        let mut c = View::new(Instant::now(), Snapshot::default());
        c.apply_row(&change(id, "booked", 1, at));
        c.apply_row(&change(id, "cancelled", 2, at));
        c.apply_row(&change(id, "booked", 1, at));
        assert!(c.live.is_empty(), "a replayed booked message resurrected a cancelled appointment");
        c.apply_row(&change(id, "booked", 3, at));
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
