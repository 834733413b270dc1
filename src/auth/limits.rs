//! Sliding-window counters in Redis (sorted sets scored by the app clock), so limits hold
//! across nodes and tests can move time instead of sleeping.

use chrono::{DateTime, Utc};
use redis::AsyncCommands;

use crate::store::redis::Redis;

/// A named limit: at most `max` events per `window_secs`.
#[derive(Debug, Clone, Copy)]
pub struct Limit {
    pub name: &'static str,
    pub max: u32,
    pub window_secs: i64,
}

/// Failed logins per account.
pub const LOGIN_FAILURES_PER_ACCOUNT: Limit = Limit { name: "login-fail", max: 5, window_secs: 15 * 60 };
/// Login attempts per IP (the default of `login_per_address_per_min`).
pub const LOGIN_PER_IP: Limit =
    Limit { name: "login-ip", max: crate::config::DEFAULT_LOGIN_PER_ADDRESS_PER_MIN, window_secs: 60 };
/// `email_taken` answers per IP (enumeration through registration).
pub const EMAIL_TAKEN_PER_IP: Limit = Limit { name: "email-taken-ip", max: 5, window_secs: 15 * 60 };
/// Registrations per IP (the default of `register_per_address_per_min`).
pub const REGISTER_PER_IP: Limit =
    Limit { name: "register-ip", max: crate::config::DEFAULT_REGISTER_PER_ADDRESS_PER_MIN, window_secs: 60 };

/// Capture-code redemptions per IP, successful or not (the default of
/// `capture_redeem_per_address_per_min`).
pub const CAPTURE_REDEEM_PER_IP: Limit = Limit {
    name: "capture-redeem-ip",
    max: crate::config::DEFAULT_CAPTURE_REDEEM_PER_ADDRESS_PER_MIN,
    window_secs: 60,
};

/// A per-minute limit with the configured maximum.
pub fn per_minute(base: Limit, max: u32) -> Limit {
    Limit { max, ..base }
}
/// Wrong TOTP codes per account.
pub const TOTP_FAILURES: Limit = Limit { name: "totp-fail", max: 5, window_secs: 15 * 60 };

fn key(redis: &Redis, limit: &Limit, subject: &str) -> String {
    redis.key(&format!("rl:{}:{}", limit.name, subject))
}

/// If the limit is reached, the seconds until one slot frees.
pub async fn blocked(
    redis: &Redis,
    limit: &Limit,
    subject: &str,
    now: DateTime<Utc>,
) -> Result<Option<u64>, redis::RedisError> {
    let k = key(redis, limit, subject);
    let now_ms = now.timestamp_millis();
    let floor = now_ms - limit.window_secs * 1000;
    let mut c = redis.conn.clone();
    let (_, entries): ((), Vec<(String, i64)>) =
        redis::pipe().zrembyscore(&k, "-inf", floor).zrange_withscores(&k, 0, -1).query_async(&mut c).await?;
    if entries.len() as u32 >= limit.max {
        let oldest = entries.first().map(|e| e.1).unwrap_or(now_ms);
        let retry_ms = (oldest + limit.window_secs * 1000 - now_ms).max(1000);
        return Ok(Some(((retry_ms + 999) / 1000) as u64));
    }
    Ok(None)
}

/// Records one event.
pub async fn hit(redis: &Redis, limit: &Limit, subject: &str, now: DateTime<Utc>) -> Result<(), redis::RedisError> {
    let k = key(redis, limit, subject);
    let mut c = redis.conn.clone();
    let member = format!("{}-{}", now.timestamp_millis(), uuid::Uuid::new_v4().simple());
    let _: () = redis::pipe()
        .zadd(&k, member, now.timestamp_millis())
        .expire(&k, limit.window_secs * 2 + 60)
        .query_async(&mut c)
        .await?;
    Ok(())
}

/// Checks, then records; returns the retry delay when over the limit.
pub async fn check_and_hit(
    redis: &Redis,
    limit: &Limit,
    subject: &str,
    now: DateTime<Utc>,
) -> Result<Option<u64>, redis::RedisError> {
    if let Some(wait) = blocked(redis, limit, subject, now).await? {
        return Ok(Some(wait));
    }
    hit(redis, limit, subject, now).await?;
    Ok(None)
}

/// Forgets the events (a successful login clears its failures).
pub async fn clear(redis: &Redis, limit: &Limit, subject: &str) -> Result<(), redis::RedisError> {
    let mut c = redis.conn.clone();
    c.del(key(redis, limit, subject)).await
}
