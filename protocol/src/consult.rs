//! Consult signalling (`GET /v1/consults/{id}/signal`): JSON text frames, one object per
//! frame, tagged by `type`. Clients send [`ClientSignal`], the server sends [`ServerSignal`].
//! Lifecycle events ([`RoomEvent`]) carry a per-room sequence number that starts at 1 and
//! has no gaps; the same objects go to webhooks and the Redis bus. See `docs/protocol.md`.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::ids::ConsultId;

/// Version of the signalling protocol, sent in `welcome`.
pub const SIGNAL_VERSION: u32 = 1;
/// Largest text frame a client may send (an SDP offer with several tracks fits easily).
pub const MAX_SIGNAL_FRAME: usize = 64 * 1024;
/// Longest chat message, in characters.
pub const MAX_CHAT_CHARS: usize = 2000;
/// Longest private message from the host to one participant
/// (`POST /v1/consults/{id}/participants/{pid}/message`), in characters.
pub const MAX_MESSAGE_CHARS: usize = 500;

/// A participant's part in a consult.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ParticipantRole {
    /// The clinician running the consult: admits, denies, invites, removes, ends.
    Host,
    /// The patient the consult is about.
    Patient,
    /// An invited interpreter.
    Interpreter,
    /// An invited family member or carer.
    Family,
    /// An invited second clinician.
    Clinician,
}

impl ParticipantRole {
    pub fn as_str(self) -> &'static str {
        match self {
            ParticipantRole::Host => "host",
            ParticipantRole::Patient => "patient",
            ParticipantRole::Interpreter => "interpreter",
            ParticipantRole::Family => "family",
            ParticipantRole::Clinician => "clinician",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "host" => ParticipantRole::Host,
            "patient" => ParticipantRole::Patient,
            "interpreter" => ParticipantRole::Interpreter,
            "family" => ParticipantRole::Family,
            "clinician" => ParticipantRole::Clinician,
            _ => return None,
        })
    }
}

/// Where a participant stands. Only `admitted` participants receive media, chat and events.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ParticipantState {
    /// Invited by the host; admitted as soon as they connect.
    Invited,
    /// Checked in, in the host's waiting room.
    Waiting,
    /// Admitted by the host (or the host themself).
    Admitted,
    /// Refused by the host; final for this consult.
    Denied,
    /// Left (or lost their connection past the grace period); may check in again.
    Left,
    /// Removed by the host; final for this consult.
    Removed,
}

impl ParticipantState {
    pub fn as_str(self) -> &'static str {
        match self {
            ParticipantState::Invited => "invited",
            ParticipantState::Waiting => "waiting",
            ParticipantState::Admitted => "admitted",
            ParticipantState::Denied => "denied",
            ParticipantState::Left => "left",
            ParticipantState::Removed => "removed",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "invited" => ParticipantState::Invited,
            "waiting" => ParticipantState::Waiting,
            "admitted" => ParticipantState::Admitted,
            "denied" => ParticipantState::Denied,
            "left" => ParticipantState::Left,
            "removed" => ParticipantState::Removed,
            _ => return None,
        })
    }
}

/// What happened in a room.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    /// The consult's room opened (first event of every room).
    Opened,
    CheckedIn,
    Admitted,
    Denied,
    Invited,
    /// An admitted participant's signalling connection is in the room.
    Joined,
    /// A joined participant left (hang up, or lost connection past the grace period).
    Left,
    /// A participant left before joining (from the waiting room, or admitted but never connected).
    LeftBeforeJoined,
    Removed,
    TrackPublished,
    TrackUnpublished,
    ScanRequested,
    ScanProgress,
    ScanFinished,
    /// The host muted a participant's audio or video (`data.kind`).
    Muted,
    /// The host unmuted it.
    Unmuted,
    Ended,
}

impl EventKind {
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Opened => "opened",
            EventKind::CheckedIn => "checked_in",
            EventKind::Admitted => "admitted",
            EventKind::Denied => "denied",
            EventKind::Invited => "invited",
            EventKind::Joined => "joined",
            EventKind::Left => "left",
            EventKind::LeftBeforeJoined => "left_before_joined",
            EventKind::Removed => "removed",
            EventKind::TrackPublished => "track_published",
            EventKind::TrackUnpublished => "track_unpublished",
            EventKind::ScanRequested => "scan_requested",
            EventKind::ScanProgress => "scan_progress",
            EventKind::ScanFinished => "scan_finished",
            EventKind::Muted => "muted",
            EventKind::Unmuted => "unmuted",
            EventKind::Ended => "ended",
        }
    }
}

