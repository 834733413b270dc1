use std::time::Duration;

use serde_json::Value;

use crate::helpers::{host_port, spawn_app, spawn_app_with, TcpProxy};
use figment::providers::Serialized;

#[actix_web::test]
async fn livez_and_readyz_are_ok_with_every_service_up() {
    let app = spawn_app().await;
    assert_eq!(app.get("/livez").await.status(), 200);
    let res = app.get("/readyz").await;
    assert_eq!(res.status(), 200);
    assert!(res.headers().contains_key("x-request-id"));
}

/// Starts an app whose `key` service goes through a proxy, cuts the proxy, and returns the
/// readiness error message.
async fn readyz_after_cutting(key: &'static str) -> (u16, Value) {
    let base = crate::helpers::base_config();
    let upstream = match key {
        "mongo_url" => host_port(&base.mongo_url),
        "redis_url" => host_port(&base.redis_url),
        _ => host_port(&base.database_url),
    };
    let proxy = TcpProxy::start(upstream).await;
    let app = spawn_app_with(|c| {
        let target = match key {
            "mongo_url" => {
                proxy.rewrite(&c.mongo_url)
                    + if c.mongo_url.expose().contains('?') { "" } else { "?directConnection=true" }
            }
            "redis_url" => proxy.rewrite(&c.redis_url),
            _ => proxy.rewrite(&c.database_url),
        };
        coherency::Config::from_figment(
            coherency::Config::figment(None)
                .merge(Serialized::defaults(Overrides::from(&c)))
                .merge(Serialized::default(key, target)),
        )
        .expect("proxied config")
    })
    .await;
    assert_eq!(app.get("/readyz").await.status(), 200, "ready before the cut");
    proxy.cut();
    let started = std::time::Instant::now();
    let res = app.get("/readyz").await;
    let elapsed = started.elapsed();
    assert!(elapsed < Duration::from_secs(3), "readiness took {elapsed:?}");
    let status = res.status().as_u16();
    (status, res.json().await.expect("json body"))
}

/// The isolated names of a test config, re-applied when a test rebuilds it.
#[derive(serde::Serialize)]
struct Overrides {
    http_addr: String,
    database_url: String,
    redis_prefix: String,
    mongo_database: String,
    blob_url: String,
    node_id: Option<String>,
    token_secret: String,
    encryption_key: String,
}

impl From<&coherency::Config> for Overrides {
    fn from(c: &coherency::Config) -> Self {
        Self {
            http_addr: c.http_addr.clone(),
            database_url: c.database_url.expose().to_string(),
            redis_prefix: c.redis_prefix.clone(),
            mongo_database: c.mongo_database.clone(),
            blob_url: c.blob_url.clone(),
            node_id: c.node_id.clone(),
            token_secret: "t".repeat(40),
            encryption_key: coherency::crypto::FieldKey::generate_encoded("t"),
        }
    }
}

#[actix_web::test]
async fn readyz_names_mongo_when_its_port_closes() {
    let (status, body) = readyz_after_cutting("mongo_url").await;
    assert_eq!(status, 503);
    assert_eq!(body["error"]["code"], "unavailable");
    let msg = body["error"]["message"].as_str().unwrap();
    assert!(msg.contains("mongo") && !msg.contains("postgres") && !msg.contains("redis"), "{msg}");
}

#[actix_web::test]
async fn readyz_names_redis_when_its_port_closes() {
    let (status, body) = readyz_after_cutting("redis_url").await;
    assert_eq!(status, 503);
    let msg = body["error"]["message"].as_str().unwrap();
    assert!(msg.contains("redis") && !msg.contains("mongo"), "{msg}");
}

#[actix_web::test]
async fn readyz_names_postgres_when_its_port_closes() {
    let (status, body) = readyz_after_cutting("database_url").await;
    assert_eq!(status, 503);
    let msg = body["error"]["message"].as_str().unwrap();
    assert!(msg.contains("postgres") && !msg.contains("mongo"), "{msg}");
}

#[actix_web::test]
async fn migrations_run_twice_are_a_no_op() {
    let app = spawn_app().await;
    let tables_before: i64 =
        sqlx::query_scalar!(r#"SELECT count(*) AS "n!" FROM information_schema.tables WHERE table_schema = 'public'"#)
            .fetch_one(&app.pg)
            .await
            .unwrap();
    let applied = coherency::store::pg::migrate(&app.pg).await.expect("second migrate");
    assert_eq!(applied, 0);
    let applied = coherency::store::pg::migrate(&app.pg).await.expect("third migrate");
    assert_eq!(applied, 0);
    let tables_after: i64 =
        sqlx::query_scalar!(r#"SELECT count(*) AS "n!" FROM information_schema.tables WHERE table_schema = 'public'"#)
            .fetch_one(&app.pg)
            .await
            .unwrap();
    assert_eq!(tables_before, tables_after);
    let migrations: i64 =
        sqlx::query_scalar!(r#"SELECT count(*) AS "n!" FROM _sqlx_migrations"#).fetch_one(&app.pg).await.unwrap();
    assert_eq!(migrations as usize, coherency::store::pg::MIGRATOR.iter().count());
}
