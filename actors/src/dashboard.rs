//! `DashboardHub`: one per node. It owns the live board (bookings, scans, waiting rooms,
//! consults: [`Item`]s keyed by section and id), numbers every change with a sequence
//! number, keeps the last changes in a bounded ring, and fans them out to dashboard
//! sockets, each filtered by its viewer's [`Scope`].
//!
//! The hub is domain-free: the server turns domain events (Redis pub/sub, every node) into
//! [`Change`]s and sends them with [`Apply`]; a socket pump subscribes with [`Subscribe`]
//! and receives a snapshot (or, resuming, the missed deltas) followed by live deltas on a
//! bounded channel. A subscriber that does not keep up is dropped (its channel closes) and
//! resumes from its last position on reconnect, so a slow browser never holds the hub.
//!
//! Views: the clinic view is the whole board; the per-clinician and per-patient views are
//! kept as indexes (clinician id → items, patient id → items) from which a scoped snapshot
//! is built without walking the board.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use coherency_protocol::dashboard::{Change, Delta, Item, Position, Section, ServerMsg, Snapshot};
use tokio::sync::mpsc;
use uuid::Uuid;

/// Tunables.
#[derive(Debug, Clone)]
pub struct HubConfig {
    /// How many changes the ring keeps for resumes.
    pub ring: usize,
    /// Messages buffered per subscriber before it is dropped as too slow.
    pub subscriber_buffer: usize,
    /// How often subscribers that saw no delta are told the hub's position.
    pub position_every: Duration,
}

impl Default for HubConfig {
    fn default() -> Self {
        Self { ring: 4096, subscriber_buffer: 1024, position_every: Duration::from_secs(1) }
    }
}

/// What one viewer may see.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    /// Admins: the whole clinic.
    Clinic,
    /// A clinician: items naming them, and items about their care-team patients.
    Clinician { id: Uuid, patients: HashSet<Uuid> },
    /// A patient: items about themself.
    Patient { id: Uuid },
}

impl Scope {
    /// Whether this viewer may see `item`.
    pub fn sees(&self, item: &Item) -> bool {
        match self {
            Scope::Clinic => true,
            Scope::Clinician { id, patients } => {
                item.clinician_id == Some(*id) || item.patient_id.is_some_and(|p| patients.contains(&p))
            }
            Scope::Patient { id } => item.patient_id == Some(*id),
        }
    }
}

/// What the hub sends a subscriber.
#[derive(Debug, Clone)]
pub enum HubOut {
    /// A message for the socket.
    Msg(Arc<ServerMsg>),
    /// Nothing visible changed up to this hub sequence (the resume position advances).
    Position(u64),
}

type Key = (Section, Uuid);

/// One ring entry: the change and the item as it was before (to filter removes).
struct Entry {
    seq: u64,
    change: Change,
    before: Option<Item>,
}

struct Subscriber {
    scope: Scope,
    tx: mpsc::Sender<HubOut>,
    /// The last seq this subscriber was told about (delta or position).
    told: u64,
}

/// The node's dashboard hub.
pub struct DashboardHub {
    config: HubConfig,
    epoch: u64,
    seq: u64,
    items: BTreeMap<Key, Item>,
    by_clinician: HashMap<Uuid, HashSet<Key>>,
    by_patient: HashMap<Uuid, HashSet<Key>>,
    ring: VecDeque<Entry>,
    subs: HashMap<u64, Subscriber>,
    next_sub: u64,
}

impl DashboardHub {
    /// A hub with a fresh epoch (below 2^53, so JavaScript reads it exactly).
    pub fn new(config: HubConfig) -> Self {
        let epoch = (Uuid::new_v4().as_u128() as u64) & ((1u64 << 53) - 1);
        Self::with_epoch(config, epoch.max(1))
    }

    /// A hub with a given epoch (tests).
    pub fn with_epoch(config: HubConfig, epoch: u64) -> Self {
        Self {
            config,
            epoch,
            seq: 0,
            items: BTreeMap::new(),
            by_clinician: HashMap::new(),
            by_patient: HashMap::new(),
            ring: VecDeque::new(),
            subs: HashMap::new(),
            next_sub: 1,
        }
    }

