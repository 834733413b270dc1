//! Leases: `<prefix>lease:<kind>:<id>` holds the owning node's name and expires unless the
//! owner renews it. A node claims a lease before it starts a live entity, renews every lease
//! it holds every [`RENEW_EVERY`], and releases one as soon as the entity stops (or on
//! shutdown). A node that dies loses its leases after [`LEASE_TTL`]; another node then
//! claims them.
//!
//! **Renewal does not share a thread with anything else.** The renewer runs on a thread of
//! its own (`lease-renewer`), with its own single-threaded runtime, timer and Redis
//! connection: CPU-bound or blocking work on the node's other threads, a busy main runtime, or
//! a slow command on the shared Redis connection cannot delay it. Each pass renews every
//! held lease in one pipelined round trip bounded by [`RENEW_TIMEOUT`].
//!
//! **Every claim has a nonce** (`<lease>:claim`, kept [`CLAIM_KEPT`] past the lease), so a
//! renewal that arrives after the lease lapsed can tell "nobody has claimed it since" (the
//! nonce is still ours: the lease is simply taken back, nothing else ran the entity) from
//! "another node claimed it meanwhile" (the nonce changed or is gone). Outcomes of a renewal:
//!
//! - renewed, or lapsed and taken back: the entity keeps running (a late renewal is logged);
//! - another node holds it, or held it since: the lease is *lost* (the log names the holder);
//! - no answer from Redis before the lease's own expiry (its last renewal was sent more than
//!   [`LEASE_TTL`] ago): the lease has *expired* as far as this node can prove.
//!
//! Either way the lease is forgotten and its claim's stop hook runs: a scan's session hands
//! over (`super::scans`), a room retires when the lease was lost
//! (`crate::consults::ConsultRooms::room`).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use redis::aio::MultiplexedConnection;
use redis::AsyncConnectionConfig;

use crate::store::redis::Redis;

/// How long a lease lives without renewal.
pub const LEASE_TTL: Duration = Duration::from_secs(6);
/// How often the owner renews (three chances before expiry).
pub const RENEW_EVERY: Duration = Duration::from_secs(2);
/// Longest one renewal pass (one round trip for every held lease) may take; a pass that
/// takes longer is abandoned and the next one tries again. Two passes can fail and the
/// third still lands before the lease expires.
pub const RENEW_TIMEOUT: Duration = Duration::from_millis(1500);
/// How long a claim's nonce outlives its last renewal: a renewal later than this after the
/// lease lapsed cannot take it back.
pub const CLAIM_KEPT: Duration = Duration::from_secs(60);

/// Claims the lease (KEYS[1]) and its nonce (KEYS[2]) for node ARGV[1] unless another node
/// holds it; answers `{holder, nonce}` (the nonce is empty when another node holds it).
const CLAIM: &str = r"
local v = redis.call('GET', KEYS[1])
if v == false then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  redis.call('SET', KEYS[2], ARGV[3], 'PX', ARGV[4])
  return {ARGV[1], ARGV[3]}
end
if v == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  local n = redis.call('GET', KEYS[2])
  if n == false then n = ARGV[3] end
  redis.call('SET', KEYS[2], n, 'PX', ARGV[4])
  return {v, n}
end
return {v, ''}";

/// Extends the lease if node ARGV[1] holds it (`{1, node}`); takes it back if it lapsed and
/// nobody claimed it since (the nonce is still ARGV[3]: `{2, node}`); otherwise `{0, holder}`
/// (holder empty: nobody holds it now, but somebody claimed it after us).
const RENEW: &str = r"
local v = redis.call('GET', KEYS[1])
if v == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  redis.call('PEXPIRE', KEYS[2], ARGV[4])
  return {1, v}
end
if v == false then
  if redis.call('GET', KEYS[2]) == ARGV[3] then
    redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
    redis.call('PEXPIRE', KEYS[2], ARGV[4])
    return {2, ARGV[1]}
  end
  return {0, ''}
end
return {0, v}";

/// Deletes the lease and its nonce if ARGV[1] holds it.
const RELEASE: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('DEL', KEYS[2])
  return redis.call('DEL', KEYS[1])
end
return 0";

/// The outcome of a claim.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// This node holds the lease (newly or already).
    Ours,
    /// Another node holds it.
    Theirs(String),
}

