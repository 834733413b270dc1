//! Users as the people they meet see them: the display name a consult shows beside each
//! participant (the host's queue, the room's roster, the patient's view of their clinician).

use std::collections::HashMap;

use sqlx::PgPool;
use uuid::Uuid;

/// The display names of `ids` (unknown ids are left out).
pub async fn display_names(pg: &PgPool, ids: &[Uuid]) -> Result<HashMap<Uuid, String>, sqlx::Error> {
    let rows = sqlx::query!("SELECT id, display_name FROM users WHERE id = ANY($1)", ids).fetch_all(pg).await?;
    Ok(rows.into_iter().map(|r| (r.id, r.display_name)).collect())
}