    fn index(&mut self, key: Key, item: &Item, add: bool) {
        let touch = |map: &mut HashMap<Uuid, HashSet<Key>>, id: Option<Uuid>| {
            let Some(id) = id else { return };
            if add {
                map.entry(id).or_default().insert(key);
            } else if let Some(set) = map.get_mut(&id) {
                set.remove(&key);
                if set.is_empty() {
                    map.remove(&id);
                }
            }
        };
        touch(&mut self.by_clinician, item.clinician_id);
        touch(&mut self.by_patient, item.patient_id);
    }

    /// The items `scope` may see, in board order.
    fn view(&self, scope: &Scope) -> Vec<Item> {
        let keys: Vec<Key> = match scope {
            Scope::Clinic => return self.items.values().cloned().collect(),
            Scope::Patient { id } => self.by_patient.get(id).map(|s| s.iter().copied().collect()).unwrap_or_default(),
            Scope::Clinician { id, patients } => {
                let mut keys: HashSet<Key> = self.by_clinician.get(id).cloned().unwrap_or_default();
                for p in patients {
                    if let Some(s) = self.by_patient.get(p) {
                        keys.extend(s.iter().copied());
                    }
                }
                keys.into_iter().collect()
            }
        };
        let mut keys = keys;
        keys.sort();
        keys.iter().filter_map(|k| self.items.get(k).cloned()).collect()
    }

    /// What a viewer with `scope` sees of `entry`: the change itself, a removal (the item
    /// left the viewer's scope), or nothing.
    fn filtered(scope: &Scope, change: &Change, before: Option<&Item>) -> Option<Change> {
        let was = before.is_some_and(|b| scope.sees(b));
        match change {
            Change::Upsert { item } if scope.sees(item) => Some(change.clone()),
            Change::Upsert { item } if was => Some(Change::Remove { section: item.section, id: item.id }),
            Change::Remove { .. } if was => Some(change.clone()),
            _ => None,
        }
    }

    fn apply_one(&mut self, change: Change) {
        let key = change.key();
        let before = self.items.get(&key).cloned();
        match &change {
            Change::Upsert { item } => {
                if before.as_ref() == Some(item) {
                    return;
                }
                if let Some(b) = &before {
                    self.index(key, b, false);
                }
                self.index(key, item, true);
                self.items.insert(key, item.clone());
            }
            Change::Remove { .. } => {
                let Some(b) = &before else { return };
                self.index(key, b, false);
                self.items.remove(&key);
            }
        }
        self.seq += 1;
        let seq = self.seq;
        let mut dropped = Vec::new();
        for (id, sub) in &mut self.subs {
            let Some(visible) = Self::filtered(&sub.scope, &change, before.as_ref()) else { continue };
            let msg = HubOut::Msg(Arc::new(ServerMsg::Delta(Delta { seq, change: visible })));
            if sub.tx.try_send(msg).is_err() {
                dropped.push(*id);
            } else {
                sub.told = seq;
            }
        }
        for id in dropped {
            self.subs.remove(&id);
        }
        self.ring.push_back(Entry { seq, change, before });
        while self.ring.len() > self.config.ring {
            self.ring.pop_front();
        }
    }

    /// Sends a new subscriber its start: the missed deltas when `resume` is still in the
    /// ring (same epoch, not ahead of the hub), else a snapshot.
    fn begin(&self, scope: &Scope, resume: Option<Position>, tx: &mpsc::Sender<HubOut>) -> Result<(), ()> {
        let oldest = self.ring.front().map(|e| e.seq).unwrap_or(self.seq + 1);
        let resumable = resume.filter(|p| p.epoch == self.epoch && p.seq <= self.seq && p.seq + 1 >= oldest);
        let Some(pos) = resumable else {
            let snap = Snapshot { epoch: self.epoch, seq: self.seq, items: self.view(scope) };
            return tx.try_send(HubOut::Msg(Arc::new(ServerMsg::Snapshot(snap)))).map_err(|_| ());
        };
        tx.try_send(HubOut::Msg(Arc::new(ServerMsg::Resumed { epoch: self.epoch, from_seq: pos.seq })))
            .map_err(|_| ())?;
        for e in self.ring.iter().filter(|e| e.seq > pos.seq) {
            if let Some(c) = Self::filtered(scope, &e.change, e.before.as_ref()) {
                tx.try_send(HubOut::Msg(Arc::new(ServerMsg::Delta(Delta { seq: e.seq, change: c }))))
                    .map_err(|_| ())?;
            }
        }
        tx.try_send(HubOut::Position(self.seq)).map_err(|_| ())
    }
}

