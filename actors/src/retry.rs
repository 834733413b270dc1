//! Bounded, jittered exponential backoff for store calls, and isolation of each call so a
//! panicking store implementation is a failed attempt, not a dead writer.

use std::collections::hash_map::RandomState;
use std::future::Future;
use std::hash::{BuildHasher, Hasher};
use std::time::Duration;

use tokio::time::Instant;

use crate::store::StoreError;

/// How a writer retries transient failures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Delay before the first retry.
    pub initial: Duration,
    /// Longest delay between attempts.
    pub max_delay: Duration,
    /// Stop retrying once this much time has passed since the first attempt (`None`: retry
    /// while the owner lives).
    pub give_up_after: Option<Duration>,
}

impl RetryPolicy {
    /// The delay before retry number `attempt` (1-based): `initial · 2^(attempt-1)`, capped
    /// at `max_delay`, then drawn uniformly from its upper half so that many writers
    /// recovering together do not retry in lockstep.
    pub fn delay(&self, attempt: u32) -> Duration {
        let exp = self.initial.saturating_mul(1u32 << attempt.saturating_sub(1).min(20));
        let capped = exp.min(self.max_delay);
        let half = capped / 2;
        let spread = u64::try_from(half.as_nanos()).unwrap_or(u64::MAX).max(1);
        half + Duration::from_nanos(random_u64() % spread)
    }
}

fn random_u64() -> u64 {
    // A fresh SipHash key per call is random enough for jitter and needs no extra crate.
    RandomState::new().build_hasher().finish()
}

/// Runs `op` until it succeeds, fails permanently, or the policy gives up; `on_retry` sees
/// every transient failure that is followed by another attempt.
pub async fn with_retry<T, F, Fut>(
    policy: &RetryPolicy,
    mut op: F,
    mut on_retry: impl FnMut(&StoreError, u32),
) -> Result<T, StoreError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, StoreError>>,
{
    let start = Instant::now();
    let mut attempt = 0u32;
    loop {
        match op().await {
            Ok(v) => return Ok(v),
            Err(e) if e.is_transient() => {
                attempt = attempt.saturating_add(1);
                let delay = policy.delay(attempt);
                if policy.give_up_after.is_some_and(|max| start.elapsed() + delay > max) {
                    return Err(e);
                }
                on_retry(&e, attempt);
                tokio::time::sleep(delay).await;
            }
            Err(e) => return Err(e),
        }
    }
}

/// Runs one store call on its own task, so that a panic inside the store implementation
/// becomes a transient error (and a retry) instead of killing the writer that called it.
pub async fn isolated<T, Fut>(fut: Fut) -> Result<T, StoreError>
where
    T: Send + 'static,
    Fut: Future<Output = Result<T, StoreError>> + Send + 'static,
{
    match tokio::spawn(fut).await {
        Ok(res) => res,
        Err(e) if e.is_panic() => Err(StoreError::Transient("store call panicked".into())),
        Err(_) => Err(StoreError::Transient("store call cancelled".into())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_and_stay_within_the_cap() {
        let p = RetryPolicy {
            initial: Duration::from_millis(10),
            max_delay: Duration::from_millis(300),
            give_up_after: None,
        };
        for attempt in 1..40 {
            let d = p.delay(attempt);
            assert!(d <= Duration::from_millis(300), "{attempt}: {d:?}");
            let nominal = Duration::from_millis(10).saturating_mul(1 << (attempt - 1).min(20)).min(p.max_delay);
            assert!(d >= nominal / 2, "{attempt}: {d:?}");
        }
    }

    #[tokio::test]
    async fn gives_up_after_the_budget_and_keeps_permanent_errors_permanent() {
        let p = RetryPolicy {
            initial: Duration::from_millis(1),
            max_delay: Duration::from_millis(4),
            give_up_after: Some(Duration::from_millis(30)),
        };
        let mut tries = 0;
        let r: Result<(), _> = with_retry(
            &p,
            || {
                tries += 1;
                async { Err(StoreError::Transient("down".into())) }
            },
            |_, _| {},
        )
        .await;
        assert!(matches!(r, Err(StoreError::Transient(_))));
        assert!(tries > 2);

        let mut tries = 0;
        let r: Result<(), _> = with_retry(
            &p,
            || {
                tries += 1;
                async { Err(StoreError::Permanent("no".into())) }
            },
            |_, _| {},
        )
        .await;
        assert!(matches!(r, Err(StoreError::Permanent(_))));
        assert_eq!(tries, 1);
    }

    #[tokio::test]
    async fn a_panicking_call_is_a_transient_error() {
        let r: Result<(), _> = isolated(async { panic!("boom") }).await;
        assert!(matches!(r, Err(StoreError::Transient(_))));
    }
}
