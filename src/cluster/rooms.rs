//! Rooms across nodes. A consult's `Room` runs on the node holding its lease (the first node
//! that needed it). Any other node reaches it through [`RoomRef`]: host actions and check-ins
//! become bus requests; a signalling socket that lands elsewhere is relayed: its frames go
//! to the owner as ordered pushes, and the room's outbox for that connection comes back the
//! same way. Media is not relayed: the SFU's ICE candidates are the owner's own addresses, so
//! the peer connection goes straight to the owner.
//!
//! Failure handling: an edge watches the lease; when the owner is gone (its lease expired or
//! moved), the relayed socket closes with 1001 and the client reconnects, starting the room
//! again from Postgres wherever it lands. An owner whose edge no longer listens (PUBLISH
//! reaches nobody) or no longer knows the connection disconnects it, so the seat is held
//! for the grace period as with any dropped connection.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix::{Addr, Handler, Message};
use coherency_actors::room::{self, Outbound, Outbox, Room};
use coherency_protocol::consult::{close, ClientSignal, IceServer, ParticipantRole, ServerSignal};
use coherency_protocol::ids::ConsultId;
use coherency_protocol::Code;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use uuid::Uuid;

use super::bus::{Push, Request};
use super::{Leases, Node};
use crate::error::ApiError;

/// How often an edge checks that the room's owner still holds the lease, and an owner
/// checks that a relayed connection's edge still listens.
const WATCH_EVERY: Duration = Duration::from_secs(2);

/// A host action or check-in for the room of `consult`, run by its owner.
#[derive(Debug, Serialize, Deserialize)]
pub struct RoomRequest {
    pub consult: Uuid,
    pub op: RoomOp,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum RoomOp {
    CheckIn(room::CheckIn),
    Decide(room::Decide),
    Invite(room::Invite),
    End(room::End),
    Queue(room::Queue),
    Participants(room::Participants),
    Raise(Box<room::Raise>),
    PrivateMessage(room::PrivateMessage),
    /// A signalling socket on the sender's node, known there as `edge`.
    Connect {
        user_id: Uuid,
        role: ParticipantRole,
        ice_servers: Vec<IceServer>,
        edge: u64,
    },
}

/// Ordered one-way traffic of relayed connections.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum RoomPush {
    /// Edge → owner: a client frame.
    FromClient { consult: Uuid, conn_id: u64, msg: ClientSignal },
    /// Edge → owner: the socket closed.
    Disconnect { consult: Uuid, conn_id: u64 },
    /// Owner → edge: a signal for the socket.
    Signal { edge: u64, signal: ServerSignal },
    /// Owner → edge: close the socket with this code.
    Close { edge: u64, code: u16, reason: String },
    /// Owner → edge: the room let go of the connection.
    Gone { edge: u64 },
}

/// An error as it crosses the bus.
#[derive(Debug, Serialize, Deserialize)]
struct WireError {
    code: Code,
    message: String,
}

impl From<WireError> for ApiError {
    fn from(e: WireError) -> Self {
        ApiError::new(e.code, e.message)
    }
}

fn ended() -> ApiError {
    ApiError::new(Code::ConsultEnded, "the consult has ended")
}

fn owner_gone(e: super::BusError) -> ApiError {
    tracing::warn!(error = %e, "room owner did not answer");
    ApiError::unavailable("the consult's room is moving to another node; retry")
}

/// A message the room answers, that may cross the bus.
pub trait RoomCall: Message<Result = Self::Out> + Sized + Send + 'static
where
    Room: Handler<Self>,
{
    type Out: Serialize + DeserializeOwned + Send + 'static;
    fn op(self) -> RoomOp;
}

macro_rules! room_call {
    ($($t:ident => $out:ty),* $(,)?) => {$(
        impl RoomCall for room::$t {
            type Out = $out;
            fn op(self) -> RoomOp {
                RoomOp::$t(self)
            }
        }
    )*};
}

room_call! {
    CheckIn => Result<(Uuid, coherency_protocol::consult::ParticipantState, u32), room::RoomError>,
    Decide => Result<room::Participant, room::RoomError>,
    Invite => Result<room::Participant, room::RoomError>,
    End => Result<u64, room::RoomError>,
    Queue => Vec<room::Participant>,
    Participants => Vec<room::Participant>,
    PrivateMessage => Result<room::MessageSent, room::RoomError>,
}

impl RoomCall for room::Raise {
    type Out = Result<u64, room::RoomError>;
    fn op(self) -> RoomOp {
        RoomOp::Raise(Box::new(self))
    }
}

/// A consult's room, here or on another node.
#[derive(Clone)]
pub enum RoomRef {
    Local(Addr<Room>),
    Remote { node: String, consult: Uuid },
}

