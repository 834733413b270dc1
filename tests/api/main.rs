//! Integration tests: one binary, each test against its own isolated app.
#![allow(clippy::unwrap_used)] // tests fail loudly by design

#[allow(dead_code)] // each test uses part of the helper set
mod helpers;

mod audit;
mod auth;
mod booking;
mod browser;
mod cluster_consult;
mod cluster_scan;
mod config_cli;
mod consults;
mod dashboard;
mod dashboard_browser;
mod demo;
mod errors;
mod fhir;
mod health;
mod loadtest;
mod logs;
mod measurements;
mod metrics;
mod patients;
mod rbac;
mod scan_datachannel;
mod scan_stream;
mod scans;
mod sfu;
mod shutdown;
mod starvation;