impl Actor for DashboardHub {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.set_mailbox_capacity(16 * 1024);
        ctx.run_interval(self.config.position_every, |hub, _| {
            let seq = hub.seq;
            let mut dropped = Vec::new();
            for (id, sub) in &mut hub.subs {
                if sub.told < seq {
                    match sub.tx.try_send(HubOut::Position(seq)) {
                        Ok(()) => sub.told = seq,
                        Err(mpsc::error::TrySendError::Full(_)) => {}
                        Err(mpsc::error::TrySendError::Closed(_)) => dropped.push(*id),
                    }
                }
            }
            for id in dropped {
                hub.subs.remove(&id);
            }
        });
    }
}

/// Applies changes in order (each visible change gets the next sequence number).
#[derive(Message)]
#[rtype(result = "()")]
pub struct Apply(pub Vec<Change>);

impl Handler<Apply> for DashboardHub {
    type Result = ();

    fn handle(&mut self, msg: Apply, _: &mut Context<Self>) {
        for c in msg.0 {
            self.apply_one(c);
        }
    }
}

/// Replaces the items of `sections` by `items` (a reload from the system of record),
/// as the upserts and removals that turn one into the other.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Reload {
    pub sections: Vec<Section>,
    pub items: Vec<Item>,
}

impl Handler<Reload> for DashboardHub {
    type Result = ();

    fn handle(&mut self, msg: Reload, _: &mut Context<Self>) {
        let fresh: HashSet<Key> = msg.items.iter().map(|i| (i.section, i.id)).collect();
        let stale: Vec<Key> =
            self.items.keys().filter(|k| msg.sections.contains(&k.0) && !fresh.contains(k)).copied().collect();
        for (section, id) in stale {
            self.apply_one(Change::Remove { section, id });
        }
        for item in msg.items {
            self.apply_one(Change::Upsert { item });
        }
    }
}

/// Removes every item matching a predicate (pruning of finished or past items).
#[derive(Message)]
#[rtype(result = "()")]
pub struct RemoveWhere(pub Box<dyn Fn(&Item) -> bool + Send>);

impl Handler<RemoveWhere> for DashboardHub {
    type Result = ();

    fn handle(&mut self, msg: RemoveWhere, _: &mut Context<Self>) {
        let gone: Vec<Key> = self.items.iter().filter(|(_, i)| msg.0(i)).map(|(k, _)| *k).collect();
        for (section, id) in gone {
            self.apply_one(Change::Remove { section, id });
        }
    }
}

/// A subscriber's id, for [`Unsubscribe`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SubId(pub u64);

/// Registers a socket. The hub first sends its start (snapshot, or `resumed` and the
/// missed deltas) on `tx`, then every visible delta. `None` if `tx` could not take the
/// start.
#[derive(Message)]
#[rtype(result = "Option<SubId>")]
pub struct Subscribe {
    pub scope: Scope,
    pub resume: Option<Position>,
    pub tx: mpsc::Sender<HubOut>,
}

impl Handler<Subscribe> for DashboardHub {
    type Result = Option<SubId>;

    fn handle(&mut self, msg: Subscribe, _: &mut Context<Self>) -> Option<SubId> {
        self.begin(&msg.scope, msg.resume, &msg.tx).ok()?;
        let id = self.next_sub;
        self.next_sub += 1;
        self.subs.insert(id, Subscriber { scope: msg.scope, tx: msg.tx, told: self.seq });
        Some(SubId(id))
    }
}

