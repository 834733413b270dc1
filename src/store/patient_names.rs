//! The patient-name cache of this node's dashboard boards (`crate::ws::dashboard` adds each
//! viewer's patient names to the items the hub sends). It sits with the stores, not the
//! socket, because the node's state owns it and the state is built from the layers below it.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use uuid::Uuid;

/// Patient names for the boards of this node, looked up once per patient however many
/// boards need them at the same moment (one query, the others wait for it) and kept for
/// [`PatientNames::TTL`] so a renamed patient is shown by the new name soon after.
#[derive(Default)]
pub struct PatientNames {
    cells: std::sync::Mutex<HashMap<Uuid, (Instant, NameCell)>>,
}

/// One patient's name, looked up at most once.
type NameCell = Arc<tokio::sync::OnceCell<Option<String>>>;

impl PatientNames {
    pub const TTL: Duration = Duration::from_secs(60);
    /// Most names kept; past this, expired ones are dropped (and all, if none had expired).
    pub const MAX: usize = 20_000;

    pub async fn get(&self, pg: &sqlx::PgPool, patient: Uuid) -> Option<String> {
        let cell = {
            let mut cells = self.cells.lock().unwrap_or_else(|p| p.into_inner());
            if cells.len() >= Self::MAX {
                cells.retain(|_, (at, _)| at.elapsed() < Self::TTL);
                if cells.len() >= Self::MAX {
                    cells.clear();
                }
            }
            let entry = cells.entry(patient).or_insert_with(|| (Instant::now(), Default::default()));
            if entry.0.elapsed() >= Self::TTL {
                *entry = (Instant::now(), Default::default());
            }
            entry.1.clone()
        };
        let looked_up = cell
            .get_or_try_init(|| async {
                sqlx::query!("SELECT given_name, family_name FROM patients WHERE id = $1", patient)
                    .fetch_optional(pg)
                    .await
                    .map(|r| r.map(|r| format!("{} {}", r.given_name, r.family_name)))
            })
            .await;
        // A failed lookup is not kept: the next board asks again.
        looked_up.ok().cloned().flatten()
    }
}