/// A lifecycle event: the same object on the signalling socket, the Redis bus and webhooks.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RoomEvent {
    pub consult_id: ConsultId,
    /// Per-room sequence number: 1, 2, 3, … with no gaps.
    pub seq: u64,
    pub kind: EventKind,
    /// The participant the event is about, when there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub participant_id: Option<Uuid>,
    /// That participant's user.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_id: Option<Uuid>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<ParticipantRole>,
    /// Who caused it (the host for admit, deny, invite, remove, end).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub by: Option<Uuid>,
    /// Kind-specific facts (track id and kind, end reason, scan id, …). Never PHI.
    #[serde(default, skip_serializing_if = "serde_json::Value::is_null")]
    pub data: serde_json::Value,
    /// RFC 3339 time the room recorded it.
    pub at: String,
}

/// An ICE candidate as the browser's `RTCIceCandidateInit`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IceCandidate {
    pub candidate: String,
    #[serde(default, rename = "sdpMid", skip_serializing_if = "Option::is_none")]
    pub sdp_mid: Option<String>,
    #[serde(default, rename = "sdpMLineIndex", skip_serializing_if = "Option::is_none")]
    pub sdp_mline_index: Option<u16>,
    #[serde(default, rename = "usernameFragment", skip_serializing_if = "Option::is_none")]
    pub username_fragment: Option<String>,
}

/// An ICE server as the browser's `RTCIceServer`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IceServer {
    pub urls: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential: Option<String>,
}

/// Client → server.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum ClientSignal {
    /// An SDP offer (first connection of media, or renegotiation after adding/removing tracks).
    Offer { sdp: String },
    /// The answer to a server offer.
    Answer { sdp: String },
    /// A trickled candidate; `null` candidate text is not sent (end of candidates is implicit).
    Ice { candidate: IceCandidate },
    /// A chat message to everyone admitted.
    Chat { text: String },
    /// Hang up: leave now, without a grace period.
    Leave,
    /// Application-level keepalive; answered with `pong`.
    Ping,
    /// Host only: stop (`muted: true`) or resume forwarding a participant's `audio` or
    /// `video` to the others. Recorded as a `muted` / `unmuted` event.
    Mute { participant_id: Uuid, kind: MediaKind, muted: bool },
}

/// A kind of media track.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MediaKind {
    Audio,
    Video,
}

impl MediaKind {
    pub fn as_str(self) -> &'static str {
        match self {
            MediaKind::Audio => "audio",
            MediaKind::Video => "video",
        }
    }
}

/// Server → client.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerSignal {
    /// First frame on every connection.
    Welcome {
        protocol: u32,
        consult_id: ConsultId,
        participant_id: Uuid,
        role: ParticipantRole,
        state: ParticipantState,
        /// True when this connection took over a seat kept during the grace period.
        resumed: bool,
        ice_servers: Vec<IceServer>,
    },
    /// The caller is in the waiting room at this 1-based position.
    Waiting {
        position: u32,
    },
    /// The host admitted the caller: media, chat and events follow.
    Admitted,
    /// The host denied the caller; the socket closes.
    Denied,
    /// The host removed the caller; the socket closes.
    Removed,
    Offer {
        sdp: String,
    },
    Answer {
        sdp: String,
    },
    Ice {
        candidate: IceCandidate,
    },
    /// A chat line: `from` is the sender's user id. With `to`, it is the host's private
    /// message to that participant (the one receiving it; a waiting participant gets these
    /// too) and nobody else has it.
    Chat {
        from: Uuid,
        role: ParticipantRole,
        text: String,
        at: String,
        /// The recipient's participant id, when the message is private.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        to: Option<Uuid>,
    },
    Event {
        event: RoomEvent,
    },
    /// The host asked this participant's app to start a wound scan.
    ScanRequest {
        scan_id: Uuid,
    },
    /// A scan taken in this consult was measured: its measurements (as
    /// `GET /v1/scans/{id}/measurements` lists them), sent live to everyone admitted and
    /// connected. Not part of the event log (which carries ids and statuses only).
    ScanResult {
        scan_id: Uuid,
        measurements: serde_json::Value,
    },
    /// Live figures of a scan taken in this consult while the phone streams it and while it
    /// is processed (about two a second at most), to everyone admitted and connected.
    /// Ephemeral: not in the event log, not sent to webhooks. `frames` never goes back for a
    /// scan, and none follows the scan's `scan_result`.
    ScanLive {
        scan_id: Uuid,
        status: ScanLiveStatus,
        /// Frames received and durable.
        frames: u64,
        /// Frames fused into the live reconstruction; `null` until the capture session has
        /// reported.
        fused: Option<u64>,
        /// Estimated fraction of the wound region observed, 0..=1 (0 while the scan is not
        /// fused live); `null` until the capture session has reported.
        coverage: Option<f64>,
        /// Active capture warnings (`docs/protocol.md` §5.3: `too_far`, `moving_too_fast`,
        /// `wound_not_found`, `wound_off_centre`, `rim_not_seen`, …); unknown ones are ignored.
        warnings: Vec<String>,
    },
    /// The room ended; the socket closes.
    Ended {
        reason: String,
    },
    Error {
        code: String,
        message: String,
    },
    Pong,
}

