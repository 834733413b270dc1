//! `Room`: one actor per live consult. It owns the participants and their admission state,
//! the per-room event sequence, the signalling connections (as outboxes: it never touches a
//! socket), chat fan-out and the SFU. Every change is persisted through [`RoomStore`] before
//! it is applied or announced, one at a time (atomic handlers), so the sequence numbers the
//! clients, the bus and the webhooks see are the ones in the database, with no gaps.
//!
//! Admission is decided here, not in a client: only `admitted` participants get media, chat
//! and events; a waiting participant gets its queue position and the host's private messages
//! to it ([`PrivateMessage`]), nothing else.

pub mod sfu;
pub mod waiting;

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix::prelude::*;
use chrono::{DateTime, Utc};
use coherency_protocol::consult::{
    close, ClientSignal, EventKind, IceServer, MediaKind, ParticipantRole, ParticipantState, RoomEvent, ScanLiveStatus,
    ServerSignal, MAX_CHAT_CHARS, SIGNAL_VERSION,
};
use coherency_protocol::ids::ConsultId;
use coherency_protocol::Code;
use tokio::sync::mpsc;
use uuid::Uuid;

pub use waiting::{QueueEntry, WaitingRoom, WaitingRooms};

/// Limits and timings of every room on a node.
#[derive(Debug, Clone)]
pub struct RoomConfig {
    /// Most participants admitted at once (host included).
    pub max_participants: usize,
    /// A live room with no connection for this long ends.
    pub empty_timeout: Duration,
    /// A room ends this long after it opened, whatever happens.
    pub max_duration: Duration,
    /// A dropped connection keeps its seat this long.
    pub reconnect_grace: Duration,
    /// ICE servers of the SFU's own peer connections (STUN).
    pub ice_servers: Vec<IceServer>,
    /// Whether the SFU is on (off: signalling and chat only).
    pub media: Option<sfu::SfuConfig>,
}

impl Default for RoomConfig {
    fn default() -> Self {
        Self {
            max_participants: 6,
            empty_timeout: Duration::from_secs(300),
            max_duration: Duration::from_secs(4 * 3600),
            reconnect_grace: Duration::from_secs(20),
            ice_servers: Vec::new(),
            media: None,
        }
    }
}

/// Consult status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConsultStatus {
    Open,
    Live,
    Ended,
}

impl ConsultStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            ConsultStatus::Open => "open",
            ConsultStatus::Live => "live",
            ConsultStatus::Ended => "ended",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "open" => ConsultStatus::Open,
            "live" => ConsultStatus::Live,
            "ended" => ConsultStatus::Ended,
            _ => return None,
        })
    }
}

/// A participant as stored.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Participant {
    pub id: Uuid,
    pub user_id: Uuid,
    pub role: ParticipantRole,
    pub state: ParticipantState,
    pub invited_by: Option<Uuid>,
    pub checked_in_at: Option<DateTime<Utc>>,
    pub admitted_at: Option<DateTime<Utc>>,
    /// Set while the participant is joined (cleared when they leave).
    pub joined_at: Option<DateTime<Utc>>,
    pub left_at: Option<DateTime<Utc>>,
}

/// What a room starts from (loaded by the server).
#[derive(Debug, Clone)]
pub struct RoomSnapshot {
    pub consult_id: ConsultId,
    pub clinician_id: Uuid,
    pub status: ConsultStatus,
    pub last_seq: u64,
    pub participants: Vec<Participant>,
}

/// One persisted change: an event, and the participant row and consult status it sets.
#[derive(Debug, Clone)]
pub struct Change {
    pub event: RoomEvent,
    pub participant: Option<Participant>,
    pub status: Option<ConsultStatus>,
}

/// What a room needs from storage (implemented by the server; in memory in tests).
#[async_trait::async_trait]
pub trait RoomStore: Send + Sync + 'static {
    /// Writes the changes atomically, in order (and announces them on the bus once written).
    async fn record(&self, changes: &[Change]) -> Result<(), String>;
    /// Appends a chat message to the room's activity stream; `to` is the recipient of a
    /// private message (the host's message to one participant), `None` for the room's chat.
    async fn chat(
        &self,
        consult_id: ConsultId,
        from: Uuid,
        role: ParticipantRole,
        text: &str,
        at: DateTime<Utc>,
        to: Option<&Participant>,
    ) -> Result<(), String>;
}

/// Where a room's time comes from (the server's test-adjustable clock).
pub type Now = Arc<dyn Fn() -> DateTime<Utc> + Send + Sync>;

/// Shared by every room of a node.
#[derive(Clone)]
pub struct RoomDeps {
    pub store: Arc<dyn RoomStore>,
    pub config: RoomConfig,
    pub now: Now,
    pub waiting: Arc<WaitingRooms>,
}

/// What a room sends down one connection.
#[derive(Debug, Clone, PartialEq)]
pub enum Outbound {
    Signal(ServerSignal),
    /// Send this close code (and reason) and stop.
    Close(u16, Cow<'static, str>),
}

/// One signalling connection's outbox.
pub type Outbox = mpsc::UnboundedSender<Outbound>;

/// Why a room refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, serde::Serialize, serde::Deserialize)]
pub enum RoomError {
    #[error("no such participant")]
    NoParticipant,
    #[error("the host denied this participant")]
    Denied,
    #[error("the host removed this participant")]
    Removed,
    #[error("the consult has ended")]
    Ended,
    #[error("the room is full")]
    Full,
    #[error("the participant is not waiting or in the call (they are {})", .0.as_str())]
    NotPresent(ParticipantState),
    #[error("not allowed in this state: {0}")]
    State(String),
    #[error("storage failed")]
    Storage,
}

impl coherency_protocol::ErrorCode for RoomError {
    fn code(&self) -> Code {
        match self {
            RoomError::NoParticipant => Code::NotFound,
            RoomError::Denied | RoomError::Removed => Code::Forbidden,
            RoomError::Ended => Code::ConsultEnded,
            RoomError::Full => Code::RoomFull,
            RoomError::NotPresent(_) => Code::ParticipantNotPresent,
            RoomError::State(_) => Code::Conflict,
            RoomError::Storage => Code::Unavailable,
        }
    }
}

/// A change before it has a sequence number: kind, participant row, who caused it, data, and
/// the consult status it sets.
type Item = (EventKind, Option<Participant>, Option<Uuid>, serde_json::Value, Option<ConsultStatus>);

static NEXT_CONN: AtomicU64 = AtomicU64::new(1);

/// Most scans a room keeps live figures for at once (a consult has one or two).
const MAX_LIVE_SCANS: usize = 32;

/// What a room last sent of a scan's live figures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LiveScan {
    Sent {
        status: ScanLiveStatus,
        frames: u64,
    },
    /// The room recorded `scan_finished`: no more live figures.
    Finished,
}

