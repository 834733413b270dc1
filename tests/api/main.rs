//! Integration tests: one binary, each test against its own isolated app.
#![allow(clippy::unwrap_used)] // tests fail loudly by design

#[allow(dead_code)] // each test uses part of the helper set
mod helpers;

/// The server's allocator, so the in-process apps measure each request's allocations as
/// the `coherency` binary does (`coherency::alloc`).
#[global_allocator]
static ALLOC: coherency::alloc::CountingAlloc = coherency::alloc::CountingAlloc;

mod architecture;
mod audit;
mod auth;
mod bad_input;
mod booking;
mod bounded_work;
mod browser;
mod capture_link;
mod cluster_consult;
mod cluster_scan;
mod colour;
mod config_cli;
mod consults;
mod contract;
mod dashboard;
mod dashboard_browser;
mod demo;
mod errors;
mod fhir;
mod health;
mod idor;
mod loadtest;
mod logs;
mod measurements;
mod metrics;
mod pages;
mod patients;
mod photos;
mod rbac;
mod scan_datachannel;
mod scan_stream;
mod scans;
mod sfu;
mod shutdown;
mod starvation;
mod tissue_views;
mod transport;
mod wound_report;
mod wounds;