/// Where a scan sending [`ServerSignal::ScanLive`] stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ScanLiveStatus {
    /// The phone is sending frames.
    Streaming,
    /// Every frame is in; the scan is being reconstructed and measured.
    Processing,
}

impl ScanLiveStatus {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "streaming" => Some(ScanLiveStatus::Streaming),
            "processing" => Some(ScanLiveStatus::Processing),
            _ => None,
        }
    }
}

/// Close codes of the signalling socket (4000–4999 are the application's).
pub mod close {
    /// The room ended.
    pub const ENDED: u16 = 4000;
    /// The host denied the caller.
    pub const DENIED: u16 = 4003;
    /// The host removed the caller.
    pub const REMOVED: u16 = 4004;
    /// Another connection of the same user took the seat.
    pub const SUPERSEDED: u16 = 4009;
    /// The caller left (`leave`).
    pub const LEFT: u16 = 1000;
    /// The room moved to another node (or this one is draining): reconnect.
    pub const MOVED: u16 = 1001;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_frames_are_tagged_json() {
        let m: ClientSignal = serde_json::from_str(r#"{"type":"offer","sdp":"v=0"}"#).unwrap();
        assert_eq!(m, ClientSignal::Offer { sdp: "v=0".into() });
        let m: ClientSignal = serde_json::from_str(r#"{"type":"leave"}"#).unwrap();
        assert_eq!(m, ClientSignal::Leave);
        assert!(serde_json::from_str::<ClientSignal>(r#"{"type":"chat","text":"hi","x":1}"#).is_err());
        let m: ClientSignal = serde_json::from_str(
            r#"{"type":"ice","candidate":{"candidate":"candidate:1 1 udp 1 127.0.0.1 5000 typ host","sdpMid":"0","sdpMLineIndex":0}}"#,
        )
        .unwrap();
        assert!(matches!(m, ClientSignal::Ice { candidate } if candidate.sdp_mline_index == Some(0)));
    }

    #[test]
    fn live_scan_figures_are_tagged_json_with_nulls_until_reported() {
        let id = Uuid::nil();
        let live = ServerSignal::ScanLive {
            scan_id: id,
            status: ScanLiveStatus::Streaming,
            frames: 12,
            fused: None,
            coverage: None,
            warnings: vec!["too_far".into()],
        };
        assert_eq!(
            serde_json::to_value(&live).unwrap(),
            serde_json::json!({"type": "scan_live", "scan_id": id, "status": "streaming", "frames": 12,
                "fused": null, "coverage": null, "warnings": ["too_far"]})
        );
        assert_eq!(ScanLiveStatus::parse("processing"), Some(ScanLiveStatus::Processing));
        assert_eq!(ScanLiveStatus::parse("complete"), None);
    }

    #[test]
    fn event_kinds_serialise_as_their_names() {
        for k in [EventKind::LeftBeforeJoined, EventKind::TrackPublished, EventKind::CheckedIn] {
            assert_eq!(serde_json::to_string(&k).unwrap(), format!("\"{}\"", k.as_str()));
        }
    }
}
