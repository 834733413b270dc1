//! The one error catalogue: every failure a client can see has a [`Code`], which fixes its
//! HTTP status and the stable string that clients match on. Socket error frames carry the
//! same strings, so a client handles `rate_limited` the same way on every transport.

use serde::{Deserialize, Serialize};

/// A stable, documented error code. The string form (`as_str`) never changes once shipped;
/// new codes may be added.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Code {
    // --- generic request errors ---
    /// The body or query did not parse or failed validation.
    BadRequest,
    /// A JSON body was not valid JSON.
    MalformedJson,
    /// A JSON body named a field the endpoint does not accept.
    UnknownField,
    /// A field had a value outside its allowed range or format.
    InvalidField,
    /// The request body is larger than the route allows.
    PayloadTooLarge,
    /// The `Content-Type` is not one the route accepts.
    UnsupportedMediaType,
    /// No route matches the path.
    NotFound,
    /// The route exists but not with this method.
    MethodNotAllowed,
    /// The caller is not authenticated (no, bad or expired credentials).
    Unauthenticated,
    /// The caller is authenticated but lacks the permission.
    Forbidden,
    /// Multi-factor authentication must be enrolled or completed first (staff reaching a
    /// route that needs verified MFA).
    MfaRequired,
    /// Too many requests; see `Retry-After`.
    RateLimited,
    /// A conflicting state (generic).
    Conflict,
    /// `If-Match` did not match the current version.
    PreconditionFailed,
    /// A required `If-Match` header was missing.
    PreconditionRequired,
    /// The service is starting, draining or a dependency is down.
    Unavailable,
    /// Something failed on the server; the message never reveals internals.
    Internal,

    // --- identity ---
    EmailTaken,
    WeakPassword,
    InvalidCredentials,
    AccountLocked,
    AccountDisabled,
    TokenExpired,
    TokenRevoked,
    InvalidTotp,
    /// Login of an account with MFA enrolled, without `totp_code` or `recovery_code`: ask
    /// for the code and send the login again. (Distinct from `mfa_required`, a 403 on routes.)
    MfaCodeRequired,
    OriginNotAllowed,

    // --- scheduling ---
    SlotTaken,
    HoldExpired,
    TooManyHolds,

    // --- scan streaming ---
    UnsupportedVersion,
    FrameTooLarge,
    MalformedMessage,
    InvalidFrame,
    SequenceGap,
    Superseded,
    ScanNotStreamable,
    ConsentRequired,

    // --- consults ---
    /// Only admitted participants may send media or chat, or see the room.
    NotAdmitted,
    /// The consult has ended.
    ConsultEnded,
    /// A scan named a wound that is not one of its patient's (`wound_id`).
    WoundOfAnotherPatient,
    /// Check-in opens 15 minutes before the appointment starts.
    CheckInTooEarly,
    /// The room has reached its participant limit.
    RoomFull,
    /// The participant is neither waiting nor in the call (denied, removed, left, or invited
    /// and not yet arrived).
    ParticipantNotPresent,

    // --- capture links ---
    /// A capture code that is unknown or expired (the two answer alike).
    InvalidCaptureCode,
    /// A capture code that was already redeemed (the session it gave has been revoked).
    CaptureCodeUsed,

    // --- connections (answered by the transport before any route runs) ---
    /// The request head or body did not arrive within its time limit.
    RequestTimeout,
    /// The request line and headers together exceed the server's limit.
    HeadersTooLarge,
    /// This client address already holds as many connections as the server allows.
    TooManyConnections,
}

impl Code {
    /// The HTTP status this code is answered with.
    pub fn http_status(self) -> u16 {
        use Code::*;
        match self {
            BadRequest | MalformedJson | UnknownField | InvalidField | WeakPassword | MalformedMessage
            | InvalidFrame | SequenceGap => 400,
            Unauthenticated | InvalidCredentials | TokenExpired | TokenRevoked | InvalidTotp | MfaCodeRequired
            | InvalidCaptureCode => 401,
            Forbidden | MfaRequired | AccountDisabled | OriginNotAllowed | ConsentRequired | NotAdmitted => 403,
            NotFound => 404,
            MethodNotAllowed => 405,
            Conflict
            | EmailTaken
            | SlotTaken
            | HoldExpired
            | Superseded
            | ScanNotStreamable
            | ConsultEnded
            | CheckInTooEarly
            | RoomFull
            | ParticipantNotPresent
            | WoundOfAnotherPatient
            | CaptureCodeUsed => 409,
            PreconditionFailed => 412,
            PayloadTooLarge | FrameTooLarge => 413,
            UnsupportedMediaType => 415,
            UnsupportedVersion => 426,
            PreconditionRequired => 428,
            RateLimited | AccountLocked | TooManyHolds | TooManyConnections => 429,
            RequestTimeout => 408,
            HeadersTooLarge => 431,
            Unavailable => 503,
            Internal => 500,
        }
    }