/// Why a lease this node held ended without being released.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LeaseEnd {
    /// Another node holds it (`Some`), or claimed it while it had lapsed and let it go again
    /// (`None`).
    Lost { holder: Option<String> },
    /// Redis did not confirm a renewal before the lease's expiry: this node can no longer
    /// prove it holds the lease.
    Expired,
}

/// Whether the entity behind a held lease still runs on this node.
type Alive = Box<dyn Fn() -> bool + Send + Sync>;
/// Stops the entity behind a lease that ended (called on the renewer's thread: it must only
/// send a message, never block).
type Stop = Box<dyn Fn(&LeaseEnd) + Send + Sync>;

struct Held {
    alive: Alive,
    stop: Option<Stop>,
    /// This claim's nonce (`<lease>:claim`).
    nonce: String,
    /// Until when the lease is certainly ours: when the last confirmed claim or renewal was
    /// sent, plus [`LEASE_TTL`].
    valid_until: Instant,
}

/// What the renewer has seen since the node started (for operators and tests).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LeaseStats {
    /// Renewal passes that reached Redis.
    pub passes: u64,
    /// Renewal passes that failed or timed out.
    pub failed_passes: u64,
    /// Leases that had lapsed and were taken back (nobody had claimed them since).
    pub retaken: u64,
    /// Leases found held by another node (or claimed by one since they lapsed).
    pub lost: u64,
    /// Leases that expired because no renewal was confirmed in time.
    pub expired: u64,
    /// Longest time between two renewal passes that reached Redis, ms.
    pub max_gap_ms: u64,
}

#[derive(Default)]
struct Counters {
    passes: AtomicU64,
    failed_passes: AtomicU64,
    retaken: AtomicU64,
    lost: AtomicU64,
    expired: AtomicU64,
    max_gap_ms: AtomicU64,
}

/// This node's leases.
pub struct Leases {
    redis: Redis,
    node: String,
    held: Mutex<HashMap<String, Held>>,
    /// Claims and the renewer's releases of stopped entities take turns, so a release
    /// never deletes a lease claimed again between its liveness check and its `DEL`.
    gate: tokio::sync::Mutex<()>,
    counters: Counters,
}

impl Leases {
    pub fn new(redis: Redis, node: String) -> Self {
        Self {
            redis,
            node,
            held: Mutex::new(HashMap::new()),
            gate: tokio::sync::Mutex::new(()),
            counters: Counters::default(),
        }
    }

    /// Claims `name` for this node; while `alive()` answers true the renewer keeps it.
    pub async fn claim(
        &self,
        name: &str,
        alive: impl Fn() -> bool + Send + Sync + 'static,
    ) -> Result<Claim, redis::RedisError> {
        self.claim_inner(name, Box::new(alive), None).await
    }

    /// Like [`Self::claim`], and `stop` is called (once) if the lease ends while the entity
    /// runs: lost to another node or expired unrenewed ([`LeaseEnd`]).
    pub async fn claim_or_stop(
        &self,
        name: &str,
        alive: impl Fn() -> bool + Send + Sync + 'static,
        stop: impl Fn(&LeaseEnd) + Send + Sync + 'static,
    ) -> Result<Claim, redis::RedisError> {
        self.claim_inner(name, Box::new(alive), Some(Box::new(stop))).await
    }

    async fn claim_inner(&self, name: &str, alive: Alive, stop: Option<Stop>) -> Result<Claim, redis::RedisError> {
        let _turn = self.gate.lock().await;
        let sent = Instant::now();
        let nonce = format!("{:016x}", rand::random::<u64>());
        let mut c = self.redis.conn.clone();
        let (holder, nonce): (String, String) = self.script(CLAIM, name, &nonce).query_async(&mut c).await?;
        if holder == self.node {
            self.held().insert(name.to_string(), Held { alive, stop, nonce, valid_until: sent + LEASE_TTL });
            Ok(Claim::Ours)
        } else {
            Ok(Claim::Theirs(holder))
        }
    }

    /// The node holding `name`, if any.
    pub async fn owner(&self, name: &str) -> Result<Option<String>, redis::RedisError> {
        let mut c = self.redis.conn.clone();
        redis::cmd("GET").arg(self.redis.key(name)).query_async(&mut c).await
    }

    /// Gives `name` up (if this node holds it).
    pub async fn release(&self, name: &str) {
        self.held().remove(name);
        let mut c = self.redis.conn.clone();
        if let Err(e) = self.script(RELEASE, name, "").query_async::<i64>(&mut c).await {
            tracing::warn!(error = %e, lease = name, "lease not released; it expires by itself");
        }
    }