struct Conn {
    participant_id: Uuid,
    tx: Outbox,
}

/// The room actor.
pub struct Room {
    consult_id: ConsultId,
    clinician_id: Uuid,
    status: ConsultStatus,
    last_seq: u64,
    participants: HashMap<Uuid, Participant>,
    /// Participant → its current connection.
    seats: HashMap<Uuid, u64>,
    conns: HashMap<u64, Conn>,
    /// Participant → pending grace timer.
    grace: HashMap<Uuid, SpawnHandle>,
    empty_timer: Option<SpawnHandle>,
    deps: RoomDeps,
    rooms: Arc<Rooms>,
    sfu: Option<Arc<sfu::Sfu>>,
    /// (participant, kind) pairs the host muted; applied to the SFU whenever it starts, so a
    /// mute given before anyone sent media holds once media flows.
    muted: HashSet<(Uuid, MediaKind)>,
    /// Scans of this consult whose live figures went out, so none goes backwards.
    live_scans: HashMap<Uuid, LiveScan>,
}

impl Room {
    fn new(snap: RoomSnapshot, deps: RoomDeps, rooms: Arc<Rooms>) -> Self {
        Self {
            consult_id: snap.consult_id,
            clinician_id: snap.clinician_id,
            status: snap.status,
            last_seq: snap.last_seq,
            participants: snap.participants.into_iter().map(|p| (p.id, p)).collect(),
            seats: HashMap::new(),
            conns: HashMap::new(),
            grace: HashMap::new(),
            empty_timer: None,
            deps,
            rooms,
            sfu: None,
            muted: HashSet::new(),
            live_scans: HashMap::new(),
        }
    }

    fn now(&self) -> DateTime<Utc> {
        (self.deps.now)()
    }

    fn event(
        &self,
        n: u64,
        kind: EventKind,
        p: Option<&Participant>,
        by: Option<Uuid>,
        data: serde_json::Value,
    ) -> RoomEvent {
        RoomEvent {
            consult_id: self.consult_id,
            seq: self.last_seq + n,
            kind,
            participant_id: p.map(|p| p.id),
            user_id: p.map(|p| p.user_id),
            role: p.map(|p| p.role),
            by,
            data,
            at: self.now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        }
    }

    /// Builds changes with consecutive sequence numbers.
    fn changes(&self, items: Vec<Item>) -> Vec<Change> {
        items
            .into_iter()
            .enumerate()
            .map(|(i, (kind, p, by, data, status))| Change {
                event: self.event(i as u64 + 1, kind, p.as_ref(), by, data),
                participant: p,
                status,
            })
            .collect()
    }

    fn admitted_count(&self) -> usize {
        self.participants.values().filter(|p| p.state == ParticipantState::Admitted).count()
    }

    fn by_user(&self, user_id: Uuid) -> Option<&Participant> {
        self.participants.values().find(|p| p.user_id == user_id)
    }

    fn queue(&self) -> Vec<&Participant> {
        let mut q: Vec<&Participant> =
            self.participants.values().filter(|p| p.state == ParticipantState::Waiting).collect();
        q.sort_by_key(|p| (p.checked_in_at, p.id));
        q
    }

    fn send_to(&self, participant_id: Uuid, msg: Outbound) {
        if let Some(conn) = self.seats.get(&participant_id).and_then(|c| self.conns.get(c)) {
            let _ = conn.tx.send(msg);
        }
    }

    /// Events go to admitted, connected participants only.
    fn broadcast(&self, msg: &ServerSignal, except: Option<Uuid>) {
        for (pid, conn_id) in &self.seats {
            if Some(*pid) == except {
                continue;
            }
            let admitted = self.participants.get(pid).is_some_and(|p| p.state == ParticipantState::Admitted);
            if admitted {
                if let Some(c) = self.conns.get(conn_id) {
                    let _ = c.tx.send(Outbound::Signal(msg.clone()));
                }
            }
        }
    }

    fn send_positions(&self) {
        for (i, p) in self.queue().iter().enumerate() {
            self.send_to(p.id, Outbound::Signal(ServerSignal::Waiting { position: i as u32 + 1 }));
        }
    }

