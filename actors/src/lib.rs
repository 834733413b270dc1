//! Actors for the live entities of a Coherency node, with their messages and the small
//! traits they need from storage and the network. Each actor owns its entity's live state;
//! the server's sockets and handlers only send it messages, and it answers through outboxes,
//! never by touching a socket.
//!
//! - [`capture`]: scan capture, the node's [`CaptureRegistry`] and one [`CaptureSession`] per
//!   streaming scan (frame validation, durable writes before acks, backpressure, resume).
//! - [`reconstruction`]: a scan's volume, fused from its frames as they arrive and handed on
//!   for meshing and measurement at finish.
//! - [`stats`]: the per-frame capture statistics the session reports.
//! - [`room`]: one [`Room`] per live consult (participants, admission, ordered events, chat,
//!   signalling outboxes) with its selective forwarding unit ([`room::sfu`]), and the waiting
//!   room of each clinician ([`room::waiting`]).
//! - [`calendar`]: one `Calendar` actor per clinician booked on this node, owning its view of
//!   the calendar; the booking domain's types, `BookingError` and `BookingEvent`.
//! - [`dashboard`]: the node's [`DashboardHub`], the live board fanned out to dashboard sockets
//!   by viewer scope.
//! - [`store`]: the storage traits (implemented by the server in `src/store`, and in memory
//!   with fault injection by [`testing`]); [`retry`]: bounded backoff for their calls;
//!   [`metrics`]: the hooks through which sessions report to the server's Prometheus.
//!
//! Actors never import the server crate; they depend only on `coherency-protocol` and
//! `coherency-recon`.

pub mod capture;
pub mod metrics;
pub mod reconstruction;
pub mod retry;
pub mod stats;
pub mod store;
pub mod testing;

pub use capture::{attach, CaptureConfig, CaptureDeps, CaptureError, CaptureRegistry, CaptureSession};

pub mod calendar;
pub use calendar::{BookingError, Calendar, Calendars};

pub mod dashboard;
pub use dashboard::DashboardHub;
pub mod room;
pub use room::{Room, RoomConfig, RoomDeps, RoomError, RoomStore, Rooms};