/// Deregisters a socket.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Unsubscribe(pub SubId);

impl Handler<Unsubscribe> for DashboardHub {
    type Result = ();

    fn handle(&mut self, msg: Unsubscribe, _: &mut Context<Self>) {
        self.subs.remove(&msg.0 .0);
    }
}

/// The hub's position and size.
#[derive(Debug, Clone, Copy, PartialEq, Eq, MessageResponse)]
pub struct HubStatus {
    pub epoch: u64,
    pub seq: u64,
    pub items: usize,
    pub subscribers: usize,
    /// The oldest seq a resume can start after (minus one).
    pub oldest: u64,
}

/// Asks for [`HubStatus`].
#[derive(Message)]
#[rtype(result = "HubStatus")]
pub struct Status;

impl Handler<Status> for DashboardHub {
    type Result = HubStatus;

    fn handle(&mut self, _: Status, _: &mut Context<Self>) -> HubStatus {
        HubStatus {
            epoch: self.epoch,
            seq: self.seq,
            items: self.items.len(),
            subscribers: self.subs.len(),
            oldest: self.ring.front().map(|e| e.seq).unwrap_or(self.seq + 1),
        }
    }
}

/// A client-side board: applies a subscriber's messages (used by tests and benchmarks to
/// compare what two viewers ended with).
#[derive(Debug, Default, Clone, PartialEq)]
pub struct BoardMirror {
    pub epoch: u64,
    pub seq: u64,
    pub items: BTreeMap<(Section, Uuid), Item>,
}

impl BoardMirror {
    /// Applies one server message.
    pub fn apply(&mut self, msg: &ServerMsg) {
        match msg {
            ServerMsg::Snapshot(s) => {
                self.epoch = s.epoch;
                self.seq = s.seq;
                self.items = s.items.iter().map(|i| ((i.section, i.id), i.clone())).collect();
            }
            ServerMsg::Resumed { epoch, .. } => self.epoch = *epoch,
            ServerMsg::Delta(d) => {
                self.seq = d.seq;
                match &d.change {
                    Change::Upsert { item } => {
                        self.items.insert((item.section, item.id), item.clone());
                    }
                    Change::Remove { section, id } => {
                        self.items.remove(&(*section, *id));
                    }
                }
            }
            ServerMsg::Ping { seq } => self.seq = self.seq.max(*seq),
            ServerMsg::Pong | ServerMsg::Error { .. } => {}
        }
    }