    /// Persists `changes`, then applies and announces them; `then` runs after (on success).
    fn commit<T: 'static>(
        &mut self,
        changes: Vec<Change>,
        then: impl FnOnce(&mut Self, &mut Context<Self>) -> Result<T, RoomError> + 'static,
    ) -> AtomicResponse<Self, Result<T, RoomError>> {
        let store = self.deps.store.clone();
        let fut = async move {
            let res = if changes.is_empty() { Ok(()) } else { store.record(&changes).await };
            (res, changes)
        };
        AtomicResponse::new(Box::pin(fut.into_actor(self).map(move |(res, changes), act, ctx| {
            if let Err(e) = res {
                tracing::error!(error = %e, "room could not persist a change");
                return Err(RoomError::Storage);
            }
            act.apply(changes, ctx);
            then(act, ctx)
        })))
    }

    /// Like [`Self::commit`] for changes the room makes on its own (no one waits for a reply).
    fn commit_now(&mut self, ctx: &mut Context<Self>, changes: Vec<Change>) {
        let store = self.deps.store.clone();
        let fut = async move {
            let res = store.record(&changes).await;
            (res, changes)
        };
        ctx.wait(fut.into_actor(self).map(|(res, changes), act, ctx| match res {
            Ok(()) => act.apply(changes, ctx),
            Err(e) => tracing::error!(error = %e, "room could not persist a change"),
        }));
    }

    fn apply(&mut self, changes: Vec<Change>, ctx: &mut Context<Self>) {
        let mut queue_changed = false;
        for ch in changes {
            self.last_seq = ch.event.seq;
            if let Some(s) = ch.status {
                self.status = s;
            }
            let before = ch.participant.as_ref().and_then(|p| self.participants.get(&p.id)).map(|p| p.state);
            if let Some(p) = &ch.participant {
                self.participants.insert(p.id, p.clone());
                if before == Some(ParticipantState::Waiting) || p.state == ParticipantState::Waiting {
                    queue_changed = true;
                    self.sync_waiting(p);
                }
            }
            let ev = ServerSignal::Event { event: ch.event.clone() };
            self.broadcast(&ev, None);
            // Someone who just stopped being admitted (left, or the room ending) still hears
            // about it on a connection that is open.
            let leaving = before == Some(ParticipantState::Admitted)
                && ch.participant.as_ref().is_some_and(|p| p.state != ParticipantState::Admitted);
            if leaving {
                if let Some(p) = &ch.participant {
                    self.send_to(p.id, Outbound::Signal(ev.clone()));
                }
            }
            if ch.event.kind == EventKind::Ended {
                for (pid, conn_id) in &self.seats {
                    let was_in = self.participants.get(pid).is_some_and(|p| {
                        p.admitted_at.is_some()
                            && !matches!(
                                p.state,
                                ParticipantState::Admitted | ParticipantState::Denied | ParticipantState::Removed
                            )
                    });
                    if was_in {
                        if let Some(c) = self.conns.get(conn_id) {
                            let _ = c.tx.send(Outbound::Signal(ev.clone()));
                        }
                    }
                }
            }
            let pid = ch.participant.as_ref().map(|p| p.id);
            match ch.event.kind {
                EventKind::Admitted => {
                    if let Some(pid) = pid {
                        self.send_to(pid, Outbound::Signal(ServerSignal::Admitted));
                    }
                }
                EventKind::Denied => {
                    if let Some(pid) = pid {
                        self.send_to(pid, Outbound::Signal(ServerSignal::Denied));
                        self.send_to(pid, Outbound::Close(close::DENIED, "denied".into()));
                        self.drop_seat(pid);
                    }
                }
                EventKind::Removed => {
                    if let Some(pid) = pid {
                        self.send_to(pid, Outbound::Signal(ServerSignal::Removed));
                        self.send_to(pid, Outbound::Close(close::REMOVED, "removed".into()));
                        self.drop_seat(pid);
                    }
                }
                EventKind::Ended => {
                    let reason = ch.event.data.get("reason").and_then(|r| r.as_str()).unwrap_or("ended").to_string();
                    self.shut_down(ctx, Some(ServerSignal::Ended { reason }), close::ENDED, "ended");
                }
                _ => {}
            }
        }
        if queue_changed {
            self.send_positions();
        }
    }

    fn sync_waiting(&self, p: &Participant) {
        if p.state == ParticipantState::Waiting {
            self.deps.waiting.upsert(
                self.clinician_id,
                QueueEntry {
                    consult_id: self.consult_id,
                    participant_id: p.id,
                    user_id: p.user_id,
                    role: p.role,
                    checked_in_at: p.checked_in_at.unwrap_or_else(|| self.now()),
                },
            );
        } else {
            self.deps.waiting.remove(self.clinician_id, p.id);
        }
    }

    fn drop_seat(&mut self, pid: Uuid) {
        if let Some(c) = self.seats.remove(&pid) {
            self.conns.remove(&c);
        }
        if let Some(sfu) = &self.sfu {
            sfu.remove(pid);
        }
    }

    /// The change for a participant leaving now (with or before having joined).
    fn leave_change(&self, p: &Participant) -> (EventKind, Participant) {
        let mut np = p.clone();
        let kind = if p.joined_at.is_some() { EventKind::Left } else { EventKind::LeftBeforeJoined };
        np.state = ParticipantState::Left;
        np.joined_at = None;
        np.left_at = Some(self.now());
        (kind, np)
    }

    /// Joined event for an admitted participant that has a connection and has not joined.
    fn join_item(&self, p: &Participant) -> Option<Item> {
        if p.state != ParticipantState::Admitted || p.joined_at.is_some() || !self.seats.contains_key(&p.id) {
            return None;
        }
        let mut np = p.clone();
        np.joined_at = Some(self.now());
        let status = (self.status == ConsultStatus::Open).then_some(ConsultStatus::Live);
        Some((EventKind::Joined, Some(np), None, serde_json::Value::Null, status))
    }

    fn arm_empty_timer(&mut self, ctx: &mut Context<Self>) {
        if let Some(h) = self.empty_timer.take() {
            ctx.cancel_future(h);
        }
        if self.conns.is_empty() && self.status != ConsultStatus::Ended {
            self.empty_timer = Some(ctx.run_later(self.deps.config.empty_timeout, |act, ctx| {
                if act.conns.is_empty() {
                    act.end(ctx, None, "empty");
                }
            }));
        }
    }

    fn end(&mut self, ctx: &mut Context<Self>, by: Option<Uuid>, reason: &str) {
        let changes = self.end_changes(by, reason);
        self.commit_now(ctx, changes);
    }

    fn end_changes(&self, by: Option<Uuid>, reason: &str) -> Vec<Change> {
        let mut items = Vec::new();
        for p in self.participants.values() {
            if matches!(p.state, ParticipantState::Admitted | ParticipantState::Waiting) {
                let (kind, np) = self.leave_change(p);
                items.push((kind, Some(np), None, serde_json::Value::Null, None));
            }
        }
        items.push((EventKind::Ended, None, by, serde_json::json!({ "reason": reason }), Some(ConsultStatus::Ended)));
        self.changes(items)
    }

    /// Stops the room here: every connection gets `last` (if any) and the close code, the
    /// waiting participants leave this node's waiting room, and the SFU closes (in
    /// `stopped`).
    fn shut_down(&mut self, ctx: &mut Context<Self>, last: Option<ServerSignal>, code: u16, reason: &'static str) {
        for c in self.conns.values() {
            if let Some(s) = &last {
                let _ = c.tx.send(Outbound::Signal(s.clone()));
            }
            let _ = c.tx.send(Outbound::Close(code, reason.into()));
        }
        for p in self.participants.values() {
            if p.state == ParticipantState::Waiting {
                self.deps.waiting.remove(self.clinician_id, p.id);
            }
        }
        self.conns.clear();
        self.seats.clear();
        ctx.stop();
    }

    fn sfu(&mut self, ctx: &mut Context<Self>) -> Option<Arc<sfu::Sfu>> {
        if self.sfu.is_none() {
            let cfg = self.deps.config.media.clone()?;
            match sfu::Sfu::new(cfg, self.deps.config.ice_servers.clone(), ctx.address().recipient()) {
                Ok(s) => {
                    for &(pid, kind) in &self.muted {
                        s.set_muted(pid, kind, true);
                    }
                    self.sfu = Some(Arc::new(s));
                }
                Err(e) => {
                    tracing::error!(error = %e, "cannot start the SFU");
                    return None;
                }
            }
        }
        self.sfu.clone()
    }
}

