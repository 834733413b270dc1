//! Redis: one multiplexed, auto-reconnecting connection per node, and every key under the
//! deployment's prefix so several deployments (or test apps) can share one server.
//!
//! The connection's commands all run on the store I/O runtime ([`super::io_runtime`]): its
//! driver, and the driver of every reconnection, live there, so a Redis call never waits
//! for the runtime thread that happened to open (or reopen) the connection.

use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::{Cmd, Pipeline, RedisFuture, Value};

use super::{on_io, Unreachable, CONNECT_TIMEOUT};
use crate::config::Config;

/// The connection plus the key prefix.
#[derive(Clone)]
pub struct Redis {
    pub conn: IoConnection,
    pub client: redis::Client,
    prefix: String,
}

/// The node's shared connection; each command is sent from the store I/O runtime.
#[derive(Clone)]
pub struct IoConnection(ConnectionManager);

impl ConnectionLike for IoConnection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        let (mut conn, cmd) = (self.0.clone(), cmd.clone());
        Box::pin(on_io(async move { conn.req_packed_command(&cmd).await }))
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        cmd: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        let (mut conn, cmd) = (self.0.clone(), cmd.clone());
        Box::pin(on_io(async move { conn.req_packed_commands(&cmd, offset, count).await }))
    }

    fn get_db(&self) -> i64 {
        self.0.get_db()
    }
}

impl Redis {
    pub async fn connect(config: &Config) -> Result<Self, Unreachable> {
        let unreachable = |reason: String| Unreachable { service: "redis", url: config.redis_url.masked(), reason };
        let client = redis::Client::open(config.redis_url.expose()).map_err(|e| unreachable(e.to_string()))?;
        let cfg = ConnectionManagerConfig::new()
            .set_connection_timeout(CONNECT_TIMEOUT)
            .set_response_timeout(CONNECT_TIMEOUT)
            .set_number_of_retries(2);
        let connect = ConnectionManager::new_with_config(client.clone(), cfg);
        let conn = on_io(async move { tokio::time::timeout(CONNECT_TIMEOUT * 2, connect).await })
            .await
            .map_err(|_| unreachable("timed out".into()))?
            .map_err(|e| unreachable(e.to_string()))?;
        let r = Self { conn: IoConnection(conn), client, prefix: config.redis_prefix.clone() };
        r.ping().await.map_err(|e| unreachable(e.to_string()))?;
        Ok(r)
    }

    /// The full key for `name` under this deployment's prefix.
    pub fn key(&self, name: &str) -> String {
        format!("{}{}", self.prefix, name)
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    pub async fn ping(&self) -> Result<(), redis::RedisError> {
        let mut c = self.conn.clone();
        let pong: String = redis::cmd("PING").query_async(&mut c).await?;
        if pong == "PONG" {
            Ok(())
        } else {
            Err(redis::RedisError::from((redis::ErrorKind::ResponseError, "unexpected PING reply")))
        }
    }
}
