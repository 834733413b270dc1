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
    pub clock: coherency::clock::Clock,
    pub state: actix_web::web::Data<coherency::state::AppState>,
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
        .merge(Serialized::default("token_secret", format!("test-token-secret-{id}")))
        .merge(Serialized::default("encryption_key", coherency::crypto::FieldKey::generate_encoded("test")));
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
    let clock = app.clock();
    let state = app.state();
    actix_web::rt::spawn(app.run_until_stopped());
    let pg = PgPool::connect(original.database_url.expose()).await.expect("test pool");
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(30))
        // Below the server's 5 s keep-alive: a pooled connection the server is closing at that
        // moment is never reused (a request on it fails with an incomplete message).
        .pool_idle_timeout(Duration::from_secs(2))
        .build()
        .expect("client");
    TestApp {
        address: format!("http://127.0.0.1:{port}"),
        port,
        client,
        pg,
        config,
        shutdown,
        clock,
        state,
        cleanup: Some(cleanup),
    }
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

/// A TCP forwarder the test can cut (and restore), to make a service unreachable for one
/// app only, or point at another upstream (a load balancer in front of nodes).
pub struct TcpProxy {
    pub port: u16,
    /// `(epoch, cut)`: a cut bumps the epoch (ending every connection of the previous one)
    /// and refuses new connections until restored.
    state: tokio::sync::watch::Sender<(u64, bool)>,
    /// Where new connections go.
    upstream: tokio::sync::watch::Sender<String>,
}