impl Actor for Room {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.set_mailbox_capacity(4096);
        ctx.run_later(self.deps.config.max_duration, |act, ctx| act.end(ctx, None, "max_duration"));
        self.arm_empty_timer(ctx);
        for p in self.participants.values() {
            if p.state == ParticipantState::Waiting {
                self.sync_waiting(p);
            }
        }
    }

    fn stopped(&mut self, ctx: &mut Context<Self>) {
        self.rooms.forget(self.consult_id, &ctx.address());
        if let Some(sfu) = self.sfu.take() {
            sfu.close();
        }
    }
}

/// A patient checks in (from HTTP or on connecting). Returns their queue position (0 when
/// already admitted).
#[derive(Message, Debug, serde::Serialize, serde::Deserialize)]
#[rtype(result = "Result<(Uuid, ParticipantState, u32), RoomError>")]
pub struct CheckIn {
    pub user_id: Uuid,
    pub role: ParticipantRole,
}

impl Handler<CheckIn> for Room {
    type Result = AtomicResponse<Self, Result<(Uuid, ParticipantState, u32), RoomError>>;

    fn handle(&mut self, msg: CheckIn, _: &mut Context<Self>) -> Self::Result {
        let now = self.now();
        let existing = self.by_user(msg.user_id).cloned();
        let item = match &existing {
            Some(p) => match p.state {
                ParticipantState::Denied => return err(RoomError::Denied),
                ParticipantState::Removed => return err(RoomError::Removed),
                ParticipantState::Waiting | ParticipantState::Admitted | ParticipantState::Invited => None,
                ParticipantState::Left => {
                    let mut np = p.clone();
                    np.state = ParticipantState::Waiting;
                    np.checked_in_at = Some(now);
                    np.left_at = None;
                    Some(np)
                }
            },
            None => Some(Participant {
                id: Uuid::now_v7(),
                user_id: msg.user_id,
                role: msg.role,
                state: ParticipantState::Waiting,
                invited_by: None,
                checked_in_at: Some(now),
                admitted_at: None,
                joined_at: None,
                left_at: None,
            }),
        };
        let changes = match item {
            Some(np) => self.changes(vec![(EventKind::CheckedIn, Some(np), None, serde_json::Value::Null, None)]),
            None => Vec::new(),
        };
        let user_id = msg.user_id;
        self.commit(changes, move |act, _| {
            let p = act.by_user(user_id).ok_or(RoomError::NoParticipant)?;
            let pos = act.queue().iter().position(|q| q.id == p.id).map(|i| i as u32 + 1).unwrap_or(0);
            Ok((p.id, p.state, pos))
        })
    }
}

fn err<T: 'static>(e: RoomError) -> AtomicResponse<Room, Result<T, RoomError>> {
    AtomicResponse::new(Box::pin(actix::fut::ready(Err(e))))
}

/// A host decision about one participant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Decision {
    Admit,
    Deny,
    Remove,
}

/// The host admits, denies or removes a participant.
#[derive(Message, Debug, serde::Serialize, serde::Deserialize)]
#[rtype(result = "Result<Participant, RoomError>")]
pub struct Decide {
    pub participant_id: Uuid,
    pub by: Uuid,
    pub decision: Decision,
}

impl Handler<Decide> for Room {
    type Result = AtomicResponse<Self, Result<Participant, RoomError>>;

    fn handle(&mut self, msg: Decide, _: &mut Context<Self>) -> Self::Result {
        let Some(p) = self.participants.get(&msg.participant_id).cloned() else { return err(RoomError::NoParticipant) };
        if p.role == ParticipantRole::Host {
            return err(RoomError::State("the host cannot be admitted, denied or removed".into()));
        }
        let now = self.now();
        let mut np = p.clone();
        let mut items = Vec::new();
        match msg.decision {
            Decision::Admit => {
                if p.state != ParticipantState::Waiting {
                    return err(RoomError::State("only a waiting participant can be admitted".into()));
                }
                if self.admitted_count() >= self.deps.config.max_participants {
                    return err(RoomError::Full);
                }
                np.state = ParticipantState::Admitted;
                np.admitted_at = Some(now);
                items.push((EventKind::Admitted, Some(np.clone()), Some(msg.by), serde_json::Value::Null, None));
                // Connected right now: joined follows at once.
                if self.seats.contains_key(&np.id) {
                    let mut j = np.clone();
                    j.joined_at = Some(now);
                    let status = (self.status == ConsultStatus::Open).then_some(ConsultStatus::Live);
                    items.push((EventKind::Joined, Some(j), None, serde_json::Value::Null, status));
                }
            }
            Decision::Deny => {
                if p.state != ParticipantState::Waiting {
                    return err(RoomError::State("only a waiting participant can be denied".into()));
                }
                np.state = ParticipantState::Denied;
                np.left_at = Some(now);
                items.push((EventKind::Denied, Some(np), Some(msg.by), serde_json::Value::Null, None));
            }
            Decision::Remove => {
                if matches!(p.state, ParticipantState::Removed | ParticipantState::Denied) {
                    return err(RoomError::State("already out of the room".into()));
                }
                np.state = ParticipantState::Removed;
                np.joined_at = None;
                np.left_at = Some(now);
                items.push((EventKind::Removed, Some(np), Some(msg.by), serde_json::Value::Null, None));
            }
        }
        let changes = self.changes(items);
        let pid = msg.participant_id;
        self.commit(changes, move |act, _| act.participants.get(&pid).cloned().ok_or(RoomError::NoParticipant))
    }
}

/// The host's private message to one participant who is waiting or in the call ("Running 5
/// minutes late"): stored with its recipient, then sent to that participant's connection
/// only, as `chat` with `to`. A waiting participant gets it although they cannot chat.
#[derive(Message, Debug, serde::Serialize, serde::Deserialize)]
#[rtype(result = "Result<MessageSent, RoomError>")]
pub struct PrivateMessage {
    pub participant_id: Uuid,
    /// The sender's user id (the host, or an admin acting as host).
    pub by: Uuid,
    /// Already checked at the boundary (character rule, 1..=`MAX_MESSAGE_CHARS`).
    pub text: String,
}

/// A private message the room stored and sent.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct MessageSent {
    /// The recipient as they were when it was sent.
    pub participant: Participant,
    pub at: DateTime<Utc>,
    /// Whether the recipient had a connection to send it down.
    pub delivered: bool,
}

impl Handler<PrivateMessage> for Room {
    type Result = AtomicResponse<Self, Result<MessageSent, RoomError>>;

