//! Every open socket of this node, by user and session, and the Redis bus that carries
//! revocations between nodes: when a session or user is revoked anywhere, each node closes
//! the matching sockets (close code 4002).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use coherency_protocol::ids::{SessionId, UserId};
use futures_util::StreamExt;
use tokio::sync::watch;

use crate::store::redis::Redis;

/// Close code sent when the session behind a socket ends.
pub const CLOSE_SESSION_ENDED: u16 = 4002;

/// What was revoked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Revocation {
    Session(SessionId),
    User(UserId),
}

impl Revocation {
    fn encode(self) -> String {
        match self {
            Revocation::Session(id) => format!("session:{id}"),
            Revocation::User(id) => format!("user:{id}"),
        }
    }
    fn decode(s: &str) -> Option<Self> {
        let (kind, id) = s.split_once(':')?;
        match kind {
            "session" => id.parse().ok().map(Revocation::Session),
            "user" => id.parse().ok().map(Revocation::User),
            _ => None,
        }
    }
}

struct Entry {
    user_id: UserId,
    session_id: SessionId,
    close: watch::Sender<Option<u16>>,
}

/// The sockets open on this node.
#[derive(Default)]
pub struct SocketRegistry {
    next: AtomicU64,
    entries: Mutex<HashMap<u64, Entry>>,
}

/// Deregisters its socket when dropped.
pub struct SocketGuard {
    id: u64,
    registry: Arc<SocketRegistry>,
    /// Resolves to a close code when the socket must close.
    pub closed: watch::Receiver<Option<u16>>,
}

impl Drop for SocketGuard {
    fn drop(&mut self) {
        if let Ok(mut e) = self.registry.entries.lock() {
            e.remove(&self.id);
        }
    }
}

impl SocketRegistry {
    /// Registers a socket owned by `user_id` through `session_id`.
    pub fn register(self: &Arc<Self>, user_id: UserId, session_id: SessionId) -> SocketGuard {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let (close, closed) = watch::channel(None);
        if let Ok(mut e) = self.entries.lock() {
            e.insert(id, Entry { user_id, session_id, close });
        }
        SocketGuard { id, registry: self.clone(), closed }
    }

    /// Signals every matching socket to close; returns how many.
    pub fn apply(&self, rev: Revocation) -> usize {
        let Ok(entries) = self.entries.lock() else { return 0 };
        let mut n = 0;
        for e in entries.values() {
            let hit = match rev {
                Revocation::Session(s) => e.session_id == s,
                Revocation::User(u) => e.user_id == u,
            };
            if hit {
                let _ = e.close.send(Some(CLOSE_SESSION_ENDED));
                n += 1;
            }
        }
        n
    }

    pub fn len(&self) -> usize {
        self.entries.lock().map(|e| e.len()).unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn channel(redis: &Redis) -> String {
    redis.key("bus:revocations")
}

/// Closes matching sockets here and publishes the revocation to every other node.
pub async fn announce(registry: &SocketRegistry, redis: &Redis, rev: Revocation) {
    registry.apply(rev);
    let mut c = redis.conn.clone();
    let res: Result<i64, _> = redis::cmd("PUBLISH").arg(channel(redis)).arg(rev.encode()).query_async(&mut c).await;
    if let Err(e) = res {
        // Requests are still refused (the database is the authority); only remote sockets
        // close later, at their periodic session re-check.
        tracing::warn!(error = %e, "could not publish a revocation");
    }
}

/// Listens on the revocation channel for as long as the node runs, reconnecting with
/// backoff.
pub async fn listen(registry: Arc<SocketRegistry>, redis: Redis) {
    let mut backoff = Duration::from_millis(200);
    loop {
        match subscribe_once(&registry, &redis).await {
            Ok(()) => backoff = Duration::from_millis(200),
            Err(e) => tracing::warn!(error = %e, "revocation bus disconnected"),
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}

async fn subscribe_once(registry: &SocketRegistry, redis: &Redis) -> Result<(), redis::RedisError> {
    let mut pubsub = redis.client.get_async_pubsub().await?;
    pubsub.subscribe(channel(redis)).await?;
    let mut stream = pubsub.on_message();
    while let Some(msg) = stream.next().await {
        let payload: String = msg.get_payload()?;
        if let Some(rev) = Revocation::decode(&payload) {
            registry.apply(rev);
        }
    }
    Ok(())
}