impl TcpProxy {
    pub async fn start(upstream: String) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let port = listener.local_addr().expect("addr").port();
        let (state, rx) = tokio::sync::watch::channel((0u64, false));
        let (upstream, upstream_rx) = tokio::sync::watch::channel(upstream);
        tokio::spawn(async move {
            loop {
                let Ok((mut inbound, _)) = listener.accept().await else { break };
                let (epoch, cut) = *rx.borrow();
                if cut {
                    // Refused: closed at once, before a byte is exchanged.
                    drop(inbound);
                    continue;
                }
                let upstream = upstream_rx.borrow().clone();
                let mut conn_rx = rx.clone();
                tokio::spawn(async move {
                    let Ok(mut outbound) = tokio::net::TcpStream::connect(&upstream).await else { return };
                    let ended = async {
                        loop {
                            if conn_rx.changed().await.is_err() || conn_rx.borrow().0 != epoch {
                                return;
                            }
                        }
                    };
                    tokio::select! {
                        _ = ended => {},
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {},
                    }
                });
            }
        });
        Self { port, state, upstream }
    }

    /// Sends new connections to `upstream` (open ones stay where they are).
    pub fn route_to(&self, upstream: String) {
        self.upstream.send_replace(upstream);
    }

    /// Closes every connection through the proxy and refuses new ones until [`Self::restore`].
    pub fn cut(&self) {
        self.state.send_modify(|s| {
            s.0 += 1;
            s.1 = true;
        });
    }

    /// Accepts connections again after [`Self::cut`].
    pub fn restore(&self) {
        self.state.send_modify(|s| s.1 = false);
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

/// A signed-in user for tests.
#[derive(Clone, Debug)]
pub struct User {
    pub id: Uuid,
    pub email: String,
    pub password: String,
    pub token: String,
    pub refresh: String,
    pub patient_id: Option<Uuid>,
    /// Base32 TOTP secret when enrolled.
    pub totp_secret: Option<String>,
}

pub const PASSWORD: &str = "correct-horse-battery-staple-42";

impl TestApp {
    pub async fn post_auth(&self, path: &str, token: &str, body: &serde_json::Value) -> reqwest::Response {
        self.client.post(self.url(path)).bearer_auth(token).json(body).send().await.expect("request")
    }

    pub async fn get_auth(&self, path: &str, token: &str) -> reqwest::Response {
        self.client.get(self.url(path)).bearer_auth(token).send().await.expect("request")
    }

    pub async fn login(&self, email: &str, password: &str) -> reqwest::Response {
        self.post_json("/v1/auth/login", &serde_json::json!({"email": email, "password": password})).await
    }

    /// Registers a patient (Ada Lovelace) and logs them in.
    pub async fn patient(&self) -> User {
        self.patient_named("Ada", "Lovelace").await
    }

    /// Registers a patient with this name and logs them in.
    pub async fn patient_named(&self, given: &str, family: &str) -> User {
        let email = format!("p-{}@example.test", Uuid::new_v4().simple());
        let res = self
            .post_json(
                "/v1/auth/register",
                &serde_json::json!({"email": email, "password": PASSWORD, "given_name": given, "family_name": family, "birth_date": "1985-12-10"}),
            )
            .await;
        assert_eq!(res.status(), 201, "register: {}", res.text().await.unwrap_or_default());
        let reg: serde_json::Value = res.json().await.expect("json");
        let mut u = self.sign_in(&email, PASSWORD).await;
        u.patient_id = reg["patient_id"].as_str().and_then(|s| s.parse().ok());
        u
    }

    async fn sign_in(&self, email: &str, password: &str) -> User {
        let res = self.login(email, password).await;
        assert_eq!(res.status(), 200, "login: {}", res.text().await.unwrap_or_default());
        let body: serde_json::Value = res.json().await.expect("json");
        User {
            id: body["user"]["id"].as_str().unwrap().parse().unwrap(),
            email: email.to_string(),
            password: password.to_string(),
            token: body["access_token"].as_str().unwrap().to_string(),
            refresh: body["refresh_token"].as_str().unwrap().to_string(),
            patient_id: body["user"]["patient_id"].as_str().and_then(|s| s.parse().ok()),
            totp_secret: None,
        }
    }

    /// Creates a staff account directly (as `create-admin` does), signs in and enrols TOTP
    /// unless `enrol` is false.
    pub async fn staff(&self, role: coherency::auth::Role, enrol: bool) -> User {
        let email = format!("{}-{}@clinic.test", role.as_str(), Uuid::new_v4().simple());
        self.state
            .identity
            .create_staff(coherency::services::identity::NewStaff {
                email: email.clone(),
                password: PASSWORD.into(),
                display_name: "Dr Test".into(),
                role,
            })
            .await
            .expect("create staff");
        let mut u = self.sign_in(&email, PASSWORD).await;
        if enrol {
            let res = self.post_auth("/v1/me/mfa/totp", &u.token, &serde_json::json!({})).await;
            assert_eq!(res.status(), 200);
            let secret = res.json::<serde_json::Value>().await.unwrap()["secret"].as_str().unwrap().to_string();
            let code = coherency::auth::totp::code_at(&secret, self.clock.now()).unwrap();
            let res = self.post_auth("/v1/me/mfa/totp/confirm", &u.token, &serde_json::json!({"code": code})).await;
            assert_eq!(res.status(), 200, "confirm: {}", res.text().await.unwrap_or_default());
            u.totp_secret = Some(secret);
        }
        u
    }
}

/// A `coherency serve` child process sharing a test app's services.
pub struct NodeProcess {
    pub port: u16,
    pub child: std::process::Child,
    pub log: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl NodeProcess {
    /// Starts the binary with the same database, Redis prefix, Mongo database and secrets.
    pub fn start(config: &Config, extra_env: &[(&str, &str)]) -> Self {
        use std::io::BufRead;
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_coherency"));
        cmd.arg("serve")
            .env("COHERENCY_HTTP_ADDR", "127.0.0.1:0")
            .env("COHERENCY_DATABASE_URL", config.database_url.expose())
            .env("COHERENCY_REDIS_URL", config.redis_url.expose())
            .env("COHERENCY_REDIS_PREFIX", &config.redis_prefix)
            .env("COHERENCY_MONGO_URL", config.mongo_url.expose())
            .env("COHERENCY_MONGO_DATABASE", &config.mongo_database)
            .env("COHERENCY_BLOB_URL", &config.blob_url)
            .env("COHERENCY_LOG_FORMAT", "json")
            .env("COHERENCY_LOG_LEVEL", "info")
            .env("COHERENCY_NODE_ID", format!("node-{}", Uuid::new_v4().simple()))
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        use secrecy::ExposeSecret;
        if let Some(s) = &config.token_secret {
            cmd.env("COHERENCY_TOKEN_SECRET", s.expose_secret());
        }
        if let Some(s) = &config.encryption_key {
            cmd.env("COHERENCY_ENCRYPTION_KEY", s.expose_secret());
        }
        for (k, v) in extra_env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("spawn coherency");
        let stdout = child.stdout.take().expect("stdout");
        let log = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let log2 = log.clone();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout).lines().map_while(Result::ok) {
                if line.contains("\"listening\"") {
                    if let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) {
                        if let Some(p) = v["port"].as_u64() {
                            let _ = tx.send(p as u16);
                        }
                    }
                }
                log2.lock().unwrap().push(line);
            }
        });
        let stderr = child.stderr.take().expect("stderr");
        let log3 = log.clone();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stderr).lines().map_while(Result::ok) {
                log3.lock().unwrap().push(line);
            }
        });
        let port = rx
            .recv_timeout(Duration::from_secs(60))
            .unwrap_or_else(|_| panic!("node did not start: {:?}", log.lock().unwrap()));
        Self { port, child, log }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{}", self.port, path)
    }

    /// Sends SIGTERM.
    pub fn terminate(&self) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
    }
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
