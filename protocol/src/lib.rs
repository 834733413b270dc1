//! Wire types shared by the Coherency server and its clients: the error catalogue, typed
//! ids, limits and the socket message sets (MessagePack via rmp-serde). With the `client`
//! feature, a Rust scan stream client with resume built in, used by tests and `loadtest`.
//!
//! This crate depends on no other crate of the workspace.

pub mod consult;
pub mod dashboard;
pub mod datachannel;
pub mod error;
pub mod ids;
pub mod limits;
pub mod scan;
pub mod text;

#[cfg(feature = "client")]
pub mod client;
#[cfg(feature = "rtc")]
pub mod client_rtc;
#[cfg(feature = "rtc-loopback")]
pub mod rtc_loopback;

pub use error::{Code, ErrorBody, ErrorCode};
