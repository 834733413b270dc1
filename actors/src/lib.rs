//! Actors for the live entities of a Coherency node, with their messages and the small
//! traits they need from storage. So far: scan capture ([`capture`]).
//!
//! Actors never import the server crate: storage comes in through the traits in [`store`]
//! (implemented by the server in `src/store`, and in memory by [`testing`]), metrics go out
//! through [`metrics::SessionMetrics`].

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
