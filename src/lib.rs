//! Coherency: a real-time telehealth and LiDAR wound-scan streaming server.
//!
//! `main.rs` is a thin CLI; everything it runs lives here: configuration, application
//! wiring, HTTP resources, socket pumps and the storage layer.

pub mod alloc;
pub mod audit;
pub mod auth;
pub mod booking;
pub mod cli;
pub mod clock;
pub mod cluster;
pub mod config;
pub mod consults;
pub mod crypto;
pub mod dashboard;
pub mod demo;
pub mod error;
pub mod http;
pub mod input;
pub mod metrics;
/// The OpenAPI document describes the HTTP routes, so `http` owns it; this keeps its path.
pub use http::openapi;
pub mod services;
pub mod startup;
pub mod state;
pub mod store;
pub mod telemetry;
pub mod transport;
pub mod ws;

pub use config::Config;
pub use startup::Application;
