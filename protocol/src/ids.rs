//! Typed identifiers. Every entity id is a UUID wrapped in its own type so a `PatientId`
//! can never be passed where a `ScanId` is expected. On every wire (JSON, MessagePack
//! strings, URLs) an id is the canonical lowercase hyphenated UUID string; serde is
//! transparent over [`uuid::Uuid`].

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// The error returned when a string is not a valid id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{input}` is not a valid {kind} (expected a UUID)")]
pub struct ParseIdError {
    /// The id type that was being parsed, e.g. `ScanId`.
    pub kind: &'static str,
    /// The rejected input, truncated to 64 characters.
    pub input: String,
}

macro_rules! typed_id {
    ($(#[$meta:meta])* $name:ident) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(Uuid);

        impl $name {
            /// A fresh, time-ordered (UUID v7) id.
            pub fn new() -> Self {
                Self(Uuid::now_v7())
            }

            /// Wraps an existing UUID.
            pub const fn from_uuid(uuid: Uuid) -> Self {
                Self(uuid)
            }

            /// The UUID inside.
            pub const fn as_uuid(&self) -> Uuid {
                self.0
            }

            /// The nil id, for tests and placeholders only.
            pub const fn nil() -> Self {
                Self(Uuid::nil())
            }
        }

        impl Default for $name {
            fn default() -> Self {
                Self::new()
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Display::fmt(&self.0.hyphenated(), f)
            }
        }

        impl FromStr for $name {
            type Err = ParseIdError;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Uuid::parse_str(s).map(Self).map_err(|_| ParseIdError {
                    kind: stringify!($name),
                    input: s.chars().take(64).collect(),
                })
            }
        }

        impl From<Uuid> for $name {
            fn from(uuid: Uuid) -> Self {
                Self(uuid)
            }
        }

        impl From<$name> for Uuid {
            fn from(id: $name) -> Self {
                id.0
            }
        }
    };
}

typed_id!(
    /// A user account (patient, clinician or admin login).
    UserId
);
typed_id!(
    /// A patient record.
    PatientId
);
typed_id!(
    /// A clinician profile.
    ClinicianId
);
typed_id!(
    /// A wound scan (one capture session and its reconstruction).
    ScanId
);
typed_id!(
    /// A consult room.
    RoomId
);
typed_id!(
    /// A video consult.
    ConsultId
);
typed_id!(
    /// A booked appointment.
    AppointmentId
);
typed_id!(
    /// A clinic (a group of clinicians sharing a waiting room).
    ClinicId
);
typed_id!(
    /// A login session.
    SessionId
);
typed_id!(
    /// A waiting room.
    WaitingRoomId
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_id_displays_and_parses_as_a_lowercase_uuid() {
        let id = ScanId::new();
        let s = id.to_string();
        assert_eq!(s, s.to_lowercase());
        assert_eq!(s.len(), 36);
        assert_eq!(s.parse::<ScanId>().unwrap(), id);
    }

    #[test]
    fn a_bad_id_names_its_type() {
        let err = "not-a-uuid".parse::<PatientId>().unwrap_err();
        assert_eq!(err.kind, "PatientId");
        assert!(err.to_string().contains("PatientId"));
    }

    #[test]
    fn ids_are_json_strings() {
        let id = RoomId::from_uuid(Uuid::nil());
        assert_eq!(serde_json::to_string(&id).unwrap(), "\"00000000-0000-0000-0000-000000000000\"");
        let back: RoomId = serde_json::from_str("\"00000000-0000-0000-0000-000000000000\"").unwrap();
        assert_eq!(back, id);
    }
}
