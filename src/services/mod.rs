//! Domain services: one narrow service per resource, each holding only what it needs (a
//! pool, the clock, the audit log, …) and returning its own `thiserror` error that implements
//! the catalogue's `ErrorCode` and [`crate::error::DomainError`]. HTTP handlers, sockets and
//! the CLI call them; services never import HTTP (`crate::http`) or the application state.
//! `docs/architecture.md` § Services and errors.

pub mod access;
pub mod capture;
pub mod consults;
pub mod healing;
pub mod identity;
pub mod photos;
pub mod scans;
pub mod wound_report;
pub mod wounds;

use crate::audit::AuditEvent;
use identity::Principal;

/// Who asks, and from where: the principal, and the request facts the audit trail records
/// with each decision a service takes on their behalf (HTTP requests and socket handshakes
/// build it the same way, `crate::auth::caller_of`).
#[derive(Debug, Clone)]
pub struct Caller {
    pub who: Principal,
    pub ip: Option<String>,
    pub request_id: Option<String>,
}

impl Caller {
    /// `ev` attributed to this caller.
    pub fn attribute(&self, mut ev: AuditEvent) -> AuditEvent {
        ev.ip = self.ip.clone();
        ev.request_id = self.request_id.clone();
        ev.actor_id = Some(self.who.user_id.as_uuid());
        ev.actor_role = Some(self.who.role.as_str().into());
        ev
    }
}
