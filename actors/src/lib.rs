//! Actors for the live entities of a Coherency node, with their messages and the small
//! traits they need from storage: scan capture ([`capture`]), reconstruction
//! ([`reconstruction`]), consult rooms ([`room`]), the dashboard hub ([`dashboard`]) and
//! booking locks ([`booking`]).
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

pub mod booking;
pub use booking::{BookingLock, BookingLocks};

pub mod dashboard;
pub use dashboard::DashboardHub;
pub mod room;
pub use room::{Room, RoomConfig, RoomDeps, RoomError, RoomStore, Rooms};
