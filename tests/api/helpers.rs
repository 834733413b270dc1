//! `spawn_app()`: the real server on port 0 against a fresh PostgreSQL database (created,
//! migrated, dropped), its own Redis key prefix, its own Mongo database and blob folder.

use std::path::PathBuf;
use std::time::Duration;

use coherency::config::{Config, ServiceUrl};
use coherency::startup::{Application, ShutdownHandle};
use figment::providers::Serialized;
use sqlx::{Connection, PgConnection, PgPool};
use uuid::Uuid;

/// A running test application.
pub struct TestApp {
    pub address: String,
    pub port: u16,
    pub client: reqwest::Client,
    pub pg: PgPool,
    pub config: Config,
    pub shutdown: ShutdownHandle,
    cleanup: Option<Cleanup>,
}

/// What a test app created and must remove.
struct Cleanup {
    admin_url: String,
    db_name: String,
    redis_url: String,
    redis_prefix: String,
    mongo_url: String,
    mongo_db: String,
    blob_dir: PathBuf,
}

/// Settings from the environment (scripts/services exports them), as the server would see.
pub fn base_config() -> Config {
    Config::load(None).expect("test environment configuration")
}

/// A config with fresh, isolated names for every service; the database is created and
/// migrated.
pub async fn isolated_config() -> (Config, String) {
    let base = base_config();
    let id = Uuid::new_v4().simple().to_string();
    let db_name = format!("coh_test_{}", &id[..16]);
    let mut url = url::Url::parse(base.database_url.expose()).expect("database url");
    let admin_url = {
        let mut u = url.clone();
        u.set_path("/postgres");
        u.to_string()
    };
    let mut admin = PgConnection::connect(&admin_url).await.expect("connect to postgres as admin");
    sqlx::query(&format!(r#"CREATE DATABASE "{db_name}""#)).execute(&mut admin).await.expect("create test database");
    url.set_path(&format!("/{db_name}"));
    let blob_dir = std::env::temp_dir().join("coherency-test-blobs").join(&id);
    let fig = Config::figment(None)
        .merge(Serialized::default("http_addr", "127.0.0.1:0"))
        .merge(Serialized::default("database_url", url.to_string()))
        .merge(Serialized::default("database_max_connections", 10))
        .merge(Serialized::default("redis_prefix", format!("test:{id}:")))
        .merge(Serialized::default("mongo_database", format!("t_{}", &id[..16])))
        .merge(Serialized::default("blob_url", format!("file://{}", blob_dir.display())))
        .merge(Serialized::default("node_id", format!("test-{}", &id[..8])))
        .merge(Serialized::default("token_secret", format!("test-token-secret-{id}")));
    let config = Config::from_figment(fig).expect("test config");
    (config, admin_url)
}

/// Starts the server with isolated services.
pub async fn spawn_app() -> TestApp {
    spawn_app_with(|c| c).await
}

/// Starts the server after letting the test adjust the config.
pub async fn spawn_app_with(adjust: impl FnOnce(Config) -> Config) -> TestApp {
    let (config, admin_url) = isolated_config().await;
    let original = config.clone();
    let config = adjust(config);
    let db_name =
        url::Url::parse(original.database_url.expose()).expect("url").path().trim_start_matches('/').to_string();
    let cleanup = Cleanup {
        admin_url,
        db_name,
        redis_url: original.redis_url.expose().to_string(),
        redis_prefix: original.redis_prefix.clone(),
        mongo_url: original.mongo_url.expose().to_string(),
        mongo_db: original.mongo_database.clone(),
        blob_dir: PathBuf::from(original.blob_url.trim_start_matches("file://")),
    };
    let app = Application::build(config.clone()).await.expect("application builds");
    let port = app.port();
    let shutdown = app.shutdown_handle();
    actix_web::rt::spawn(app.run_until_stopped());
    let pg = PgPool::connect(original.database_url.expose()).await.expect("test pool");
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(30))
        .build()
        .expect("client");
    TestApp { address: format!("http://127.0.0.1:{port}"), port, client, pg, config, shutdown, cleanup: Some(cleanup) }
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.address, path)
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.client.get(self.url(path)).send().await.expect("request")
    }

    pub async fn post_json(&self, path: &str, body: &serde_json::Value) -> reqwest::Response {
        self.client.post(self.url(path)).json(body).send().await.expect("request")
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        let Some(c) = self.cleanup.take() else { return };
        // A separate runtime: Drop runs on the test's runtime thread, which is blocked here, so
        // nothing bound to that runtime (such as `self.pg`) may be awaited; the forced drop
        // ends its connections.
        let _ = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread().enable_all().build() else { return };
            rt.block_on(async move {
                if let Ok(mut admin) = PgConnection::connect(&c.admin_url).await {
                    let _ = sqlx::query(&format!(r#"DROP DATABASE IF EXISTS "{}" WITH (FORCE)"#, c.db_name))
                        .execute(&mut admin)
                        .await;
                }
                if let Ok(client) = redis::Client::open(c.redis_url.as_str()) {
                    if let Ok(mut conn) = client.get_multiplexed_async_connection().await {
                        let keys: Vec<String> = redis::cmd("KEYS")
                            .arg(format!("{}*", c.redis_prefix))
                            .query_async(&mut conn)
                            .await
                            .unwrap_or_default();
                        if !keys.is_empty() {
                            let _: Result<(), _> = redis::cmd("DEL").arg(keys).query_async(&mut conn).await;
                        }
                    }
                }
                if let Ok(client) = mongodb::Client::with_uri_str(&c.mongo_url).await {
                    let _ = tokio::time::timeout(Duration::from_secs(5), client.database(&c.mongo_db).drop()).await;
                }
                let _ = std::fs::remove_dir_all(&c.blob_dir);
            });
        })
        .join();
    }
}

/// Polls `check` until it returns `Some`, or panics after `timeout`.
pub async fn eventually<T, F, Fut>(timeout: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        if tokio::time::Instant::now() >= deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// A TCP forwarder the test can cut, to make a service unreachable for one app only.
pub struct TcpProxy {
    pub port: u16,
    stop: tokio::sync::watch::Sender<bool>,
}

impl TcpProxy {
    pub async fn start(upstream: String) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let port = listener.local_addr().expect("addr").port();
        let (stop, rx) = tokio::sync::watch::channel(false);
        let mut accept_rx = rx.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = accept_rx.changed() => break,
                    accepted = listener.accept() => {
                        let Ok((mut inbound, _)) = accepted else { break };
                        let upstream = upstream.clone();
                        let mut conn_rx = rx.clone();
                        tokio::spawn(async move {
                            let Ok(mut outbound) = tokio::net::TcpStream::connect(&upstream).await else { return };
                            tokio::select! {
                                _ = conn_rx.changed() => {},
                                _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {},
                            }
                        });
                    }
                }
            }
        });
        Self { port, stop }
    }

    /// Closes the listening port and every connection through it.
    pub fn cut(&self) {
        let _ = self.stop.send(true);
    }

    /// The URL of `service_url` with its host and port replaced by this proxy.
    pub fn rewrite(&self, service_url: &ServiceUrl) -> String {
        let mut u = url::Url::parse(service_url.expose()).expect("url");
        let _ = u.set_host(Some("127.0.0.1"));
        let _ = u.set_port(Some(self.port));
        u.to_string()
    }
}

/// host:port of a service URL.
pub fn host_port(service_url: &ServiceUrl) -> String {
    let u = url::Url::parse(service_url.expose()).expect("url");
    format!("{}:{}", u.host_str().unwrap_or("127.0.0.1"), u.port_or_known_default().unwrap_or(0))
}
