//! Why a booking operation was refused, in the error catalogue's terms. The messages are the
//! ones clients see; a store failure carries the code and message its adapter chose (the
//! cause is logged there, never sent).

use coherency_protocol::{Code, ErrorCode};

use super::{MAX_ACTIVE_HOLDS, MAX_FUTURE_DAYS, MAX_PAST_DAYS};

/// A refused booking operation.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BookingError {
    /// A live row blocks (part of) the time.
    #[error("that time is no longer available")]
    SlotTaken,
    /// The hold lapsed before it was confirmed or moved.
    #[error("the hold expired; choose the slot again")]
    HoldExpired,
    /// The appointment's status does not allow the change.
    #[error("the appointment is {0}")]
    NotLive(String),
    /// A no-show before the start.
    #[error("the appointment has not started yet")]
    NotStarted,
    #[error("at most {MAX_ACTIVE_HOLDS} active holds per patient; confirm or release one")]
    TooManyHolds,
    /// The `Idempotency-Key` already made a different appointment.
    #[error("Idempotency-Key was used for a different request")]
    KeyReused,
    /// No such appointment.
    #[error("not found")]
    NotFound,
    /// The clinician has no schedule.
    #[error("no schedule for that clinician")]
    NoSchedule,
    /// The type is not an active type of that clinician.
    #[error("no such appointment type for that clinician")]
    NoType,
    /// The start is not one of the type's slots.
    #[error("start is not an available slot of this appointment type (hours, notice, horizon)")]
    NotASlot,
    /// An instant or day outside the calendar's range.
    #[error("must lie within {MAX_PAST_DAYS} days before and {MAX_FUTURE_DAYS} days after now")]
    OutOfCalendar {
        /// The input that names it.
        field: String,
    },
    /// The calendar actor stopped (the node is shutting down); try again.
    #[error("booking is restarting; try again")]
    Stopped,
    /// The store failed; `code` and `message` are what the client may see.
    #[error("{message}")]
    Store { code: Code, message: String },
}

impl BookingError {
    /// The input the error is about, where there is one.
    pub fn field(&self) -> Option<&str> {
        match self {
            BookingError::NotASlot => Some("start"),
            BookingError::NoSchedule => Some("clinician"),
            BookingError::NoType => Some("type"),
            BookingError::OutOfCalendar { field } => Some(field),
            _ => None,
        }
    }

    /// A store failure that has no better name.
    pub fn internal() -> Self {
        BookingError::Store { code: Code::Internal, message: "internal error".into() }
    }
}

impl ErrorCode for BookingError {
    fn code(&self) -> Code {
        match self {
            BookingError::SlotTaken => Code::SlotTaken,
            BookingError::HoldExpired => Code::HoldExpired,
            BookingError::NotLive(_) | BookingError::NotStarted | BookingError::KeyReused => Code::Conflict,
            BookingError::TooManyHolds => Code::TooManyHolds,
            BookingError::NotFound | BookingError::NoSchedule | BookingError::NoType => Code::NotFound,
            BookingError::NotASlot | BookingError::OutOfCalendar { .. } => Code::InvalidField,
            BookingError::Stopped => Code::Unavailable,
            BookingError::Store { code, .. } => *code,
        }
    }
}