    /// Where to resume from.
    pub fn position(&self) -> Position {
        Position { epoch: self.epoch, seq: self.seq }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(section: Section, id: u128, patient: Option<u128>, clinician: Option<u128>, status: &str) -> Item {
        Item {
            section,
            id: Uuid::from_u128(id),
            patient_id: patient.map(Uuid::from_u128),
            clinician_id: clinician.map(Uuid::from_u128),
            status: status.into(),
            since_ms: 0,
            updated_ms: 0,
            data: Default::default(),
            patient_name: None,
            wound: None,
        }
    }

    fn up(i: Item) -> Change {
        Change::Upsert { item: i }
    }

    async fn drain(rx: &mut mpsc::Receiver<HubOut>, board: &mut BoardMirror) {
        while let Ok(Some(m)) = tokio::time::timeout(Duration::from_millis(50), rx.recv()).await {
            match m {
                HubOut::Msg(m) => board.apply(&m),
                HubOut::Position(s) => board.seq = board.seq.max(s),
            }
        }
    }

    fn clinician(id: u128, patients: &[u128]) -> Scope {
        Scope::Clinician { id: Uuid::from_u128(id), patients: patients.iter().map(|p| Uuid::from_u128(*p)).collect() }
    }

    #[actix_rt::test]
    async fn a_clinician_sees_only_their_patients_and_their_own_calendar() {
        let hub = DashboardHub::new(HubConfig::default()).start();
        let (tx, mut rx) = mpsc::channel(64);
        hub.send(Subscribe { scope: clinician(100, &[1]), resume: None, tx }).await.unwrap().unwrap();
        hub.send(Apply(vec![
            up(item(Section::Scans, 10, Some(1), None, "streaming")),
            up(item(Section::Scans, 11, Some(2), None, "streaming")),
            up(item(Section::Bookings, 12, Some(3), Some(100), "booked")),
            up(item(Section::Bookings, 13, Some(3), Some(200), "booked")),
        ]))
        .await
        .unwrap();
        let mut board = BoardMirror::default();
        drain(&mut rx, &mut board).await;
        let ids: Vec<u128> = board.items.values().map(|i| i.id.as_u128()).collect();
        assert_eq!(ids, vec![12, 10]);
    }

    #[actix_rt::test]
    async fn an_item_leaving_a_viewers_scope_is_removed_for_them() {
        let hub = DashboardHub::new(HubConfig::default()).start();
        let (tx, mut rx) = mpsc::channel(64);
        hub.send(Subscribe { scope: clinician(100, &[]), resume: None, tx }).await.unwrap().unwrap();
        hub.send(Apply(vec![up(item(Section::Bookings, 1, Some(3), Some(100), "held"))])).await.unwrap();
        hub.send(Apply(vec![up(item(Section::Bookings, 1, Some(3), Some(200), "held"))])).await.unwrap();
        let mut board = BoardMirror::default();
        drain(&mut rx, &mut board).await;
        assert!(board.items.is_empty());
    }

    #[actix_rt::test]
    async fn a_resumed_viewer_ends_like_one_that_never_left_and_a_lagging_one_gets_a_snapshot() {
        let hub = DashboardHub::new(HubConfig { ring: 8, ..HubConfig::default() }).start();
        let (tx_a, mut rx_a) = mpsc::channel(256);
        let (tx_b, mut rx_b) = mpsc::channel(256);
        hub.send(Subscribe { scope: Scope::Clinic, resume: None, tx: tx_a }).await.unwrap().unwrap();
        let sub_b = hub.send(Subscribe { scope: Scope::Clinic, resume: None, tx: tx_b }).await.unwrap().unwrap();
        hub.send(Apply(vec![up(item(Section::Scans, 1, Some(1), None, "created"))])).await.unwrap();
        let (mut a, mut b) = (BoardMirror::default(), BoardMirror::default());
        drain(&mut rx_b, &mut b).await;
        hub.send(Unsubscribe(sub_b)).await.unwrap();
        hub.send(Apply(vec![
            up(item(Section::Scans, 1, Some(1), None, "streaming")),
            up(item(Section::Scans, 2, Some(1), None, "created")),
            Change::Remove { section: Section::Scans, id: Uuid::from_u128(2) },
        ]))
        .await
        .unwrap();
        let (tx_b, mut rx_b) = mpsc::channel(256);
        hub.send(Subscribe { scope: Scope::Clinic, resume: Some(b.position()), tx: tx_b }).await.unwrap().unwrap();
        let mut first = None;
        while let Ok(Some(m)) = tokio::time::timeout(Duration::from_millis(50), rx_b.recv()).await {
            if let HubOut::Msg(m) = m {
                first.get_or_insert_with(|| (*m).clone());
                b.apply(&m);
            }
        }
        assert!(matches!(first, Some(ServerMsg::Resumed { .. })), "{first:?}");
        drain(&mut rx_a, &mut a).await;
        assert_eq!(a.items, b.items);

        // Too far behind: more changes than the ring holds.
        let pos = b.position();
        let changes = (0..20).map(|n| up(item(Section::Scans, 1, Some(1), None, &format!("s{n}")))).collect();
        hub.send(Apply(changes)).await.unwrap();
        let (tx_c, mut rx_c) = mpsc::channel(256);
        hub.send(Subscribe { scope: Scope::Clinic, resume: Some(pos), tx: tx_c }).await.unwrap().unwrap();
        let Some(HubOut::Msg(m)) = rx_c.recv().await else { panic!("no start") };
        assert!(matches!(&*m, ServerMsg::Snapshot(s) if s.items[0].status == "s19"));
    }
}
