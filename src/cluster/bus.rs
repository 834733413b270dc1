//! The node bus: every node listens on `<prefix>node.<name>`. A message is one JSON
//! envelope: a request (answered by a reply to the sender's channel), a reply, or a push
//! (no answer). One node's messages to another arrive in the order they were published,
//! because each is published from the task that produced it, one after the other, and one
//! subscription delivers them in order; pushes are handled in that order.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;

use super::Node;
use crate::store::redis::Redis;

/// How long a request waits for its reply (an owner that does not answer is gone).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(3);

#[derive(Debug, Serialize, Deserialize)]
struct Envelope {
    from: String,
    body: Body,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "t", rename_all = "snake_case")]
enum Body {
    Request { id: u64, req: Request },
    Reply { id: u64, value: serde_json::Value },
    Push { push: Push },
}

/// A question to another node.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "to", rename_all = "snake_case")]
pub enum Request {
    Room(Box<super::rooms::RoomRequest>),
    Scan(super::scans::ScanRequest),
}

/// A one-way message to another node.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "to", rename_all = "snake_case")]
pub enum Push {
    Room(super::rooms::RoomPush),
}

/// Why a request got no answer.
#[derive(Debug, thiserror::Error)]
pub enum BusError {
    #[error("node {0} did not answer")]
    Timeout(String),
    #[error("bus unavailable: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("unreadable reply: {0}")]
    Decode(#[from] serde_json::Error),
}

/// This node's end of the bus.
pub struct Bus {
    redis: Redis,
    node: String,
    next: AtomicU64,
    pending: Mutex<HashMap<u64, oneshot::Sender<serde_json::Value>>>,
}

impl Bus {
    pub fn new(redis: Redis, node: String) -> Self {
        Self { redis, node, next: AtomicU64::new(1), pending: Mutex::new(HashMap::new()) }
    }

    fn channel(&self, node: &str) -> String {
        self.redis.key(&format!("node.{node}"))
    }

    async fn publish(&self, node: &str, body: Body) -> Result<(), BusError> {
        let text = serde_json::to_string(&Envelope { from: self.node.clone(), body })?;
        let mut c = self.redis.conn.clone();
        let _: i64 = redis::cmd("PUBLISH").arg(self.channel(node)).arg(text).query_async(&mut c).await?;
        Ok(())
    }

    /// Asks `node` and waits for its answer, decoded as `T`.
    pub async fn request<T: serde::de::DeserializeOwned>(&self, node: &str, req: Request) -> Result<T, BusError> {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        self.pending().insert(id, tx);
        let sent = self.publish(node, Body::Request { id, req }).await;
        let answer = match sent {
            Ok(()) => tokio::time::timeout(REQUEST_TIMEOUT, rx).await,
            Err(e) => {
                self.pending().remove(&id);
                return Err(e);
            }
        };
        self.pending().remove(&id);
        match answer {
            Ok(Ok(v)) => Ok(serde_json::from_value(v)?),
            _ => Err(BusError::Timeout(node.to_string())),
        }
    }

    /// Sends `push` to `node` without waiting for anything.
    pub async fn push(&self, node: &str, push: Push) -> Result<(), BusError> {
        self.publish(node, Body::Push { push }).await
    }

    /// Whether `node` listens on the bus (a node that died does not).
    pub async fn listening(&self, node: &str) -> bool {
        let mut c = self.redis.conn.clone();
        let r: Result<(String, i64), _> =
            redis::cmd("PUBSUB").arg("NUMSUB").arg(self.channel(node)).query_async(&mut c).await;
        // Unknown (Redis trouble) counts as listening: only a clear "nobody" drops anything.
        r.map(|(_, n)| n > 0).unwrap_or(true)
    }

    fn pending(&self) -> std::sync::MutexGuard<'_, HashMap<u64, oneshot::Sender<serde_json::Value>>> {
        self.pending.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Listens on this node's channel for as long as the node runs, reconnecting with backoff.
/// `ready` fires once the first subscription is in place.
pub async fn listen(here: Arc<Node>, ready: oneshot::Sender<()>) {
    let mut ready = Some(ready);
    let mut backoff = Duration::from_millis(200);
    loop {
        match listen_once(&here, &mut ready).await {
            Ok(()) => backoff = Duration::from_millis(200),
            Err(e) => tracing::warn!(error = %e, "node bus disconnected"),
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}

async fn listen_once(here: &Arc<Node>, ready: &mut Option<oneshot::Sender<()>>) -> Result<(), redis::RedisError> {
    let bus = &here.bus;
    let mut pubsub = bus.redis.client.get_async_pubsub().await?;
    pubsub.subscribe(bus.channel(&bus.node)).await?;
    if let Some(r) = ready.take() {
        let _ = r.send(());
    }
    let mut stream = pubsub.on_message();
    while let Some(msg) = stream.next().await {
        let payload: String = msg.get_payload()?;
        let env: Envelope = match serde_json::from_str(&payload) {
            Ok(e) => e,
            Err(e) => {
                tracing::warn!(error = %e, "unreadable node bus message");
                continue;
            }
        };
        match env.body {
            Body::Reply { id, value } => {
                if let Some(tx) = bus.pending().remove(&id) {
                    let _ = tx.send(value);
                }
            }
            Body::Push { push } => match push {
                Push::Room(p) => super::rooms::on_push(here, &env.from, p),
            },
            Body::Request { id, req } => {
                let here = here.clone();
                actix_web::rt::spawn(async move {
                    let value = match req {
                        Request::Room(r) => super::rooms::serve(&here, &env.from, *r).await,
                        Request::Scan(r) => super::scans::serve(&here, r).await,
                    };
                    if let Err(e) = here.bus.publish(&env.from, Body::Reply { id, value }).await {
                        tracing::warn!(error = %e, "node bus reply lost");
                    }
                });
            }
        }
    }
    Ok(())
}

/// Broadcasts committed booking events to every node on `<prefix>booking.events` (each
/// node's dashboard listener hands them to its calendars and its dashboard hub). Best
/// effort: the outbox is the durable record.
pub struct BookingBus {
    redis: Redis,
}

impl BookingBus {
    /// The channel's name under the deployment's prefix.
    pub const CHANNEL: &'static str = "booking.events";

    pub fn new(redis: Redis) -> Self {
        Self { redis }
    }
}

impl coherency_actors::calendar::EventBus for BookingBus {
    fn publish(&self, events: Vec<coherency_actors::calendar::BookingEvent>) {
        if events.is_empty() {
            return;
        }
        let mut conn = self.redis.conn.clone();
        let channel = self.redis.key(Self::CHANNEL);
        // In order, from one task: a later change never overtakes an earlier one.
        tokio::spawn(async move {
            for ev in events {
                let msg = match serde_json::to_string(&ev) {
                    Ok(m) => m,
                    Err(e) => {
                        tracing::warn!(error = %e, "booking event does not encode");
                        continue;
                    }
                };
                let r: Result<i64, _> = redis::cmd("PUBLISH").arg(&channel).arg(msg).query_async(&mut conn).await;
                if let Err(e) = r {
                    tracing::warn!(error = %e, "booking event publish failed");
                    return;
                }
            }
        });
    }
}
