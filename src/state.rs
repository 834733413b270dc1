//! What every handler can reach: config, the domain services (`crate::services`), backing
//! stores, this node's actors, metrics, lifecycle. Lower layers (services, stores, actors)
//! never take the whole state: each gets the parts it needs when it is built.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use tokio::sync::watch;

use crate::clock::Clock;
use crate::config::Config;
use crate::consults::ConsultRooms;
use crate::crypto::FieldKey;
use crate::metrics::Metrics;
use crate::services::access::Access;
use crate::services::consults::Consults;
use crate::services::identity::sockets::SocketRegistry;
use crate::services::identity::Identity;
use crate::services::scans::Scans;
use crate::store::Stores;

/// Shared application state (cheap to clone: everything inside is shared).
pub struct AppState {
    pub config: Arc<Config>,
    pub stores: Stores,
    pub metrics: Arc<Metrics>,
    pub lifecycle: Lifecycle,
    pub node: String,
    pub clock: Clock,
    /// Accounts, passwords, sessions, tickets, revocation.
    pub identity: Arc<Identity>,
    /// The caller's right to a patient's records.
    pub access: Access,
    /// Which consults a caller may see, and check-in.
    pub consults: Consults,
    /// Which scans a caller may see, create, list and stream.
    pub scans: Scans,
    /// Capture links: single-use codes that open a scan on the patient's phone.
    pub capture_links: crate::services::capture::CaptureLinks,
    /// Encrypts the most sensitive fields at rest.
    pub field_key: FieldKey,
    /// Sockets open on this node, for revocation (the same registry [`Identity`] closes).
    pub sockets: Arc<SocketRegistry>,
    /// This node's scan capture sessions (`crate::ws::scan`).
    pub capture: actix::Addr<coherency_actors::CaptureRegistry>,
    /// This node's calendar actors, one per clinician booked here (`crate::booking`).
    pub calendars: Arc<coherency_actors::Calendars>,
    /// This node's dashboard hub (`crate::dashboard`, `crate::ws::dashboard`).
    pub dashboard: actix::Addr<coherency_actors::DashboardHub>,
    /// Patient names for this node's boards (read by `crate::ws::dashboard`).
    pub patient_names: Arc<crate::store::patient_names::PatientNames>,
    /// This node's consults and their rooms (`crate::consults`).
    pub consult_rooms: ConsultRooms,
    /// This node's audit writer (group commit; `crate::audit`).
    pub audit: crate::audit::AuditLog,
    /// This node in the deployment: its bus, leases, rooms, capture sessions and relayed
    /// sockets (`crate::cluster`).
    pub cluster: Arc<crate::cluster::Node>,
    /// Wound photos from scans' colour frames: chosen once per scan, served without metadata.
    pub photos: crate::services::photos::Photos,
    /// Typesets reports (the wound report's PDF), a bounded number at once.
    pub reports: crate::services::wound_report::Reports,
}

/// Draining and shutdown signals.
#[derive(Clone)]
pub struct Lifecycle {
    draining: Arc<AtomicBool>,
    shutdown: watch::Sender<bool>,
}

impl Default for Lifecycle {
    fn default() -> Self {
        Self { draining: Arc::new(AtomicBool::new(false)), shutdown: watch::channel(false).0 }
    }
}

impl Lifecycle {
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::SeqCst)
    }
    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::SeqCst);
    }
    /// Tells every socket to close with 1001 (going away).
    pub fn close_sockets(&self) {
        let _ = self.shutdown.send(true);
    }
    /// Resolves when sockets must close.
    pub fn subscribe(&self) -> watch::Receiver<bool> {
        self.shutdown.subscribe()
    }
}
