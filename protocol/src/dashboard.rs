//! The dashboard socket (`GET /v1/dashboard/ws`): JSON text messages, one object per
//! websocket message, tagged by `"t"`. A browser is the usual client, so this socket speaks
//! JSON rather than MessagePack (`docs/dashboard.md` has the full description).
//!
//! The server sends a [`Snapshot`] of the board as the caller may see it, then [`Delta`]s
//! in increasing `seq` order. `seq` is the hub's sequence (per node, per `epoch`): a
//! client sees gaps (deltas for other viewers are filtered out) and must only rely on the
//! order. Every message from the server carries the hub `seq` it is consistent with, so a
//! client always knows the position to resume from. On reconnect the client sends
//! `hello {resume: {epoch, seq}}`; the server answers with the missed deltas (`resumed`,
//! then deltas) when its ring still holds them and the epoch matches, otherwise with a new
//! snapshot.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Version of the dashboard socket protocol.
pub const DASHBOARD_PROTOCOL_VERSION: u32 = 1;
/// Largest message a client may send, in bytes.
pub const MAX_CLIENT_MESSAGE_BYTES: usize = 4 * 1024;
/// Most messages a client may send per second (sustained); more closes the socket 1008.
pub const MAX_CLIENT_MESSAGES_PER_SEC: u32 = 20;

/// A section of the board.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Section {
    /// Upcoming appointments and holds (today's and the next days').
    Bookings,
    /// Scans being captured or processed, and recently finished ones.
    Scans,
    /// Patients checked in and waiting to be admitted.
    Waiting,
    /// Consults in progress.
    Consults,
}

/// One thing on the board. Items hold ids, times and a small non-PHI `data` map; names
/// are added by the server for the authorised viewer only (`patient_name`, a scan's `wound`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Item {
    pub section: Section,
    /// The entity id (appointment, scan, waiting-room entry, consult).
    pub id: Uuid,
    /// The patient concerned, if any (scopes the item to the patient and their care team).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub patient_id: Option<Uuid>,
    /// The clinician concerned, if any (e.g. the appointment's clinician).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clinician_id: Option<Uuid>,
    /// Lifecycle state, e.g. `booked`, `streaming`, `waiting`, `in_consult`.
    pub status: String,
    /// When the item began (appointment start, scan creation, check-in), Unix ms.
    pub since_ms: i64,
    /// When it last changed, Unix ms.
    pub updated_ms: i64,
    /// Small, section-specific values (e.g. `end_ms`, `frames`, `coverage`).
    #[serde(default)]
    pub data: serde_json::Map<String, serde_json::Value>,
    /// The patient's display name, filled in per viewer by the server.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub patient_name: Option<String>,
    /// A scan's wound, filled in per viewer by the server.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wound: Option<Box<WoundLabel>>,
}

/// The wound a scan item belongs to, as the board names it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WoundLabel {
    pub id: Uuid,
    /// The site in words (`Left heel`).
    pub site: String,
    /// `left`, `right`, `bilateral`, `midline` or `unspecified`.
    pub laterality: String,
    /// `pressure`, `diabetic_foot`, `venous`, … (`docs/api.md`, "Wounds").
    pub aetiology: String,
}

/// What a delta does.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Change {
    /// Insert or replace the item with this section and id.
    Upsert { item: Item },
    /// Remove the item with this section and id.
    Remove { section: Section, id: Uuid },
}

impl Change {
    /// The `(section, id)` the change applies to.
    pub fn key(&self) -> (Section, Uuid) {
        match self {
            Change::Upsert { item } => (item.section, item.id),
            Change::Remove { section, id } => (*section, *id),
        }
    }
}

/// A resume position.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Position {
    pub epoch: u64,
    pub seq: u64,
}

/// The whole board as the viewer may see it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Snapshot {
    pub epoch: u64,
    /// Every delta up to and including `seq` is reflected.
    pub seq: u64,
    pub items: Vec<Item>,
}

/// One change.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Delta {
    pub seq: u64,
    #[serde(flatten)]
    pub change: Change,
}

/// Messages from the server.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "t", rename_all = "snake_case")]
pub enum ServerMsg {
    /// Sent first after `hello` (and whenever a resume is impossible).
    Snapshot(Snapshot),
    /// Sent instead of a snapshot when a resume succeeds; missed deltas follow.
    Resumed {
        epoch: u64,
        from_seq: u64,
    },
    Delta(Delta),
    /// Heartbeat; the viewer has seen every delta up to `seq` (resume from here).
    Ping {
        seq: u64,
    },
    /// Answer to a client `ping`.
    Pong,
    /// A fatal error before the close (codes from the error catalogue).
    Error {
        code: String,
        message: String,
    },
}

/// Messages from the client.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "t", rename_all = "snake_case", deny_unknown_fields)]
pub enum ClientMsg {
    /// The first message. `resume` is the last position seen on a previous connection.
    Hello {
        v: u32,
        #[serde(default)]
        resume: Option<Position>,
    },
    /// Keep-alive; answered with `pong`.
    Ping,
    /// Answer to a server `ping` (optional: any message counts as liveness).
    Pong,
}

impl ServerMsg {
    /// The JSON text of the message.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|_| String::from(r#"{"t":"error","code":"internal"}"#))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_have_the_documented_shape() {
        let id = Uuid::nil();
        let d = ServerMsg::Delta(Delta { seq: 7, change: Change::Remove { section: Section::Scans, id } });
        let v: serde_json::Value = serde_json::from_str(&d.to_json()).unwrap();
        assert_eq!(v["t"], "delta");
        assert_eq!(v["seq"], 7);
        assert_eq!(v["op"], "remove");
        assert_eq!(v["section"], "scans");
        let hello: ClientMsg = serde_json::from_str(r#"{"t":"hello","v":1,"resume":{"epoch":3,"seq":9}}"#).unwrap();
        assert_eq!(hello, ClientMsg::Hello { v: 1, resume: Some(Position { epoch: 3, seq: 9 }) });
        assert!(serde_json::from_str::<ClientMsg>(r#"{"t":"hello","v":1,"x":1}"#).is_err());
    }
}
