//! When this process last accepted a scan frame: finish-time work that can wait (fusing,
//! meshing and measuring a finished scan) waits until phones have stopped streaming here,
//! so it does not compete with the ack path of the scans still streaming.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// Milliseconds since [`epoch`] of the last accepted frame, plus one (0: none yet).
static LAST_FRAME_MS: AtomicU64 = AtomicU64::new(0);

fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

fn now_ms() -> u64 {
    u64::try_from(epoch().elapsed().as_millis()).unwrap_or(u64::MAX - 1) + 1
}

/// Records that a frame was accepted now (one relaxed store).
pub fn frame_accepted() {
    LAST_FRAME_MS.store(now_ms(), Ordering::Relaxed);
}

/// How long ago this process last accepted a frame (`None`: never).
pub fn since_last_frame() -> Option<Duration> {
    match LAST_FRAME_MS.load(Ordering::Relaxed) {
        0 => None,
        t => Some(Duration::from_millis(now_ms().saturating_sub(t))),
    }
}

/// Waits until no frame has been accepted for `quiet`, or `max` has passed; returns how
/// long it waited. Checks every `quiet / 2` (at least 10 ms).
pub async fn wait_for_quiet(quiet: Duration, max: Duration) -> Duration {
    let start = Instant::now();
    let step = (quiet / 2).max(Duration::from_millis(10));
    loop {
        let waited = start.elapsed();
        let busy = since_last_frame().is_some_and(|d| d < quiet);
        if !busy || waited >= max {
            return waited;
        }
        tokio::time::sleep(step.min(max - waited)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn waits_while_frames_arrive_and_no_longer_than_the_bound() {
        // Quiet already: no wait.
        assert!(wait_for_quiet(Duration::from_millis(50), Duration::from_secs(5)).await < Duration::from_millis(50));
        // Frames keep arriving for 300 ms: the wait lasts until 100 ms after the last.
        let feeder = tokio::spawn(async {
            for _ in 0..15 {
                frame_accepted();
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        });
        tokio::time::sleep(Duration::from_millis(5)).await;
        let waited = wait_for_quiet(Duration::from_millis(100), Duration::from_secs(5)).await;
        feeder.await.unwrap();
        assert!(waited >= Duration::from_millis(300), "{waited:?}");
        assert!(waited < Duration::from_secs(2), "{waited:?}");
        // Frames that never stop: the bound ends the wait.
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let s2 = stop.clone();
        let feeder = tokio::spawn(async move {
            while !s2.load(Ordering::Relaxed) {
                frame_accepted();
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        });
        tokio::time::sleep(Duration::from_millis(5)).await;
        let waited = wait_for_quiet(Duration::from_millis(100), Duration::from_millis(400)).await;
        stop.store(true, Ordering::Relaxed);
        feeder.await.unwrap();
        assert!(waited >= Duration::from_millis(400) && waited < Duration::from_millis(1500), "{waited:?}");
    }
}
