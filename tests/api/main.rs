//! Integration tests: one binary, each test against its own isolated app.

#[allow(dead_code)] // each test uses part of the helper set
mod helpers;

mod config_cli;
mod errors;
mod health;
mod metrics;
