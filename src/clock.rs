//! The application's clock. Session expiry, lockout windows and audit timestamps read time
//! from here, so tests can move time forward instead of sleeping.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};

/// Wall-clock time plus an offset that only tests change.
#[derive(Clone, Default)]
pub struct Clock {
    offset_ms: Arc<AtomicI64>,
}

impl Clock {
    /// Now, truncated to microseconds (what PostgreSQL stores).
    pub fn now(&self) -> DateTime<Utc> {
        let t = Utc::now() + Duration::milliseconds(self.offset_ms.load(Ordering::SeqCst));
        DateTime::from_timestamp_micros(t.timestamp_micros()).unwrap_or(t)
    }

    /// Moves this clock (and every clone of it) forward.
    pub fn advance(&self, by: std::time::Duration) {
        self.offset_ms.fetch_add(by.as_millis() as i64, Ordering::SeqCst);
    }
}
