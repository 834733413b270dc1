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

pub use bus::{Bus, BusError};
pub use lease::{Claim, Leases};

/// Lease key of a consult's room.
pub fn room_key(id: uuid::Uuid) -> String {
    format!("lease:room:{id}")
}

/// Lease key of a scan's capture session.
pub fn scan_key(id: uuid::Uuid) -> String {
    format!("lease:scan:{id}")
}
