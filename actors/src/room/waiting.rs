//! `WaitingRoom`: one actor per clinician on this node, holding the patients checked in to any
//! of that clinician's consults, in check-in order. Rooms keep it current (they own the
//! admission state); the clinician's queue view reads it. Admission itself is decided by the
//! consult's `Room`, never here.

use std::collections::HashMap;
use std::sync::Mutex;

use actix::prelude::*;
use chrono::{DateTime, Utc};
use coherency_protocol::consult::ParticipantRole;
use coherency_protocol::ids::ConsultId;
use uuid::Uuid;

/// One checked-in participant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueEntry {
    pub consult_id: ConsultId,
    pub participant_id: Uuid,
    pub user_id: Uuid,
    pub role: ParticipantRole,
    pub checked_in_at: DateTime<Utc>,
}

/// The clinician's queue.
#[derive(Default)]
pub struct WaitingRoom {
    entries: HashMap<Uuid, QueueEntry>,
}

impl Actor for WaitingRoom {
    type Context = Context<Self>;
}

#[derive(Message)]
#[rtype(result = "()")]
struct Upsert(QueueEntry);

#[derive(Message)]
#[rtype(result = "()")]
struct Remove(Uuid);

/// The queue, oldest check-in first.
#[derive(Message)]
#[rtype(result = "Vec<QueueEntry>")]
pub struct List;

impl Handler<Upsert> for WaitingRoom {
    type Result = ();
    fn handle(&mut self, msg: Upsert, _: &mut Context<Self>) {
        self.entries.insert(msg.0.participant_id, msg.0);
    }
}

impl Handler<Remove> for WaitingRoom {
    type Result = ();
    fn handle(&mut self, msg: Remove, _: &mut Context<Self>) {
        self.entries.remove(&msg.0);
    }
}

impl Handler<List> for WaitingRoom {
    type Result = MessageResult<List>;
    fn handle(&mut self, _: List, _: &mut Context<Self>) -> Self::Result {
        let mut v: Vec<QueueEntry> = self.entries.values().cloned().collect();
        v.sort_by_key(|e| (e.checked_in_at, e.participant_id));
        MessageResult(v)
    }
}

/// This node's waiting rooms, one per clinician, started on first use.
#[derive(Default)]
pub struct WaitingRooms {
    map: Mutex<HashMap<Uuid, Addr<WaitingRoom>>>,
}

impl WaitingRooms {
    /// The waiting room of `clinician_id`.
    pub fn of(&self, clinician_id: Uuid) -> Addr<WaitingRoom> {
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        map.entry(clinician_id).or_insert_with(|| WaitingRoom::default().start()).clone()
    }

    pub(crate) fn upsert(&self, clinician_id: Uuid, e: QueueEntry) {
        self.of(clinician_id).do_send(Upsert(e));
    }

    pub(crate) fn remove(&self, clinician_id: Uuid, participant_id: Uuid) {
        self.of(clinician_id).do_send(Remove(participant_id));
    }
}