    /// The stable string clients match on (the serde name).
    pub fn as_str(self) -> &'static str {
        use Code::*;
        match self {
            BadRequest => "bad_request",
            MalformedJson => "malformed_json",
            UnknownField => "unknown_field",
            InvalidField => "invalid_field",
            PayloadTooLarge => "payload_too_large",
            UnsupportedMediaType => "unsupported_media_type",
            NotFound => "not_found",
            MethodNotAllowed => "method_not_allowed",
            Unauthenticated => "unauthenticated",
            Forbidden => "forbidden",
            MfaRequired => "mfa_required",
            RateLimited => "rate_limited",
            Conflict => "conflict",
            PreconditionFailed => "precondition_failed",
            PreconditionRequired => "precondition_required",
            Unavailable => "unavailable",
            Internal => "internal",
            EmailTaken => "email_taken",
            WeakPassword => "weak_password",
            InvalidCredentials => "invalid_credentials",
            AccountLocked => "account_locked",
            AccountDisabled => "account_disabled",
            TokenExpired => "token_expired",
            TokenRevoked => "token_revoked",
            InvalidTotp => "invalid_totp",
            MfaCodeRequired => "mfa_code_required",
            OriginNotAllowed => "origin_not_allowed",
            SlotTaken => "slot_taken",
            HoldExpired => "hold_expired",
            TooManyHolds => "too_many_holds",
            UnsupportedVersion => "unsupported_version",
            FrameTooLarge => "frame_too_large",
            MalformedMessage => "malformed_message",
            InvalidFrame => "invalid_frame",
            SequenceGap => "sequence_gap",
            Superseded => "superseded",
            ScanNotStreamable => "scan_not_streamable",
            ConsentRequired => "consent_required",
            NotAdmitted => "not_admitted",
            ConsultEnded => "consult_ended",
            WoundOfAnotherPatient => "wound_of_another_patient",
            CheckInTooEarly => "check_in_too_early",
            RoomFull => "room_full",
            ParticipantNotPresent => "participant_not_present",
            InvalidCaptureCode => "invalid_capture_code",
            CaptureCodeUsed => "capture_code_used",
            RequestTimeout => "request_timeout",
            HeadersTooLarge => "headers_too_large",
            TooManyConnections => "too_many_connections",
        }
    }

    /// Every code, for documentation and tests.
    pub const ALL: &'static [Code] = &[
        Code::BadRequest,
        Code::MalformedJson,
        Code::UnknownField,
        Code::InvalidField,
        Code::PayloadTooLarge,
        Code::UnsupportedMediaType,
        Code::NotFound,
        Code::MethodNotAllowed,
        Code::Unauthenticated,
        Code::Forbidden,
        Code::MfaRequired,
        Code::RateLimited,
        Code::Conflict,
        Code::PreconditionFailed,
        Code::PreconditionRequired,
        Code::Unavailable,
        Code::Internal,
        Code::EmailTaken,
        Code::WeakPassword,
        Code::InvalidCredentials,
        Code::AccountLocked,
        Code::AccountDisabled,
        Code::TokenExpired,
        Code::TokenRevoked,
        Code::InvalidTotp,
        Code::MfaCodeRequired,
        Code::OriginNotAllowed,
        Code::SlotTaken,
        Code::HoldExpired,
        Code::TooManyHolds,
        Code::UnsupportedVersion,
        Code::FrameTooLarge,
        Code::MalformedMessage,
        Code::InvalidFrame,
        Code::SequenceGap,
        Code::Superseded,
        Code::ScanNotStreamable,
        Code::ConsentRequired,
        Code::NotAdmitted,
        Code::ConsultEnded,
        Code::WoundOfAnotherPatient,
        Code::CheckInTooEarly,
        Code::RoomFull,
        Code::ParticipantNotPresent,
        Code::InvalidCaptureCode,
        Code::CaptureCodeUsed,
        Code::RequestTimeout,
        Code::HeadersTooLarge,
        Code::TooManyConnections,
    ];
}

impl std::fmt::Display for Code {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Implemented by every crate's error enum so the server can answer any of them uniformly.
pub trait ErrorCode {
    /// The catalogue entry for this error.
    fn code(&self) -> Code;
}

/// The JSON error body: `{"error":{"code":…,"message":…,"request_id":…}}`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

/// The inside of [`ErrorBody`].
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ErrorDetail {
    pub code: String,
    pub message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    /// The field a validation error is about, when there is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_has_a_serde_name_equal_to_its_string() {
        for c in Code::ALL {
            let json = serde_json::to_string(c).unwrap();
            assert_eq!(json, format!("\"{}\"", c.as_str()));
        }
    }

    #[test]
    fn a_login_waiting_for_its_code_is_401_and_not_the_routes_mfa_403() {
        assert_eq!(Code::MfaCodeRequired.http_status(), 401);
        assert_eq!(Code::MfaRequired.http_status(), 403);
        assert_ne!(Code::MfaCodeRequired.as_str(), Code::MfaRequired.as_str());
    }

    #[test]
    fn statuses_are_client_or_server_errors() {
        for c in Code::ALL {
            let s = c.http_status();
            assert!((400..600).contains(&s), "{c} -> {s}");
        }
    }
}
