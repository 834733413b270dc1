//! Leases: `<prefix>lease:<kind>:<id>` holds the owning node's name and expires unless the
//! owner renews it. A node claims a lease before it starts a live entity, renews every lease
//! it holds every [`RENEW_EVERY`], and releases one as soon as the entity stops (or on
//! shutdown). A node that dies loses its leases after [`LEASE_TTL`]; another node then
//! claims them.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::store::redis::Redis;

/// How long a lease lives without renewal.
pub const LEASE_TTL: Duration = Duration::from_secs(6);
/// How often the owner renews (three chances before expiry).
pub const RENEW_EVERY: Duration = Duration::from_secs(2);

/// Claims the key for ARGV[1] unless another node holds it; answers the holder.
const CLAIM: &str = r"
local v = redis.call('GET', KEYS[1])
if v == false then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return ARGV[1]
end
if v == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return v";

/// Extends the lease if ARGV[1] still holds it; 1 if so.
const RENEW: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0";

/// Deletes the lease if ARGV[1] holds it.
const RELEASE: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
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

/// Whether the entity behind a held lease still runs on this node.
type Alive = Box<dyn Fn() -> bool + Send + Sync>;

/// This node's leases.
pub struct Leases {
    redis: Redis,
    node: String,
    held: Mutex<HashMap<String, Alive>>,
    /// Claims and the renewer's releases of stopped entities take turns, so a release
    /// never deletes a lease claimed again between its liveness check and its `DEL`.
    gate: tokio::sync::Mutex<()>,
}

impl Leases {
    pub fn new(redis: Redis, node: String) -> Self {
        Self { redis, node, held: Mutex::new(HashMap::new()), gate: tokio::sync::Mutex::new(()) }
    }

    /// Claims `name` for this node; while `alive()` answers true the renewer keeps it.
    pub async fn claim(
        &self,
        name: &str,
        alive: impl Fn() -> bool + Send + Sync + 'static,
    ) -> Result<Claim, redis::RedisError> {
        let _turn = self.gate.lock().await;
        let holder: String = self.eval(CLAIM, name).await?;
        if holder == self.node {
            self.held().insert(name.to_string(), Box::new(alive));
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
        if let Err(e) = self.eval::<i64>(RELEASE, name).await {
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

    /// Gives up every lease whose name starts with `prefix` (drain), so other nodes take
    /// over at once.
    pub async fn release_prefix(&self, prefix: &str) {
        let names: Vec<String> = self.held().keys().filter(|k| k.starts_with(prefix)).cloned().collect();
        for n in names {
            self.release(&n).await;
        }
    }

    /// One renewal pass: leases whose entity stopped are released, the others extended. A
    /// lease found taken by another node (this node stalled past the TTL) is dropped.
    pub async fn renew_once(&self) {
        let (gone, live): (Vec<String>, Vec<String>) = {
            let held = self.held();
            let (g, l): (Vec<_>, Vec<_>) = held.iter().partition(|(_, alive)| !alive());
            (g.into_iter().map(|(k, _)| k.clone()).collect(), l.into_iter().map(|(k, _)| k.clone()).collect())
        };
        for n in gone {
            let _turn = self.gate.lock().await;
            // Claimed again since the check above (a new session or room): keep it.
            let still_gone = self.held().get(&n).is_some_and(|alive| !alive());
            if still_gone {
                self.release(&n).await;
            }
        }
        for n in live {
            match self.eval::<i64>(RENEW, &n).await {
                Ok(1) => {}
                Ok(_) => {
                    tracing::warn!(lease = %n, "lease lost to another node");
                    self.held().remove(&n);
                }
                Err(e) => tracing::warn!(error = %e, lease = %n, "lease not renewed"),
            }
        }
    }

    /// Renews for as long as the node runs.
    pub fn spawn_renewer(self: &Arc<Self>) {
        let me = Arc::downgrade(self);
        actix_web::rt::spawn(async move {
            let mut tick = tokio::time::interval(RENEW_EVERY);
            loop {
                tick.tick().await;
                let Some(l) = me.upgrade() else { return };
                l.renew_once().await;
            }
        });
    }

    fn held(&self) -> std::sync::MutexGuard<'_, HashMap<String, Alive>> {
        self.held.lock().unwrap_or_else(|p| p.into_inner())
    }

    async fn eval<T: redis::FromRedisValue>(&self, script: &str, name: &str) -> Result<T, redis::RedisError> {
        let mut c = self.redis.conn.clone();
        redis::cmd("EVAL")
            .arg(script)
            .arg(1)
            .arg(self.redis.key(name))
            .arg(&self.node)
            .arg(LEASE_TTL.as_millis() as u64)
            .query_async(&mut c)
            .await
    }
}