    fn handle(&mut self, msg: PrivateMessage, _: &mut Context<Self>) -> Self::Result {
        if self.status == ConsultStatus::Ended {
            return err(RoomError::Ended);
        }
        let Some(p) = self.participants.get(&msg.participant_id).cloned() else { return err(RoomError::NoParticipant) };
        if p.role == ParticipantRole::Host {
            return err(RoomError::State("the host does not message themself".into()));
        }
        if !matches!(p.state, ParticipantState::Waiting | ParticipantState::Admitted) {
            return err(RoomError::NotPresent(p.state));
        }
        // Milliseconds, as the signal and the activity stream carry it.
        let at = chrono::SubsecRound::trunc_subsecs(self.now(), 3);
        let store = self.deps.store.clone();
        let cid = self.consult_id;
        let PrivateMessage { participant_id: pid, by, text } = msg;
        let stored = p.clone();
        let t2 = text.clone();
        let fut = async move { store.chat(cid, by, ParticipantRole::Host, &t2, at, Some(&stored)).await };
        AtomicResponse::new(Box::pin(fut.into_actor(self).map(move |res, act, _| {
            if let Err(e) = res {
                tracing::error!(error = %e, "private message not stored");
                return Err(RoomError::Storage);
            }
            let delivered = act.seats.get(&pid).is_some_and(|c| act.conns.contains_key(c));
            let signal = ServerSignal::Chat {
                from: by,
                role: ParticipantRole::Host,
                text,
                at: at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
                to: Some(pid),
            };
            act.send_to(pid, Outbound::Signal(signal));
            Ok(MessageSent { participant: p, at, delivered })
        })))
    }
}

/// The host invites another user with a role; they are admitted when they connect.
#[derive(Message, Debug, serde::Serialize, serde::Deserialize)]
#[rtype(result = "Result<Participant, RoomError>")]
pub struct Invite {
    pub user_id: Uuid,
    pub role: ParticipantRole,
    pub by: Uuid,
}

impl Handler<Invite> for Room {
    type Result = AtomicResponse<Self, Result<Participant, RoomError>>;

    fn handle(&mut self, msg: Invite, _: &mut Context<Self>) -> Self::Result {
        if matches!(msg.role, ParticipantRole::Host | ParticipantRole::Patient) {
            return err(RoomError::State("invite an interpreter, family member or clinician".into()));
        }
        let np = match self.by_user(msg.user_id) {
            Some(p)
                if matches!(p.state, ParticipantState::Denied | ParticipantState::Removed | ParticipantState::Left) =>
            {
                let mut np = p.clone();
                np.state = ParticipantState::Invited;
                np.role = msg.role;
                np.invited_by = Some(msg.by);
                np
            }
            Some(_) => return err(RoomError::State("already a participant".into())),
            None => Participant {
                id: Uuid::now_v7(),
                user_id: msg.user_id,
                role: msg.role,
                state: ParticipantState::Invited,
                invited_by: Some(msg.by),
                checked_in_at: None,
                admitted_at: None,
                joined_at: None,
                left_at: None,
            },
        };
        let pid = np.id;
        let changes = self.changes(vec![(EventKind::Invited, Some(np), Some(msg.by), serde_json::Value::Null, None)]);
        self.commit(changes, move |act, _| act.participants.get(&pid).cloned().ok_or(RoomError::NoParticipant))
    }
}

/// The host ends the consult.
#[derive(Message, Debug, serde::Serialize, serde::Deserialize)]
#[rtype(result = "Result<u64, RoomError>")]
pub struct End {
    pub by: Uuid,
    pub reason: String,
}

impl Handler<End> for Room {
    type Result = AtomicResponse<Self, Result<u64, RoomError>>;

    fn handle(&mut self, msg: End, _: &mut Context<Self>) -> Self::Result {
        if self.status == ConsultStatus::Ended {
            return err(RoomError::Ended);
        }
        let changes = self.end_changes(Some(msg.by), &msg.reason);
        self.commit(changes, |act, _| Ok(act.last_seq))
    }
}

/// The waiting participants in order.
#[derive(Message, Debug, serde::Serialize, serde::Deserialize)]
#[rtype(result = "Vec<Participant>")]
pub struct Queue;

impl Handler<Queue> for Room {
    type Result = MessageResult<Queue>;

    fn handle(&mut self, _: Queue, _: &mut Context<Self>) -> Self::Result {
        MessageResult(self.queue().into_iter().cloned().collect())
    }
}

/// Every participant.
#[derive(Message, Debug, serde::Serialize, serde::Deserialize)]
#[rtype(result = "Vec<Participant>")]
pub struct Participants;

impl Handler<Participants> for Room {
    type Result = MessageResult<Participants>;

    fn handle(&mut self, _: Participants, _: &mut Context<Self>) -> Self::Result {
        let mut v: Vec<Participant> = self.participants.values().cloned().collect();
        v.sort_by_key(|p| p.id);
        MessageResult(v)
    }
}

/// A signalling connection opens for `user_id` (already authorised by the server).
#[derive(Message)]
#[rtype(result = "Result<u64, RoomError>")]
pub struct Connect {
    pub user_id: Uuid,
    /// Role to use if this connection creates the participant (a patient checking in).
    pub role: ParticipantRole,
    /// ICE servers for this user (TURN credentials are per user and time-limited).
    pub ice_servers: Vec<IceServer>,
    pub tx: Outbox,
}

impl Handler<Connect> for Room {
    type Result = AtomicResponse<Self, Result<u64, RoomError>>;

