//! Building and running the application: `Application::build` connects the services,
//! applies migrations, binds the listener (port 0 works) and returns a handle that runs
//! until stopped. SIGTERM drains: readiness turns 503, the listener stops, in-flight
//! requests finish within the grace period, sockets close with 1001. Commands that do not
//! serve get the same state from [`tool_state`], without a listener or background work.

use std::net::TcpListener;
use std::sync::Arc;
use std::time::Duration;

use actix_web::dev::Server;
use actix_web::middleware::{from_fn, Compress};
use actix_web::{web, App};
use tracing_actix_web::TracingLogger;
use utoipa::OpenApi;
use utoipa_swagger_ui::SwaggerUi;

use secrecy::{ExposeSecret, SecretString};

use crate::clock::Clock;
use crate::config::Config;
use crate::consults::ConsultRooms;
use crate::crypto::FieldKey;
use crate::error::{json_error, path_error, query_error};
use crate::metrics::Metrics;
use crate::services::access::Access;
use crate::services::consults::Consults;
use crate::services::identity::sockets::SocketRegistry;
use crate::services::identity::Identity;
use crate::services::scans::Scans;
use crate::state::{AppState, Lifecycle};
use crate::store::Stores;

/// Why the application could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Unreachable(#[from] crate::store::Unreachable),
    #[error("migrations failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("configuration: {0}")]
    Config(String),
    #[error("cannot bind {addr}: {source}")]
    Bind { addr: String, source: std::io::Error },
}

/// A built, bound, not yet running server.
pub struct Application {
    port: u16,
    server: Server,
    state: web::Data<AppState>,
}

impl Application {
    /// Connects, migrates and binds.
    pub async fn build(config: Config) -> Result<Self, StartError> {
        let stores = Stores::connect(&config).await?;
        crate::store::pg::migrate(&stores.pg).await?;
        Self::build_with(config, stores).await
    }

    /// Binds with already-connected stores.
    pub async fn build_with(config: Config, stores: Stores) -> Result<Self, StartError> {
        let listener = TcpListener::bind(&config.http_addr)
            .map_err(|source| StartError::Bind { addr: config.http_addr.clone(), source })?;
        let port =
            listener.local_addr().map_err(|source| StartError::Bind { addr: config.http_addr.clone(), source })?.port();
        let state = app_state(config, stores, Node::Serving)?;
        actix_web::rt::spawn(state.identity.clone().listen_for_revocations());
        let (bus_ready, bus_up) = tokio::sync::oneshot::channel();
        actix_web::rt::spawn(crate::cluster::bus::listen(state.cluster.clone(), bus_ready));
        if tokio::time::timeout(std::time::Duration::from_secs(5), bus_up).await.is_err() {
            tracing::warn!("node bus not subscribed yet; requests from other nodes wait until it is");
        }
        state.cluster.leases.spawn_renewer();
        crate::booking::spawn_sweeper(state.calendars.clone(), state.lifecycle.subscribe());
        let limiter = web::Data::new(crate::http::ratelimit::RateLimiter::new(
            state.config.api_rate_per_sec,
            state.config.api_rate_burst,
        ));
        crate::dashboard::spawn_inputs(state.clone());
        state.consult_rooms.spawn_webhooks(&state.config);
        let serving = crate::transport::Serving {
            limits: crate::transport::Limits::from_config(&state.config),
            grace_secs: state.config.shutdown_grace_secs,
        };
        let server = {
            let state = state.clone();
            crate::transport::serve(
                listener,
                move || {
                    let max_body = state.config.max_body_bytes;
                    App::new()
                        .app_data(state.clone())
                        // The metrics middleware and `/metrics` need the metrics only.
                        .app_data(web::Data::from(state.metrics.clone()))
                        .app_data(limiter.clone())
                        .app_data(web::JsonConfig::default().limit(max_body).error_handler(json_error))
                        .app_data(web::PayloadConfig::new(max_body))
                        .app_data(web::QueryConfig::default().error_handler(query_error))
                        .app_data(web::PathConfig::default().error_handler(path_error))
                        .configure(crate::http::configure)
                        .service(
                            SwaggerUi::new("/docs/{_:.*}")
                                .url("/openapi.json", crate::http::openapi::ApiDoc::openapi()),
                        )
                        .default_service(web::to(crate::http::not_found))
                        .wrap(from_fn(crate::transport::body::deadline))
                        // Refuses a path or query string with a forbidden character (input bounds).
                        .wrap(from_fn(crate::http::input::clean_target))
                        .wrap(from_fn(crate::http::ratelimit::limit))
                        .wrap(from_fn(crate::metrics::record))
                        .wrap(from_fn(envelope_mw))
                        .wrap(Compress::default())
                        .wrap(TracingLogger::<crate::telemetry::PhiSafeRootSpan>::new())
                },
                serving,
            )
            .map_err(|source| StartError::Bind { addr: "listener".into(), source })?
        };
        Ok(Self { port, server, state })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The application's clock (tests move it forward).
    pub fn clock(&self) -> Clock {
        self.state.clock.clone()
    }

    /// Shared state, for in-process tests and tools.
    pub fn state(&self) -> web::Data<AppState> {
        self.state.clone()
    }

    /// A handle to start draining from outside (tests, signal handler).
    pub fn shutdown_handle(&self) -> ShutdownHandle {
        ShutdownHandle { state: self.state.clone(), server: self.server.handle() }
    }

    /// Runs until SIGTERM/SIGINT (drain) or a [`ShutdownHandle`] stops it.
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        let handle = self.shutdown_handle();
        tokio::spawn(async move {
            wait_for_signal().await;
            handle.drain().await;
        });
        self.server.await
    }
}

