//! Per-caller request rate limit for every HTTP route (sockets included: the upgrade request
//! counts; messages on an open socket have their own limits).
//!
//! A caller is its bearer token when it sends one, otherwise its client address, so one busy
//! clinic behind a NAT is not throttled as a whole once its users sign in, and an anonymous
//! flood from one address is. Each caller has a token bucket: `api_rate_per_sec` sustained,
//! `api_rate_burst` at once. Buckets live in this node's memory (a few dozen bytes each, idle
//! ones dropped), so behind a load balancer the effective limit is per node; the stricter,
//! shared limits on login and registration are in Redis (`docs/security.md`). Probes and
//! metrics are never limited, so an orchestrator can always see the node.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hash};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::middleware::Next;
use actix_web::web;
use coherency_protocol::Code;

use crate::error::ApiError;
use crate::state::AppState;

const SHARDS: usize = 16;
/// A shard prunes idle buckets when it grows past this many callers.
const PRUNE_AT: usize = 4096;
/// Paths that are never limited.
pub(crate) const EXEMPT: [&str; 3] = ["/livez", "/readyz", "/metrics"];

#[derive(Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

/// Token buckets keyed by caller.
pub struct RateLimiter {
    per_sec: f64,
    burst: f64,
    hasher: std::collections::hash_map::RandomState,
    shards: Vec<Mutex<HashMap<u64, Bucket>>>,
}

impl RateLimiter {
    pub fn new(per_sec: u32, burst: u32) -> Self {
        Self {
            per_sec: f64::from(per_sec),
            burst: f64::from(burst.max(1)),
            hasher: Default::default(),
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
        }
    }

    /// Takes one token for `caller` at `now`; `Err(wait)` when the bucket is empty.
    pub fn take(&self, caller: impl Hash, now: Instant) -> Result<(), Duration> {
        let key = self.hasher.hash_one(caller);
        let mut shard = self.shards[(key as usize) % SHARDS].lock().unwrap_or_else(|p| p.into_inner());
        if shard.len() >= PRUNE_AT {
            let full = Duration::from_secs_f64(self.burst / self.per_sec.max(f64::MIN_POSITIVE));
            shard.retain(|_, b| now.saturating_duration_since(b.at) < full);
        }
        let b = shard.entry(key).or_insert(Bucket { tokens: self.burst, at: now });
        let elapsed = now.saturating_duration_since(b.at).as_secs_f64();
        b.tokens = (b.tokens + elapsed * self.per_sec).min(self.burst);
        b.at = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            Ok(())
        } else if self.per_sec > 0.0 {
            Err(Duration::from_secs_f64((1.0 - b.tokens) / self.per_sec))
        } else {
            Err(Duration::from_secs(60))
        }
    }
}

/// Who a bucket belongs to: a bearer token, or the client address of an anonymous call.
#[derive(Hash)]
enum Caller<'a> {
    Token(&'a str),
    Address(String),
}

/// Middleware: answers `429 rate_limited` with `Retry-After` when the caller's bucket is empty.
pub async fn limit(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<EitherBody<impl MessageBody>>, actix_web::Error> {
    if !EXEMPT.contains(&req.path()) {
        if let (Some(limiter), Some(state)) =
            (req.app_data::<web::Data<RateLimiter>>(), req.app_data::<web::Data<AppState>>())
        {
            let caller = match req.headers().get("authorization").and_then(|v| v.to_str().ok()) {
                Some(auth) => Caller::Token(auth),
                None => Caller::Address(crate::auth::client_ip(req.request(), state).unwrap_or_default()),
            };
            if let Err(wait) = limiter.take(caller, Instant::now()) {
                let secs = wait.as_secs_f64().ceil().max(1.0) as u64;
                // An answer, not an error, so the envelope middleware outside adds the request id.
                let err = ApiError::new(Code::RateLimited, "too many requests; slow down").with_retry_after(secs);
                return Ok(req.error_response(err).map_into_right_body());
            }
        }
    }
    next.call(req).await.map(ServiceResponse::map_into_left_body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_is_allowed_then_the_sustained_rate() {
        let l = RateLimiter::new(10, 5);
        let t0 = Instant::now();
        for _ in 0..5 {
            assert!(l.take("a", t0).is_ok());
        }
        let wait = l.take("a", t0).unwrap_err();
        assert!(wait <= Duration::from_millis(100), "{wait:?}");
        assert!(l.take("b", t0).is_ok(), "callers do not share a bucket");
        assert!(l.take("a", t0 + Duration::from_millis(100)).is_ok(), "a token refills in 1/rate");
        assert!(l.take("a", t0 + Duration::from_millis(100)).is_err());
    }

    #[test]
    fn idle_callers_are_pruned_so_memory_stays_bounded() {
        let l = RateLimiter::new(100, 10);
        let t0 = Instant::now();
        for i in 0..(PRUNE_AT * SHARDS * 2) {
            let _ = l.take(format!("caller-{i}"), t0 + Duration::from_millis(i as u64));
        }
        let total: usize = l.shards.iter().map(|s| s.lock().unwrap().len()).sum();
        assert!(total <= PRUNE_AT * SHARDS, "{total}");
    }
}
