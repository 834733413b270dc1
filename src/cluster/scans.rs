//! Capture sessions across nodes: what one node asks of the node that holds a scan's
//! lease.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::state::AppState;

/// A request about a scan to the node holding its lease.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum ScanRequest {
    /// The phone reconnected elsewhere: stop the scan's session here and give up the lease.
    Release { scan_id: Uuid },
}

/// Answers a [`ScanRequest`] on the lease holder.
pub async fn serve(state: &AppState, req: ScanRequest) -> serde_json::Value {
    match req {
        ScanRequest::Release { scan_id } => {
            let released = !state.leases.holds(&super::scan_key(scan_id));
            serde_json::json!({ "released": released })
        }
    }
}