    /// Whether this node believes it holds `name`.
    pub fn holds(&self, name: &str) -> bool {
        self.held().contains_key(name)
    }

    /// Leases this node holds.
    pub fn len(&self) -> usize {
        self.held().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// What the renewer has seen so far.
    pub fn stats(&self) -> LeaseStats {
        let c = &self.counters;
        LeaseStats {
            passes: c.passes.load(Ordering::Relaxed),
            failed_passes: c.failed_passes.load(Ordering::Relaxed),
            retaken: c.retaken.load(Ordering::Relaxed),
            lost: c.lost.load(Ordering::Relaxed),
            expired: c.expired.load(Ordering::Relaxed),
            max_gap_ms: c.max_gap_ms.load(Ordering::Relaxed),
        }
    }

    /// Gives up every lease whose name starts with `prefix` (drain), so other nodes take
    /// over at once.
    pub async fn release_prefix(&self, prefix: &str) {
        let names: Vec<String> = self.held().keys().filter(|k| k.starts_with(prefix)).cloned().collect();
        for n in names {
            self.release(&n).await;
        }
    }

    /// One renewal pass over `conn`: leases whose entity stopped are released, the others
    /// renewed in one pipelined round trip bounded by [`RENEW_TIMEOUT`]. Answers whether
    /// Redis answered.
    async fn renew_once(&self, conn: &mut MultiplexedConnection) -> bool {
        let (gone, live): (Vec<String>, Vec<(String, String)>) = {
            let held = self.held();
            let (g, l): (Vec<_>, Vec<_>) = held.iter().partition(|(_, h)| !(h.alive)());
            (
                g.into_iter().map(|(k, _)| k.clone()).collect(),
                l.into_iter().map(|(k, h)| (k.clone(), h.nonce.clone())).collect(),
            )
        };
        for n in gone {
            let _turn = self.gate.lock().await;
            // Claimed again since the check above (a new session or room): keep it.
            let still_gone = self.held().get(&n).is_some_and(|h| !(h.alive)());
            if still_gone {
                self.held().remove(&n);
                let released =
                    tokio::time::timeout(RENEW_TIMEOUT, self.script(RELEASE, &n, "").query_async::<i64>(conn)).await;
                if !matches!(released, Ok(Ok(_))) {
                    tracing::warn!(lease = %n, "lease of a stopped entity not released; it expires by itself");
                }
            }
        }
        if live.is_empty() {
            return true;
        }
        let sent = Instant::now();
        let mut pipe = redis::pipe();
        for (name, nonce) in &live {
            pipe.add_command(self.script(RENEW, name, nonce));
        }
        let answer = tokio::time::timeout(RENEW_TIMEOUT, pipe.query_async::<Vec<(i64, String)>>(conn)).await;
        let answers = match answer {
            Ok(Ok(a)) if a.len() == live.len() => a,
            failed => {
                let why = match failed {
                    Ok(Err(e)) => e.to_string(),
                    Ok(Ok(_)) => "a short reply".into(),
                    Err(_) => format!("no answer within {} ms", RENEW_TIMEOUT.as_millis()),
                };
                self.expire_overdue(&live, &why);
                return false;
            }
        };
        for ((name, nonce), (code, holder)) in live.iter().zip(answers) {
            match code {
                1 => self.confirm(name, nonce, sent),
                2 => {
                    self.counters.retaken.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(
                        lease = %name,
                        "lease lapsed before its renewal reached Redis and was taken back (no other node had claimed it)"
                    );
                    self.confirm(name, nonce, sent);
                }
                _ => {
                    let holder = (!holder.is_empty()).then_some(holder);
                    match &holder {
                        Some(h) => tracing::warn!(lease = %name, holder = %h, "lease lost to another node"),
                        None => tracing::warn!(lease = %name, "lease lapsed and another node claimed it meanwhile"),
                    }
                    self.counters.lost.fetch_add(1, Ordering::Relaxed);
                    self.end(name, nonce, &LeaseEnd::Lost { holder });
                }
            }
        }
        true
    }

    /// Records a confirmed renewal of the claim `nonce` of `name`, sent at `sent`.
    fn confirm(&self, name: &str, nonce: &str, sent: Instant) {
        if let Some(h) = self.held().get_mut(name).filter(|h| h.nonce == nonce) {
            h.valid_until = h.valid_until.max(sent + LEASE_TTL);
        }
    }

    /// After a failed pass: leases whose last confirmed renewal is older than the TTL have
    /// expired as far as this node can tell, and their entities stop here.
    fn expire_overdue(&self, live: &[(String, String)], why: &str) {
        let now = Instant::now();
        let overdue: Vec<&(String, String)> = {
            let held = self.held();
            live.iter()
                .filter(|(n, nonce)| held.get(n).is_some_and(|h| h.nonce == *nonce && h.valid_until <= now))
                .collect()
        };
        if overdue.is_empty() {
            tracing::warn!(error = why, leases = live.len(), "leases not renewed this pass; the next pass tries again");
            return;
        }
        for (name, nonce) in overdue {
            tracing::error!(
                lease = %name,
                error = why,
                "lease expired before a renewal could be confirmed"
            );
            self.counters.expired.fetch_add(1, Ordering::Relaxed);
            self.end(name, nonce, &LeaseEnd::Expired);
        }
    }

    /// Forgets the claim `nonce` of `name` (unless claimed again since) and stops its entity.
    fn end(&self, name: &str, nonce: &str, why: &LeaseEnd) {
        let ended = {
            let mut held = self.held();
            match held.get(name) {
                Some(h) if h.nonce == nonce => held.remove(name),
                _ => None,
            }
        };
        if let Some(Held { stop: Some(stop), .. }) = ended {
            stop(why);
        }
    }

    /// Renews for as long as the node runs, on a thread of its own (see the module docs).
    pub fn spawn_renewer(self: &Arc<Self>) {
        let me = Arc::downgrade(self);
        let client = self.redis.client.clone();
        let spawned = std::thread::Builder::new().name("lease-renewer".into()).spawn(move || {
            let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                Ok(rt) => rt,
                Err(e) => {
                    tracing::error!(error = %e, "lease renewer could not start its runtime; leases will lapse");
                    return;
                }
            };
            rt.block_on(renew_forever(me, client));
        });
        if let Err(e) = spawned {
            tracing::error!(error = %e, "lease renewer thread could not start; leases will lapse");
        }
    }