impl RoomRef {
    /// Sends `msg` to the room and waits for its answer.
    pub async fn call<M: RoomCall>(&self, here: &Node, msg: M) -> Result<M::Out, ApiError>
    where
        Room: Handler<M>,
        M::Result: Send,
    {
        match self {
            RoomRef::Local(a) => a.send(msg).await.map_err(|_| ended()),
            RoomRef::Remote { node, consult } => {
                let req = Request::Room(Box::new(RoomRequest { consult: *consult, op: msg.op() }));
                let r: Result<M::Out, WireError> = here.bus.request(node, req).await.map_err(owner_gone)?;
                r.map_err(ApiError::from)
            }
        }
    }

    /// Seats a signalling connection whose outbox is `tx`.
    pub async fn connect(
        &self,
        here: &Node,
        user_id: Uuid,
        role: ParticipantRole,
        ice_servers: Vec<IceServer>,
        tx: Outbox,
    ) -> Result<Conn, ApiError> {
        match self {
            RoomRef::Local(a) => {
                let conn_id = a
                    .send(room::Connect { user_id, role, ice_servers, tx })
                    .await
                    .map_err(|_| ended())?
                    .map_err(ApiError::from)?;
                Ok(Conn::Local { room: a.clone(), conn_id })
            }
            RoomRef::Remote { node, consult } => {
                let edge = here.relay.add(tx);
                let req = Request::Room(Box::new(RoomRequest {
                    consult: *consult,
                    op: RoomOp::Connect { user_id, role, ice_servers, edge },
                }));
                let r: Result<Result<u64, WireError>, _> = here.bus.request(node, req).await;
                match r {
                    Ok(Ok(conn_id)) => {
                        here.relay.watch(&here.leases, edge, node.clone(), *consult);
                        Ok(Conn::Remote { node: node.clone(), consult: *consult, conn_id, edge })
                    }
                    Ok(Err(e)) => {
                        here.relay.remove(edge);
                        Err(e.into())
                    }
                    Err(e) => {
                        here.relay.remove(edge);
                        Err(owner_gone(e))
                    }
                }
            }
        }
    }
}

/// A seated signalling connection.
pub enum Conn {
    Local { room: Addr<Room>, conn_id: u64 },
    Remote { node: String, consult: Uuid, conn_id: u64, edge: u64 },
}

impl Conn {
    /// Forwards a client frame (in order).
    pub async fn send(&self, here: &Node, msg: ClientSignal) {
        match self {
            Conn::Local { room, conn_id } => room.do_send(room::FromClient { conn_id: *conn_id, msg }),
            Conn::Remote { node, consult, conn_id, .. } => {
                let p = RoomPush::FromClient { consult: *consult, conn_id: *conn_id, msg };
                if let Err(e) = here.bus.push(node, Push::Room(p)).await {
                    tracing::warn!(error = %e, "relayed signal lost");
                }
            }
        }
    }

    /// Tells the room the socket closed.
    pub async fn disconnect(&self, here: &Node) {
        match self {
            Conn::Local { room, conn_id } => room.do_send(room::Disconnect { conn_id: *conn_id }),
            Conn::Remote { node, consult, conn_id, edge } => {
                here.relay.remove(*edge);
                let p = RoomPush::Disconnect { consult: *consult, conn_id: *conn_id };
                if let Err(e) = here.bus.push(node, Push::Room(p)).await {
                    tracing::warn!(error = %e, "relayed disconnect lost; the owner notices by itself");
                }
            }
        }
    }
}

/// This node's relayed sockets (edge side), by edge id.
#[derive(Default)]
pub struct Relay {
    next: AtomicU64,
    edges: Mutex<HashMap<u64, Outbox>>,
}

