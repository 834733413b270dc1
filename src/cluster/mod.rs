//! Several nodes, one deployment: who owns a live entity (a Redis lease per room and per
//! scan capture session) and how nodes talk to each other (a Redis pub/sub channel per
//! node carrying requests, replies and pushes). `docs/architecture.md` § Scale-out.
//!
//! Redis never holds the only copy of anything: a lost lease or message costs a reconnect,
//! never data (rooms and capture sessions restart from Postgres).

pub mod bus;
pub mod lease;
pub mod rooms;
pub mod scans;

use std::sync::Arc;

use actix::Addr;
use coherency_actors::capture::{CaptureRegistry, LiveSessions};
use coherency_actors::Rooms;

pub use bus::{Bus, BusError};
pub use lease::{Claim, Leases};

use crate::store::redis::Redis;

/// What the cluster code uses of this node: its name, its end of the bus, its leases, the
/// rooms and capture sessions it runs, and its relayed sockets. Built once at start
/// (`startup::app_state`) and held by the application state as `state.cluster`.
pub struct Node {
    /// This node's name (its bus channel, the holder written into its leases).
    pub name: String,
    /// This node's end of the node bus.
    pub bus: Bus,
    /// Leases this node holds on rooms and capture sessions.
    pub leases: Arc<Leases>,
    /// Signalling sockets here whose room runs on another node.
    pub relay: Arc<rooms::Relay>,
    /// This node's consult rooms.
    pub rooms: Arc<Rooms>,
    /// This node's scan capture sessions.
    pub capture: Addr<CaptureRegistry>,
    /// The scans whose capture session runs on this node (kept by `capture`; the scan
    /// leases' renewer reads it).
    pub capture_live: LiveSessions,
}

impl Node {
    /// This node, named `name`, over the deployment's Redis.
    pub fn new(redis: &Redis, name: String, capture: Addr<CaptureRegistry>, capture_live: LiveSessions) -> Self {
        Self {
            bus: Bus::new(redis.clone(), name.clone()),
            leases: Arc::new(Leases::new(redis.clone(), name.clone())),
            relay: Default::default(),
            rooms: Default::default(),
            capture,
            capture_live,
            name,
        }
    }
}

/// Lease key of a consult's room.
pub fn room_key(id: uuid::Uuid) -> String {
    format!("lease:room:{id}")
}

/// Lease key of a scan's capture session.
pub fn scan_key(id: uuid::Uuid) -> String {
    format!("lease:scan:{id}")
}