    fn handle(&mut self, msg: Connect, ctx: &mut Context<Self>) -> Self::Result {
        if self.status == ConsultStatus::Ended {
            return err(RoomError::Ended);
        }
        let now = self.now();
        let existing = self.by_user(msg.user_id).cloned();
        let mut p = match existing {
            Some(p) => p,
            None if msg.role == ParticipantRole::Host => Participant {
                id: Uuid::now_v7(),
                user_id: msg.user_id,
                role: ParticipantRole::Host,
                state: ParticipantState::Admitted,
                invited_by: None,
                checked_in_at: None,
                admitted_at: Some(now),
                joined_at: None,
                left_at: None,
            },
            None => Participant {
                id: Uuid::now_v7(),
                user_id: msg.user_id,
                role: msg.role,
                state: ParticipantState::Left,
                invited_by: None,
                checked_in_at: None,
                admitted_at: None,
                joined_at: None,
                left_at: None,
            },
        };
        let mut items = Vec::new();
        match p.state {
            ParticipantState::Denied => return err(RoomError::Denied),
            ParticipantState::Removed => return err(RoomError::Removed),
            ParticipantState::Left if p.role == ParticipantRole::Host => {
                p.state = ParticipantState::Admitted;
                p.admitted_at = Some(now);
                p.left_at = None;
            }
            ParticipantState::Left if p.invited_by.is_some() => {
                p.state = ParticipantState::Admitted;
                p.admitted_at = Some(now);
                p.left_at = None;
                items.push((EventKind::Admitted, Some(p.clone()), p.invited_by, serde_json::Value::Null, None));
            }
            ParticipantState::Left => {
                p.state = ParticipantState::Waiting;
                p.checked_in_at = Some(now);
                p.left_at = None;
                items.push((EventKind::CheckedIn, Some(p.clone()), None, serde_json::Value::Null, None));
            }
            ParticipantState::Invited => {
                if self.admitted_count() >= self.deps.config.max_participants {
                    return err(RoomError::Full);
                }
                p.state = ParticipantState::Admitted;
                p.admitted_at = Some(now);
                items.push((EventKind::Admitted, Some(p.clone()), p.invited_by, serde_json::Value::Null, None));
            }
            ParticipantState::Waiting | ParticipantState::Admitted => {}
        }
        // Take the seat (superseding an older connection; cancelling a grace timer).
        let conn_id = NEXT_CONN.fetch_add(1, Ordering::Relaxed);
        let mut resumed = false;
        if let Some(h) = self.grace.remove(&p.id) {
            ctx.cancel_future(h);
            resumed = true;
        }
        if let Some(old) = self.seats.insert(p.id, conn_id) {
            if let Some(c) = self.conns.remove(&old) {
                let _ = c.tx.send(Outbound::Close(close::SUPERSEDED, "superseded".into()));
            }
            resumed = true;
        }
        let _ = msg.tx.send(Outbound::Signal(ServerSignal::Welcome {
            protocol: SIGNAL_VERSION,
            consult_id: self.consult_id,
            participant_id: p.id,
            role: p.role,
            state: p.state,
            resumed,
            ice_servers: msg.ice_servers,
        }));
        self.conns.insert(conn_id, Conn { participant_id: p.id, tx: msg.tx });
        if let Some(h) = self.empty_timer.take() {
            ctx.cancel_future(h);
        }
        if let Some(j) = self.join_item(&p) {
            items.push(j);
        }
        let changes = self.changes(items);
        let pid = p.id;
        self.commit(changes, move |act, _| {
            if let Some(p) = act.participants.get(&pid) {
                if p.state == ParticipantState::Admitted && !resumed {
                    act.send_to(pid, Outbound::Signal(ServerSignal::Admitted));
                }
            }
            act.send_positions();
            Ok(conn_id)
        })
    }
}

/// A frame from a client.
#[derive(Message)]
#[rtype(result = "()")]
pub struct FromClient {
    pub conn_id: u64,
    pub msg: ClientSignal,
}

impl Handler<FromClient> for Room {
    type Result = ();

    fn handle(&mut self, msg: FromClient, ctx: &mut Context<Self>) {
        let Some(conn) = self.conns.get(&msg.conn_id) else { return };
        let pid = conn.participant_id;
        let tx = conn.tx.clone();
        let Some(p) = self.participants.get(&pid).cloned() else { return };
        let error = |code: Code, message: &str| {
            let _ =
                tx.send(Outbound::Signal(ServerSignal::Error { code: code.as_str().into(), message: message.into() }));
        };
        match msg.msg {
            ClientSignal::Ping => {
                let _ = tx.send(Outbound::Signal(ServerSignal::Pong));
                return;
            }
            ClientSignal::Leave => {
                if let Some(h) = self.grace.remove(&pid) {
                    ctx.cancel_future(h);
                }
                let _ = tx.send(Outbound::Close(close::LEFT, "left".into()));
                self.drop_seat(pid);
                if matches!(p.state, ParticipantState::Admitted | ParticipantState::Waiting) {
                    let (kind, np) = self.leave_change(&p);
                    let changes = self.changes(vec![(kind, Some(np), None, serde_json::Value::Null, None)]);
                    self.commit_now(ctx, changes);
                }
                self.arm_empty_timer(ctx);
                return;
            }
            _ => {}
        }
        if p.state != ParticipantState::Admitted {
            error(Code::NotAdmitted, "wait until the host admits you");
            return;
        }
        match msg.msg {
            ClientSignal::Chat { text } => {
                // The socket pump holds every frame to the character rule; the room holds the
                // text it stores and fans out to it too, whatever delivered the message.
                if let Err(why) = coherency_protocol::text::check(&text, coherency_protocol::text::Lines::Many) {
                    error(Code::InvalidField, &format!("`text`: {why}"));
                    return;
                }
                let text = text.trim().to_string();
                if text.is_empty() || text.chars().count() > MAX_CHAT_CHARS {
                    error(Code::InvalidField, "chat text must be 1 to 2000 characters");
                    return;
                }
                let at = self.now();
                let store = self.deps.store.clone();
                let cid = self.consult_id;
                let role = p.role;
                let user = p.user_id;
                let t2 = text.clone();
                ctx.wait(async move { store.chat(cid, user, role, &t2, at, None).await }.into_actor(self).map(
                    move |res, act, _| match res {
                        Ok(()) => act.broadcast(
                            &ServerSignal::Chat {
                                from: user,
                                role,
                                text,
                                at: at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
                                to: None,
                            },
                            None,
                        ),
                        Err(e) => {
                            tracing::error!(error = %e, "chat not stored");
                            let _ = tx.send(Outbound::Signal(ServerSignal::Error {
                                code: Code::Unavailable.as_str().into(),
                                message: "chat could not be stored; try again".into(),
                            }));
                        }
                    },
                ));
            }
            ClientSignal::Offer { sdp } => match self.sfu(ctx) {
                Some(sfu) => sfu.offer(pid, sdp),
                None => error(Code::Unavailable, "media is off on this server"),
            },
            ClientSignal::Answer { sdp } => {
                if let Some(sfu) = &self.sfu {
                    sfu.answer(pid, sdp);
                }
            }
            ClientSignal::Ice { candidate } => {
                if let Some(sfu) = &self.sfu {
                    sfu.candidate(pid, candidate);
                }
            }
            ClientSignal::Mute { participant_id, kind, muted } => {
                if p.role != ParticipantRole::Host {
                    error(Code::Forbidden, "only the host mutes participants");
                    return;
                }
                let Some(target) = self.participants.get(&participant_id).cloned() else {
                    error(Code::NotFound, "no such participant in this consult");
                    return;
                };
                if target.state != ParticipantState::Admitted {
                    error(Code::Conflict, "that participant is not admitted");
                    return;
                }
                if muted {
                    self.muted.insert((participant_id, kind));
                } else {
                    self.muted.remove(&(participant_id, kind));
                }
                if let Some(sfu) = &self.sfu {
                    sfu.set_muted(participant_id, kind, muted);
                }
                let ev = if muted { EventKind::Muted } else { EventKind::Unmuted };
                let data = serde_json::json!({ "kind": kind.as_str() });
                let changes = self.changes(vec![(ev, Some(target), Some(p.user_id), data, None)]);
                self.commit_now(ctx, changes);
            }
            ClientSignal::Ping | ClientSignal::Leave => {}
        }
    }
}

