//! The patient-name and wound-label caches of this node's dashboard boards
//! (`crate::ws::dashboard` adds each viewer's patient names, and the wound a scan belongs to,
//! to the items the hub sends). They sit with the stores, not the socket, because the node's
//! state owns them and the state is built from the layers below it.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use coherency_protocol::dashboard::WoundLabel;
use uuid::Uuid;

/// Values looked up once per key however many boards need them at the same moment (one
/// query, the others wait for it) and kept for [`TTL`] so a change shows soon after.
struct Cells<V> {
    cells: std::sync::Mutex<HashMap<Uuid, (Instant, Cell<V>)>>,
}

/// One key's value, looked up at most once.
type Cell<V> = Arc<tokio::sync::OnceCell<Option<V>>>;

/// How long a looked-up value is kept.
pub const TTL: Duration = Duration::from_secs(60);

impl<V> Default for Cells<V> {
    fn default() -> Self {
        Self { cells: Default::default() }
    }
}

impl<V: Clone> Cells<V> {
    async fn get<F, Fut>(&self, key: Uuid, lookup: F) -> Option<V>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Option<V>, sqlx::Error>>,
    {
        let cell = {
            let mut cells = self.cells.lock().unwrap_or_else(|p| p.into_inner());
            if cells.len() >= PatientNames::MAX {
                cells.retain(|_, (at, _)| at.elapsed() < TTL);
                if cells.len() >= PatientNames::MAX {
                    cells.clear();
                }
            }
            let entry = cells.entry(key).or_insert_with(|| (Instant::now(), Default::default()));
            if entry.0.elapsed() >= TTL {
                *entry = (Instant::now(), Default::default());
            }
            entry.1.clone()
        };
        // A failed lookup is not kept: the next board asks again.
        cell.get_or_try_init(lookup).await.ok().cloned().flatten()
    }
}

/// Patient names for the boards of this node.
#[derive(Default)]
pub struct PatientNames {
    names: Cells<String>,
    wounds: Cells<WoundLabel>,
}

impl PatientNames {
    pub const TTL: Duration = TTL;
    /// Most names (and, apart, wound labels) kept; past this, expired ones are dropped (and
    /// all, if none had expired).
    pub const MAX: usize = 20_000;

    pub async fn get(&self, pg: &sqlx::PgPool, patient: Uuid) -> Option<String> {
        self.names
            .get(patient, || async {
                sqlx::query!("SELECT given_name, family_name FROM patients WHERE id = $1", patient)
                    .fetch_optional(pg)
                    .await
                    .map(|r| r.map(|r| format!("{} {}", r.given_name, r.family_name)))
            })
            .await
    }

    /// The wound scan `scan` belongs to, named by its site (none: no such scan).
    pub async fn wound_of_scan(&self, pg: &sqlx::PgPool, scan: Uuid) -> Option<WoundLabel> {
        self.wounds
            .get(scan, || async {
                sqlx::query!(
                    "SELECT w.id, w.site_display, w.laterality, w.aetiology
                       FROM scans s JOIN wounds w ON w.id = s.wound_id WHERE s.id = $1",
                    scan
                )
                .fetch_optional(pg)
                .await
                .map(|r| {
                    r.map(|r| WoundLabel {
                        id: r.id,
                        site: r.site_display,
                        laterality: r.laterality,
                        aetiology: r.aetiology,
                    })
                })
            })
            .await
    }
}