/// Whether the state is for a node that serves, or for a command that only works on the
/// data (`create-admin`, `seed-demo`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Node {
    Serving,
    Tool,
}

/// The state a command that does not serve works with: connected and migrated, but no
/// listener and none of a serving node's background work (bus, leases, sweepers, webhooks,
/// taking over other nodes' scans), so it runs beside a running server.
pub async fn tool_state(config: Config) -> Result<web::Data<AppState>, StartError> {
    let stores = Stores::connect(&config).await?;
    crate::store::pg::migrate(&stores.pg).await?;
    app_state(config, stores, Node::Tool)
}

/// The shared state; only a serving node starts the recovery of other nodes' scans.
fn app_state(config: Config, stores: Stores, role: Node) -> Result<web::Data<AppState>, StartError> {
    let node = config.node_name();
    let metrics = Arc::new(Metrics::new(&node));
    let token_secret = config.token_secret.clone().unwrap_or_else(|| {
        if role == Node::Serving {
            tracing::warn!("token_secret is not set: using a random one (sessions will not survive a restart or work across nodes)");
        }
        SecretString::from(crate::auth::new_token(""))
    });
    let field_key = match &config.encryption_key {
        Some(k) => FieldKey::parse(k.expose_secret()).map_err(StartError::Config)?,
        None => return Err(StartError::Config("encryption_key (COHERENCY_ENCRYPTION_KEY) is required".into())),
    };
    crate::services::identity::password::Hasher::warm_up();
    let clock = Clock::default();
    let capture_live = coherency_actors::capture::LiveSessions::default();
    let recovery = match role {
        Node::Serving => crate::ws::scan::Recovery::Run,
        Node::Tool => crate::ws::scan::Recovery::Off,
    };
    let capture = crate::ws::scan::start_registry(&config, &stores, &clock, &metrics, capture_live.clone(), recovery);
    let audit = crate::audit::AuditLog::start(stores.pg.clone());
    let cluster = Arc::new(crate::cluster::Node::new(&stores.redis, node.clone(), capture.clone(), capture_live));
    let consult_rooms = ConsultRooms::new(&config, &stores, &clock, cluster.clone(), audit.clone());
    let sockets = Arc::new(SocketRegistry::default());
    let identity = Arc::new(Identity::new(
        stores.pg.clone(),
        stores.redis.clone(),
        clock.clone(),
        token_secret,
        Default::default(),
        sockets.clone(),
    ));
    let access = Access::new(stores.pg.clone(), clock.clone(), audit.clone());
    let consults = Consults::new(stores.pg.clone());
    let scans = Scans::new(stores.pg.clone(), clock.clone(), access.clone());
    let capture_links =
        crate::services::capture::CaptureLinks::new(stores.pg.clone(), clock.clone(), scans.clone(), identity.clone());
    let photos = crate::services::photos::Photos::new(
        stores.pg.clone(),
        stores.blobs.clone(),
        stores.mongo.clone(),
        clock.clone(),
    );
    Ok(web::Data::new(AppState {
        photos,
        cluster,
        consult_rooms,
        capture,
        calendars: crate::booking::calendars(
            stores.pg.clone(),
            Arc::new(crate::cluster::bus::BookingBus::new(stores.redis.clone())),
            clock.clone(),
            std::time::Duration::from_millis(config.booking_view_max_age_ms),
        ),
        audit,
        dashboard: crate::dashboard::start_hub(),
        patient_names: Default::default(),
        config: Arc::new(config),
        stores,
        metrics,
        lifecycle: Lifecycle::default(),
        node,
        clock,
        identity,
        access,
        consults,
        scans,
        capture_links,
        field_key,
        sockets,
        // One report per core: each takes a core for ~100 ms (docs/performance.md).
        reports: crate::services::wound_report::Reports::new(
            std::thread::available_parallelism().map_or(2, |n| n.get()),
        ),
    }))
}

/// Starts the drain sequence.
#[derive(Clone)]
pub struct ShutdownHandle {
    state: web::Data<AppState>,
    server: actix_web::dev::ServerHandle,
}

impl ShutdownHandle {
    /// Readiness 503 → wait `drain_delay_ms` → sockets told to close (1001) → stop
    /// accepting and let in-flight requests finish.
    pub async fn drain(&self) {
        tracing::info!("draining");
        self.state.lifecycle.start_draining();
        self.state.metrics.draining.set(1);
        tokio::time::sleep(Duration::from_millis(self.state.config.drain_delay_ms)).await;
        self.state.lifecycle.close_sockets();
        // Rooms move: participants reconnect (1001) to another node, which claims them.
        self.state.cluster.rooms.retire_all();
        self.state.cluster.leases.release_prefix("lease:room:").await;
        // Capture sessions hand over (what they received made durable) before their leases
        // go, so the node a phone resumes on starts from everything acked here.
        if self.state.capture.send(coherency_actors::capture::Drain).await.is_err() {
            tracing::warn!("capture registry gone before the drain");
        }
        self.state.cluster.leases.release_prefix("lease:scan:").await;
        self.server.stop(true).await;
        tracing::info!("stopped");
    }
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let (Ok(mut term), Ok(mut int)) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) else {
            tracing::error!("cannot install signal handlers");
            return std::future::pending().await;
        };
        tokio::select! {
            _ = term.recv() => {},
            _ = int.recv() => {},
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

async fn envelope_mw(
    req: actix_web::dev::ServiceRequest,
    next: actix_web::middleware::Next<impl actix_web::body::MessageBody + 'static>,
) -> Result<actix_web::dev::ServiceResponse<impl actix_web::body::MessageBody>, actix_web::Error> {
    let res = next.call(req).await?;
    crate::http::envelope::envelope(res).await
}