/// A connection closed (or broke).
#[derive(Message)]
#[rtype(result = "()")]
pub struct Disconnect {
    pub conn_id: u64,
}

impl Handler<Disconnect> for Room {
    type Result = ();

    fn handle(&mut self, msg: Disconnect, ctx: &mut Context<Self>) {
        let Some(conn) = self.conns.remove(&msg.conn_id) else { return };
        let pid = conn.participant_id;
        if self.seats.get(&pid) == Some(&msg.conn_id) {
            self.seats.remove(&pid);
            let h = ctx.run_later(self.deps.config.reconnect_grace, move |act, ctx| {
                act.grace.remove(&pid);
                if act.seats.contains_key(&pid) {
                    return;
                }
                if let Some(sfu) = &act.sfu {
                    sfu.remove(pid);
                }
                if let Some(p) = act.participants.get(&pid).cloned() {
                    if matches!(p.state, ParticipantState::Admitted | ParticipantState::Waiting) {
                        let (kind, np) = act.leave_change(&p);
                        let changes = act.changes(vec![(kind, Some(np), None, serde_json::Value::Null, None)]);
                        act.commit_now(ctx, changes);
                    }
                }
            });
            self.grace.insert(pid, h);
        }
        self.arm_empty_timer(ctx);
    }
}

/// Reported by the SFU: a track was published or unpublished, or a signal for a participant.
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub enum SfuReport {
    Track { participant_id: Uuid, published: bool, track_id: String, kind: String },
    Signal { participant_id: Uuid, signal: ServerSignal },
}

impl Handler<SfuReport> for Room {
    type Result = ();

    fn handle(&mut self, msg: SfuReport, ctx: &mut Context<Self>) {
        match msg {
            SfuReport::Signal { participant_id, signal } => self.send_to(participant_id, Outbound::Signal(signal)),
            SfuReport::Track { participant_id, published, track_id, kind } => {
                let Some(p) = self.participants.get(&participant_id).cloned() else { return };
                let k = if published { EventKind::TrackPublished } else { EventKind::TrackUnpublished };
                let changes = self.changes(vec![(
                    k,
                    Some(p),
                    None,
                    serde_json::json!({ "track_id": track_id, "kind": kind }),
                    None,
                )]);
                self.commit_now(ctx, changes);
            }
        }
    }
}

/// The node gives the room up (draining, or its lease went to another node): every
/// connection is told to reconnect (1001) and the room stops here without ending the
/// consult; wherever the participants reconnect it starts again from storage.
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct Retire;

impl Handler<Retire> for Room {
    type Result = ();

    fn handle(&mut self, _: Retire, ctx: &mut Context<Self>) {
        self.shut_down(ctx, None, close::MOVED, "room moved");
    }
}

/// A room event that the server raises (scan requested, progress, finished), with data, and
/// an optional signal for one participant.
#[derive(Message, Debug, serde::Serialize, serde::Deserialize)]
#[rtype(result = "Result<u64, RoomError>")]
pub struct Raise {
    pub kind: EventKind,
    pub by: Option<Uuid>,
    pub data: serde_json::Value,
    /// Also send this signal to the participant with this user id.
    pub notify: Option<(Uuid, ServerSignal)>,
    /// Also send this signal to everyone admitted and connected; answers how many got it.
    pub broadcast: Option<ServerSignal>,
}

impl Handler<Raise> for Room {
    type Result = AtomicResponse<Self, Result<u64, RoomError>>;

    fn handle(&mut self, msg: Raise, _: &mut Context<Self>) -> Self::Result {
        if self.status == ConsultStatus::Ended {
            return err(RoomError::Ended);
        }
        if msg.kind == EventKind::ScanFinished {
            if let Some(scan) = msg.data.get("scan_id").and_then(|s| s.as_str()).and_then(|s| s.parse().ok()) {
                self.live_scans.insert(scan, LiveScan::Finished);
            }
        }
        let changes = self.changes(vec![(msg.kind, None, msg.by, msg.data, None)]);
        let (notify, everyone) = (msg.notify, msg.broadcast);
        self.commit(changes, move |act, _| {
            if let Some((user, sig)) = notify {
                if let Some(p) = act.by_user(user).map(|p| p.id) {
                    act.send_to(p, Outbound::Signal(sig));
                }
            }
            if let Some(sig) = everyone {
                act.broadcast(&sig, None);
            }
            Ok(act.last_seq)
        })
    }
}

/// Live figures of a scan taken in this consult (from the scan bus), sent to everyone admitted
/// and connected as [`ServerSignal::ScanLive`]. Ephemeral: nothing is persisted or numbered.
/// Figures older than what was already sent (fewer frames, or `streaming` after
/// `processing`: bus messages can overtake each other) and figures of a scan the room has
/// recorded as finished are dropped.
#[derive(Message, Debug, Clone, PartialEq)]
#[rtype(result = "()")]
pub struct ScanLive {
    pub scan_id: Uuid,
    pub status: ScanLiveStatus,
    pub frames: u64,
    pub fused: Option<u64>,
    pub coverage: Option<f64>,
    pub warnings: Vec<String>,
}

impl Handler<ScanLive> for Room {
    type Result = ();