    fn held(&self) -> std::sync::MutexGuard<'_, HashMap<String, Held>> {
        self.held.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// `script` for lease `name`: KEYS = the lease and its nonce; ARGV = node, TTL (ms),
    /// nonce, nonce TTL (ms).
    fn script(&self, script: &str, name: &str, nonce: &str) -> redis::Cmd {
        let key = self.redis.key(name);
        let mut cmd = redis::cmd("EVAL");
        cmd.arg(script)
            .arg(2)
            .arg(&key)
            .arg(format!("{key}:claim"))
            .arg(&self.node)
            .arg(LEASE_TTL.as_millis() as u64)
            .arg(nonce)
            .arg((LEASE_TTL + CLAIM_KEPT).as_millis() as u64);
        cmd
    }
}

/// The renewer's loop: a pass every [`RENEW_EVERY`] over its own connection (reopened after
/// a failure), until the node's [`Leases`] are gone.
async fn renew_forever(me: Weak<Leases>, client: redis::Client) {
    let config = AsyncConnectionConfig::new().set_connection_timeout(RENEW_TIMEOUT).set_response_timeout(RENEW_TIMEOUT);
    let mut conn: Option<MultiplexedConnection> = None;
    let mut tick = tokio::time::interval(RENEW_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_ok: Option<Instant> = None;
    loop {
        tick.tick().await;
        let Some(leases) = me.upgrade() else { return };
        if conn.is_none() {
            conn = client.get_multiplexed_async_connection_with_config(&config).await.ok();
        }
        let answered = match conn.as_mut() {
            Some(c) => leases.renew_once(c).await,
            None => {
                let live: Vec<(String, String)> =
                    leases.held().iter().map(|(k, h)| (k.clone(), h.nonce.clone())).collect();
                leases.expire_overdue(&live, "redis unreachable");
                false
            }
        };
        let c = &leases.counters;
        if answered {
            c.passes.fetch_add(1, Ordering::Relaxed);
            let now = Instant::now();
            if let Some(t) = last_ok.replace(now) {
                c.max_gap_ms.fetch_max(u64::try_from((now - t).as_millis()).unwrap_or(u64::MAX), Ordering::Relaxed);
            }
        } else {
            c.failed_passes.fetch_add(1, Ordering::Relaxed);
            conn = None;
        }
    }
}