impl Relay {
    fn edges(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Outbox>> {
        self.edges.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn add(&self, tx: Outbox) -> u64 {
        let id = self.next.fetch_add(1, Ordering::Relaxed) + 1;
        self.edges().insert(id, tx);
        id
    }

    fn remove(&self, edge: u64) {
        self.edges().remove(&edge);
    }

    fn deliver(&self, edge: u64, out: Outbound) -> bool {
        match self.edges().get(&edge) {
            Some(tx) => tx.send(out).is_ok(),
            None => false,
        }
    }

    /// Relayed sockets open on this node.
    pub fn len(&self) -> usize {
        self.edges().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Closes the socket with 1001 once the owner no longer holds the room's lease.
    fn watch(self: &Arc<Self>, leases: &Arc<Leases>, edge: u64, node: String, consult: Uuid) {
        let leases = leases.clone();
        let relay = self.clone();
        actix_web::rt::spawn(async move {
            let key = super::room_key(consult);
            let mut tick = tokio::time::interval(WATCH_EVERY);
            tick.tick().await;
            loop {
                tick.tick().await;
                if !relay.edges().contains_key(&edge) {
                    return;
                }
                match leases.owner(&key).await {
                    Ok(Some(n)) if n == node => {}
                    Ok(_) => {
                        relay.deliver(edge, Outbound::Close(close::MOVED, "room moved".into()));
                        relay.remove(edge);
                        return;
                    }
                    Err(e) => tracing::debug!(error = %e, "room lease not readable; keeping the relay"),
                }
            }
        });
    }
}

/// Handles a push from `from` (called in arrival order).
pub fn on_push(here: &Node, from: &str, p: RoomPush) {
    match p {
        RoomPush::FromClient { consult, conn_id, msg } => {
            if let Some(r) = here.rooms.get(ConsultId::from_uuid(consult)) {
                r.do_send(room::FromClient { conn_id, msg });
            }
        }
        RoomPush::Disconnect { consult, conn_id } => {
            if let Some(r) = here.rooms.get(ConsultId::from_uuid(consult)) {
                r.do_send(room::Disconnect { conn_id });
            }
        }
        RoomPush::Signal { edge, signal } => {
            if !here.relay.deliver(edge, Outbound::Signal(signal)) {
                tracing::debug!(from, edge, "signal for a relayed socket that is gone");
            }
        }
        RoomPush::Close { edge, code, reason: r } => {
            here.relay.deliver(edge, Outbound::Close(code, r.into()));
            here.relay.remove(edge);
        }
        RoomPush::Gone { edge } => here.relay.remove(edge),
    }
}

/// Answers a room request on the owner.
pub async fn serve(here: &Arc<Node>, from: &str, req: RoomRequest) -> serde_json::Value {
    let cid = ConsultId::from_uuid(req.consult);
    let Some(r) = here.rooms.get(cid).filter(|_| here.leases.holds(&super::room_key(req.consult))) else {
        // The room stopped here (or moved): the caller starts or finds it again.
        return answer::<()>(Err(WireError {
            code: Code::Unavailable,
            message: "the consult's room is moving to another node; retry".into(),
        }));
    };
    match req.op {
        RoomOp::CheckIn(m) => run(&r, m).await,
        RoomOp::Decide(m) => run(&r, m).await,
        RoomOp::Invite(m) => run(&r, m).await,
        RoomOp::End(m) => run(&r, m).await,
        RoomOp::Queue(m) => run(&r, m).await,
        RoomOp::Participants(m) => run(&r, m).await,
        RoomOp::Raise(m) => run(&r, *m).await,
        RoomOp::PrivateMessage(m) => run(&r, m).await,
        RoomOp::Connect { user_id, role, ice_servers, edge } => {
            let (tx, rx) = mpsc::unbounded_channel();
            let res = r.send(room::Connect { user_id, role, ice_servers, tx }).await;
            match res {
                Ok(Ok(conn_id)) => {
                    forward(here.clone(), from.to_string(), r.clone(), conn_id, edge, rx);
                    answer::<u64>(Ok(conn_id))
                }
                Ok(Err(e)) => answer::<u64>(Err(WireError {
                    code: coherency_protocol::ErrorCode::code(&e),
                    message: e.to_string(),
                })),
                Err(_) => {
                    answer::<u64>(Err(WireError { code: Code::ConsultEnded, message: "the consult has ended".into() }))
                }
            }
        }
    }
}

async fn run<M: RoomCall>(r: &Addr<Room>, m: M) -> serde_json::Value
where
    Room: Handler<M>,
    M::Result: Send,
{
    match r.send(m).await {
        Ok(out) => answer::<M::Out>(Ok(out)),
        Err(_) => {
            answer::<M::Out>(Err(WireError { code: Code::ConsultEnded, message: "the consult has ended".into() }))
        }
    }
}

fn answer<T: Serialize>(r: Result<T, WireError>) -> serde_json::Value {
    serde_json::to_value(r).unwrap_or(serde_json::Value::Null)
}

/// Owner side of a relayed connection: the room's outbox goes to the edge, in order. If
/// the edge node stops listening, the connection is dropped from the room.
fn forward(
    here: Arc<Node>,
    edge_node: String,
    room: Addr<Room>,
    conn_id: u64,
    edge: u64,
    mut rx: mpsc::UnboundedReceiver<Outbound>,
) {
    actix_web::rt::spawn(async move {
        let mut tick = tokio::time::interval(WATCH_EVERY);
        tick.tick().await;
        loop {
            let push = tokio::select! {
                out = rx.recv() => match out {
                    Some(Outbound::Signal(signal)) => RoomPush::Signal { edge, signal },
                    Some(Outbound::Close(code, why)) => RoomPush::Close { edge, code, reason: why.into_owned() },
                    None => RoomPush::Gone { edge },
                },
                _ = tick.tick() => {
                    if !here.bus.listening(&edge_node).await {
                        room.do_send(room::Disconnect { conn_id });
                        return;
                    }
                    continue;
                }
            };
            let last = matches!(push, RoomPush::Gone { .. } | RoomPush::Close { .. });
            if let Err(e) = here.bus.push(&edge_node, Push::Room(push)).await {
                tracing::warn!(error = %e, "relayed signal not delivered");
            }
            if last {
                return;
            }
        }
    });
}
