//! Redis: one multiplexed, auto-reconnecting connection per node, and every key under the
//! deployment's prefix so several deployments (or test apps) can share one server.

use redis::aio::{ConnectionManager, ConnectionManagerConfig};

use super::{Unreachable, CONNECT_TIMEOUT};
use crate::config::Config;

/// The connection plus the key prefix.
#[derive(Clone)]
pub struct Redis {
    pub conn: ConnectionManager,
    pub client: redis::Client,
    prefix: String,
}

impl Redis {
    pub async fn connect(config: &Config) -> Result<Self, Unreachable> {
        let unreachable = |reason: String| Unreachable { service: "redis", url: config.redis_url.masked(), reason };
        let client = redis::Client::open(config.redis_url.expose()).map_err(|e| unreachable(e.to_string()))?;
        let cfg = ConnectionManagerConfig::new()
            .set_connection_timeout(CONNECT_TIMEOUT)
            .set_response_timeout(CONNECT_TIMEOUT)
            .set_number_of_retries(2);
        let conn = tokio::time::timeout(CONNECT_TIMEOUT * 2, ConnectionManager::new_with_config(client.clone(), cfg))
            .await
            .map_err(|_| unreachable("timed out".into()))?
            .map_err(|e| unreachable(e.to_string()))?;
        let r = Self { conn, client, prefix: config.redis_prefix.clone() };
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