    fn handle(&mut self, msg: ScanLive, _: &mut Context<Self>) {
        if self.status == ConsultStatus::Ended {
            return;
        }
        match self.live_scans.get(&msg.scan_id) {
            Some(LiveScan::Finished) => return,
            Some(LiveScan::Sent { status, frames }) if msg.status < *status || msg.frames < *frames => return,
            Some(_) => {}
            None => {
                if self.live_scans.len() >= MAX_LIVE_SCANS {
                    self.live_scans.retain(|_, l| *l != LiveScan::Finished);
                }
                if self.live_scans.len() >= MAX_LIVE_SCANS {
                    tracing::debug!(consult_id = %self.consult_id, "too many live scans; figures dropped");
                    return;
                }
            }
        }
        self.live_scans.insert(msg.scan_id, LiveScan::Sent { status: msg.status, frames: msg.frames });
        let signal = ServerSignal::ScanLive {
            scan_id: msg.scan_id,
            status: msg.status,
            frames: msg.frames,
            fused: msg.fused,
            coverage: msg.coverage,
            warnings: msg.warnings,
        };
        self.broadcast(&signal, None);
    }
}

/// This node's rooms, started on first use.
#[derive(Default)]
pub struct Rooms {
    map: Mutex<HashMap<ConsultId, Addr<Room>>>,
}

impl Rooms {
    /// The running room for `id`, if any.
    pub fn get(&self, id: ConsultId) -> Option<Addr<Room>> {
        let map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        map.get(&id).filter(|a| a.connected()).cloned()
    }

    /// The running room for the snapshot's consult, starting it from the snapshot if none runs.
    pub fn get_or_start(self: &Arc<Self>, snap: RoomSnapshot, deps: &RoomDeps) -> Addr<Room> {
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(a) = map.get(&snap.consult_id).filter(|a| a.connected()) {
            return a.clone();
        }
        let id = snap.consult_id;
        let addr = Room::new(snap, deps.clone(), self.clone()).start();
        map.insert(id, addr.clone());
        addr
    }

    fn forget(&self, id: ConsultId, addr: &Addr<Room>) {
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        if map.get(&id) == Some(addr) {
            map.remove(&id);
        }
    }

    /// Retires every room running on this node (drain).
    pub fn retire_all(&self) {
        let map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        for a in map.values() {
            a.do_send(Retire);
        }
    }

    /// Rooms running on this node.
    pub fn len(&self) -> usize {
        self.map.lock().map(|m| m.len()).unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Storage that keeps nothing (the live figures never reach it).
    struct NoStore(Mutex<Vec<EventKind>>);

    #[async_trait::async_trait]
    impl RoomStore for NoStore {
        async fn record(&self, changes: &[Change]) -> Result<(), String> {
            self.0.lock().unwrap().extend(changes.iter().map(|c| c.event.kind));
            Ok(())
        }
        async fn chat(
            &self,
            _: ConsultId,
            _: Uuid,
            _: ParticipantRole,
            _: &str,
            _: DateTime<Utc>,
            _: Option<&Participant>,
        ) -> Result<(), String> {
            Ok(())
        }
    }

    fn live(scan_id: Uuid, status: ScanLiveStatus, frames: u64) -> ScanLive {
        ScanLive { scan_id, status, frames, fused: Some(frames), coverage: Some(0.5), warnings: vec!["too_far".into()] }
    }

    /// The live figures a connection received so far.
    fn lives(rx: &mut mpsc::UnboundedReceiver<Outbound>) -> Vec<(ScanLiveStatus, u64)> {
        let mut out = Vec::new();
        while let Ok(m) = rx.try_recv() {
            if let Outbound::Signal(ServerSignal::ScanLive { status, frames, .. }) = m {
                out.push((status, frames));
            }
        }
        out
    }

    #[actix_rt::test]
    async fn live_figures_reach_the_admitted_only_never_go_backwards_and_stop_when_the_scan_finishes() {
        let store = Arc::new(NoStore(Mutex::new(Vec::new())));
        let deps = RoomDeps {
            store: store.clone(),
            config: RoomConfig::default(),
            now: Arc::new(Utc::now),
            waiting: Default::default(),
        };
        let (host, patient) = (Uuid::now_v7(), Uuid::now_v7());
        let snap = RoomSnapshot {
            consult_id: ConsultId::from_uuid(Uuid::now_v7()),
            clinician_id: host,
            status: ConsultStatus::Open,
            last_seq: 1,
            participants: Vec::new(),
        };
        let room = Arc::new(Rooms::default()).get_or_start(snap, &deps);
        let connect = |user_id, role| {
            let (tx, rx) = mpsc::unbounded_channel();
            (Connect { user_id, role, ice_servers: Vec::new(), tx }, rx)
        };
        let (c, mut host_rx) = connect(host, ParticipantRole::Host);
        room.send(c).await.unwrap().unwrap();
        let (c, mut patient_rx) = connect(patient, ParticipantRole::Patient);
        room.send(c).await.unwrap().unwrap();

        let scan = Uuid::now_v7();
        room.send(live(scan, ScanLiveStatus::Streaming, 5)).await.unwrap();
        assert_eq!(lives(&mut host_rx), [(ScanLiveStatus::Streaming, 5)]);
        assert_eq!(lives(&mut patient_rx), [], "a waiting participant gets no live figures");

        let pid = room.send(Participants).await.unwrap().into_iter().find(|p| p.user_id == patient).unwrap().id;
        room.send(Decide { participant_id: pid, by: host, decision: Decision::Admit }).await.unwrap().unwrap();
        for (status, frames) in [
            (ScanLiveStatus::Streaming, 9),
            (ScanLiveStatus::Streaming, 7),
            (ScanLiveStatus::Processing, 9),
            (ScanLiveStatus::Streaming, 9),
        ] {
            room.send(live(scan, status, frames)).await.unwrap();
        }
        let want = [(ScanLiveStatus::Streaming, 9), (ScanLiveStatus::Processing, 9)];
        assert_eq!(lives(&mut host_rx), want, "older figures are dropped");
        assert_eq!(lives(&mut patient_rx), want);

        let finished = Raise {
            kind: EventKind::ScanFinished,
            by: None,
            data: serde_json::json!({ "scan_id": scan, "status": "complete" }),
            notify: None,
            broadcast: None,
        };
        room.send(finished).await.unwrap().unwrap();
        room.send(live(scan, ScanLiveStatus::Processing, 10)).await.unwrap();
        assert_eq!(lives(&mut host_rx), [], "nothing after the scan finished");
        let other = Uuid::now_v7();
        room.send(live(other, ScanLiveStatus::Streaming, 1)).await.unwrap();
        assert_eq!(lives(&mut patient_rx), [(ScanLiveStatus::Streaming, 1)], "another scan of the consult goes on");
        let recorded = store.0.lock().unwrap().clone();
        let persisted =
            [EventKind::Joined, EventKind::CheckedIn, EventKind::Admitted, EventKind::Joined, EventKind::ScanFinished];
        assert_eq!(recorded, persisted, "live figures are never persisted");
    }
}
