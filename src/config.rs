//! Typed, layered configuration: built-in defaults, then an optional TOML file
//! (`--config`), then `COHERENCY_*` environment variables. Unknown keys are rejected, a bad
//! value names its key, and secrets are wrapped so they never print.

use std::net::SocketAddr;
use std::path::Path;

use figment::providers::{Env, Format, Toml};
use figment::Figment;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

/// Prefix of every environment variable that sets a configuration key.
pub const ENV_PREFIX: &str = "COHERENCY_";

/// Environment variables with the prefix that are not configuration keys.
const ENV_NOT_SETTINGS: &[&str] = &["config"];

/// One documented setting: used for `--help`, the README table and tests.
pub struct Setting {
    pub key: &'static str,
    pub default: &'static str,
    pub help: &'static str,
}

impl Setting {
    /// The environment variable that sets this key.
    pub fn env(&self) -> String {
        format!("{ENV_PREFIX}{}", self.key.to_ascii_uppercase())
    }
}

/// Every setting, in the order the README lists them.
pub const SETTINGS: &[Setting] = &[
    Setting {
        key: "http_addr",
        default: "127.0.0.1:8080",
        help: "Address the HTTP/websocket listener binds (port 0 picks a free port).",
    },
    Setting {
        key: "public_url",
        default: "http://127.0.0.1:8080",
        help: "Base URL clients use to reach this server (links, otpauth issuer, Origin default).",
    },
    Setting {
        key: "database_url",
        default: "postgres://postgres@127.0.0.1:5432/coherency",
        help: "PostgreSQL URL (system of record).",
    },
    Setting { key: "database_max_connections", default: "20", help: "Size of the PostgreSQL pool." },
    Setting {
        key: "scan_flush_window_ms",
        default: "0",
        help: "0: group commit — a scan's frames are written and indexed as soon as its previous write finished (lowest ack latency). N: hold a partial chunk until its oldest frame is N ms old (fewer, larger blob objects; acks wait up to N ms).",
    },
    Setting {
        key: "scan_live_fusion",
        default: "true",
        help: "Fuse frames into the scan's volume while they stream (live coverage and fused frames in progress; finish then only meshes and measures). false: fuse everything at finish, leaving the CPU to ingest.",
    },
    Setting {
        key: "scan_live_fusion_max_scans",
        default: "0",
        help: "Most scans fused live at once on this node; a scan that starts beyond it streams without the live preview (no coverage in progress) and is fused when it finishes, so a crowded node keeps its cores for acks. 0: four per core.",
    },
    Setting {
        key: "scan_finish_defer_max_ms",
        default: "30000",
        help: "A finished scan's reconstruction (fusion when not fused live, mesh, measurements) waits while phones are still streaming to this node — until no frame has arrived for 1 s — for at most this long, so it does not delay their acks. 0: start at once.",
    },
    Setting {
        key: "scan_processing_stale_secs",
        default: "600",
        help: "A scan still `processing` this long after it finished (its node stopped while it waited or was being reconstructed) is taken over and reconstructed by a node that notices, checking every quarter of this (1–60 s). Keep it well above scan_finish_defer_max_ms plus a reconstruction. 0: never.",
    },
    Setting {
        key: "fusion_nice",
        default: "10",
        help: "Niceness (0–19) of the live-fusion worker threads, and of a finished scan's reconstruction while phones stream to this node (with none streaming it runs at normal priority): under load the scheduler prefers the ack path. 0: same priority as the rest of the server.",
    },
    Setting {
        key: "redis_url",
        default: "redis://127.0.0.1:6379",
        help: "Redis URL (rate limits, presence, leases, cross-node bus).",
    },
    Setting {
        key: "redis_prefix",
        default: "coherency:",
        help: "Prefix of every Redis key and channel this deployment uses.",
    },
    Setting {
        key: "mongo_url",
        default: "mongodb://127.0.0.1:27017",
        help: "MongoDB URL (reconstruction documents, activity streams).",
    },
    Setting { key: "mongo_database", default: "coherency", help: "MongoDB database name." },
    Setting {
        key: "blob_url",
        default: "file://.local/blobs",
        help: "Blob store: file://DIR (relative or absolute), s3://bucket/prefix or az://container/prefix.",
    },
    Setting {
        key: "log_format",
        default: "auto",
        help: "Log format: json, pretty, or auto (pretty on a terminal, JSON otherwise).",
    },
    Setting {
        key: "log_level",
        default: "info",
        help: "Log filter in tracing's EnvFilter syntax, e.g. `info,coherency=debug`.",
    },
    Setting {
        key: "allowed_origins",
        default: "",
        help:
            "Comma-separated browser origins allowed to open sockets and call the API (public_url is always allowed).",
    },
    Setting {
        key: "token_secret",
        default: "(random per process)",
        help: "Secret keying token hashes and socket tickets; must be shared by all nodes. Secret.",
    },
    Setting {
        key: "encryption_key",
        default: "(none)",
        help: "Base64 32-byte AES-256-GCM key for field encryption at rest, as `KEYID:BASE64`. Secret.",
    },
    Setting {
        key: "max_body_bytes",
        default: "1048576",
        help: "Largest request body accepted by routes that do not set their own limit.",
    },
    Setting { key: "readiness_timeout_ms", default: "1000", help: "Time each dependency ping in /readyz may take." },
    Setting {
        key: "client_header_timeout_ms",
        default: "5000",
        help: "A request's line and headers must arrive within this long: from the connection's opening for its first request, from the first byte for later ones. Over it: `408 request_timeout`, connection closed.",
    },
    Setting {
        key: "client_body_timeout_ms",
        default: "10000",
        help: "A request body must arrive within this long after its headers, extended by one second per client_body_min_rate bytes received. Over it: `408 request_timeout`, connection closed.",
    },
    Setting {
        key: "client_body_min_rate",
        default: "16384",
        help: "Bytes per second a slow body upload earns in extra time (see client_body_timeout_ms); 0: the whole body within client_body_timeout_ms.",
    },
    Setting {
        key: "client_disconnect_timeout_ms",
        default: "1000",
        help: "After the server answers and closes a connection, how long it keeps reading (and discarding) what the client still sends, so the answer is not lost to a reset. 0: close at once.",
    },
    Setting {
        key: "keep_alive_secs",
        default: "5",
        help: "An idle connection between requests is closed after this long. 0: one request per connection.",
    },
    Setting {
        key: "socket_recheck_secs",
        default: "30",
        help: "How often an open socket re-checks its session in the database (a backstop to the revocation bus; 1–3600). A consult or scan socket whose client is active also keeps its session from going idle at this pace.",
    },
    Setting {
        key: "max_header_bytes",
        default: "32768",
        help: "Largest request line plus headers accepted (1024–65536). Over it: `431 headers_too_large`, connection closed.",
    },
    Setting {
        key: "connections_per_address",
        default: "256",
        help: "Most connections one client address (an IPv6 /64) may hold open at once; one more is answered `429 too_many_connections` and closed. Behind a proxy every client has the proxy's address: set 0 (no cap) and limit at the proxy.",
    },
    Setting {
        key: "shutdown_grace_secs",
        default: "30",
        help: "On SIGTERM, how long in-flight requests get to finish.",
    },
    Setting {
        key: "drain_delay_ms",
        default: "0",
        help: "On SIGTERM, how long /readyz answers 503 before the listener stops accepting.",
    },
    Setting {
        key: "trust_forwarded_for",
        default: "false",
        help: "Take the client address from X-Forwarded-For (only behind a proxy that sets it).",
    },
    Setting {
        key: "api_rate_per_sec",
        default: "50",
        help:
            "Requests per second each caller (bearer token, or address when anonymous) may make, sustained, per node.",
    },
    Setting {
        key: "api_rate_burst",
        default: "200",
        help: "Requests a caller may make at once before api_rate_per_sec applies.",
    },
    Setting {
        key: "login_per_address_per_min",
        default: "100",
        help: "Sign-in attempts one client address may make per minute (all accounts together); raise it where many people share an address.",
    },
    Setting {
        key: "register_per_address_per_min",
        default: "1000",
        help: "Patient registrations one client address may make per minute.",
    },
    Setting {
        key: "capture_redeem_per_address_per_min",
        default: "30",
        help: "Capture-link redemptions (`POST /v1/capture/redeem`) one client address may attempt per minute, successful or not.",
    },
    Setting {
        key: "ios_app_ids",
        default: "",
        help: "Comma-separated iOS app ids (`TEAMID.bundle.id`) that open capture links (`/capture`): served in /.well-known/apple-app-site-association, which answers 404 while this is empty.",
    },
    Setting {
        key: "android_app_package",
        default: "",
        help: "Android package name that opens capture links (`/capture`): served in /.well-known/assetlinks.json (with android_cert_fingerprints), which answers 404 while this is empty.",
    },
    Setting {
        key: "android_cert_fingerprints",
        default: "",
        help: "Comma-separated SHA-256 fingerprints (`AB:CD:…`, 32 bytes) of the Android app's signing certificates; required with android_app_package.",
    },
    Setting {
        key: "booking_view_max_age_ms",
        default: "1000",
        help: "Longest a node answers `slot_taken` from its in-memory calendar before rereading it (changes arrive on the bus in between); 0 rereads on every attempt.",
    },
    Setting { key: "node_id", default: "(hostname-pid)", help: "Name of this node in leases, logs and metrics." },
    Setting { key: "web_dir", default: "web", help: "Folder with the dashboard and consult pages." },
    Setting {
        key: "consult_max_participants",
        default: "6",
        help: "Most participants admitted to one consult at once (host included).",
    },
    Setting {
        key: "consult_empty_timeout_secs",
        default: "300",
        help: "A consult room with no connection for this long ends.",
    },
    Setting {
        key: "consult_max_duration_secs",
        default: "14400",
        help: "A consult room ends this long after it opened.",
    },
    Setting {
        key: "consult_reconnect_grace_secs",
        default: "20",
        help: "How long a dropped consult connection keeps its seat.",
    },
    Setting {
        key: "consult_media",
        default: "true",
        help: "Run the SFU (WebRTC media); off leaves signalling and chat.",
    },
    Setting {
        key: "webrtc_loopback_only",
        default: "false",
        help: "The SFU and scan data channels gather loopback candidates only (tests, single-machine demos).",
    },
    Setting {
        key: "stun_urls",
        default: "",
        help: "Comma-separated STUN URLs given to clients and used by the SFU, e.g. `stun:stun.example.org:3478`.",
    },
    Setting {
        key: "turn_urls",
        default: "",
        help: "Comma-separated TURN URLs given to clients with time-limited credentials (needs turn_secret).",
    },
    Setting {
        key: "turn_secret",
        default: "(none)",
        help: "Shared secret of the TURN server's REST-API credentials (coturn `static-auth-secret`). Secret.",
    },
    Setting { key: "turn_ttl_secs", default: "3600", help: "Lifetime of the TURN credentials handed to a client." },
    Setting {
        key: "webhook_url",
        default: "",
        help: "URL that receives every consult event (signed JSON POST, in order, retried); empty: none.",
    },
    Setting {
        key: "healing_on_track_reduction_pct",
        default: "40",
        help: "Clinical setting: the wound-area reduction (%) at four weeks from baseline at or above which a wound is `on_track` (Sheehan et al., Diabetes Care 2003: 40 %; see docs/measurement.md, \"Healing metrics\"). 0 < value <= 100.",
    },
    Setting {
        key: "webhook_secret",
        default: "(none)",
        help: "HMAC-SHA256 key signing webhook bodies (`X-Coherency-Signature`). Secret.",
    },
];

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Json,
    Pretty,
    Auto,
}

/// Default of `login_per_address_per_min` (the limit itself is `crate::auth::limits`, which
/// reads this: configuration sits below the modules it configures).
pub const DEFAULT_LOGIN_PER_ADDRESS_PER_MIN: u32 = 100;
/// Default of `register_per_address_per_min`.
pub const DEFAULT_REGISTER_PER_ADDRESS_PER_MIN: u32 = 1000;
/// Default of `capture_redeem_per_address_per_min`.
pub const DEFAULT_CAPTURE_REDEEM_PER_ADDRESS_PER_MIN: u32 = 30;

/// Default of `healing_on_track_reduction_pct` (`crate::services::healing`).
pub const DEFAULT_HEALING_ON_TRACK_REDUCTION_PCT: f64 = 40.0;

/// The whole configuration, validated.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub http_addr: String,
    pub public_url: String,
    pub database_url: ServiceUrl,
    pub database_max_connections: u32,
    pub scan_flush_window_ms: u64,
    pub scan_live_fusion: bool,
    pub scan_live_fusion_max_scans: usize,
    pub scan_finish_defer_max_ms: u64,
    pub scan_processing_stale_secs: u64,
    pub fusion_nice: i32,
    pub redis_url: ServiceUrl,
    pub redis_prefix: String,
    pub mongo_url: ServiceUrl,
    pub mongo_database: String,
    pub blob_url: String,
    pub log_format: LogFormat,
    pub log_level: String,
    pub allowed_origins: String,
    pub token_secret: Option<SecretString>,
    pub encryption_key: Option<SecretString>,
    pub max_body_bytes: usize,
    pub readiness_timeout_ms: u64,
    pub client_header_timeout_ms: u64,
    pub client_body_timeout_ms: u64,
    pub client_body_min_rate: u64,
    pub client_disconnect_timeout_ms: u64,
    pub keep_alive_secs: u64,
    pub socket_recheck_secs: u64,
    pub max_header_bytes: usize,
    pub connections_per_address: usize,
    pub shutdown_grace_secs: u64,
    pub drain_delay_ms: u64,
    pub trust_forwarded_for: bool,
    pub api_rate_per_sec: u32,
    pub api_rate_burst: u32,
    pub login_per_address_per_min: u32,
    pub register_per_address_per_min: u32,
    pub capture_redeem_per_address_per_min: u32,
    pub ios_app_ids: String,
    pub android_app_package: String,
    pub android_cert_fingerprints: String,
    pub booking_view_max_age_ms: u64,
    pub node_id: Option<String>,
    pub web_dir: String,
    pub consult_max_participants: usize,
    pub consult_empty_timeout_secs: u64,
    pub consult_max_duration_secs: u64,
    pub consult_reconnect_grace_secs: u64,
    pub consult_media: bool,
    pub webrtc_loopback_only: bool,
    pub stun_urls: String,
    pub turn_urls: String,
    pub turn_secret: Option<SecretString>,
    pub turn_ttl_secs: u64,
    pub webhook_url: String,
    pub webhook_secret: Option<SecretString>,
    pub healing_on_track_reduction_pct: f64,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            http_addr: "127.0.0.1:8080".into(),
            public_url: "http://127.0.0.1:8080".into(),
            database_url: ServiceUrl::new("postgres://postgres@127.0.0.1:5432/coherency"),
            database_max_connections: 20,
            scan_flush_window_ms: 0,
            scan_live_fusion: true,
            scan_live_fusion_max_scans: 0,
            scan_finish_defer_max_ms: 30_000,
            scan_processing_stale_secs: 600,
            fusion_nice: coherency_actors::reconstruction::DEFAULT_WORKER_NICE,
            redis_url: ServiceUrl::new("redis://127.0.0.1:6379"),
            redis_prefix: "coherency:".into(),
            mongo_url: ServiceUrl::new("mongodb://127.0.0.1:27017"),
            mongo_database: "coherency".into(),
            blob_url: "file://.local/blobs".into(),
            log_format: LogFormat::Auto,
            log_level: "info".into(),
            allowed_origins: String::new(),
            token_secret: None,
            encryption_key: None,
            max_body_bytes: 1024 * 1024,
            readiness_timeout_ms: 1000,
            client_header_timeout_ms: 5000,
            client_body_timeout_ms: 10_000,
            client_body_min_rate: 16 * 1024,
            client_disconnect_timeout_ms: 1000,
            keep_alive_secs: 5,
            socket_recheck_secs: 30,
            max_header_bytes: 32 * 1024,
            connections_per_address: 256,
            shutdown_grace_secs: 30,
            drain_delay_ms: 0,
            trust_forwarded_for: false,
            api_rate_per_sec: 50,
            api_rate_burst: 200,
            login_per_address_per_min: DEFAULT_LOGIN_PER_ADDRESS_PER_MIN,
            register_per_address_per_min: DEFAULT_REGISTER_PER_ADDRESS_PER_MIN,
            capture_redeem_per_address_per_min: DEFAULT_CAPTURE_REDEEM_PER_ADDRESS_PER_MIN,
            ios_app_ids: String::new(),
            android_app_package: String::new(),
            android_cert_fingerprints: String::new(),
            booking_view_max_age_ms: 1000,
            node_id: None,
            web_dir: "web".into(),
            consult_max_participants: 6,
            consult_empty_timeout_secs: 300,
            consult_max_duration_secs: 4 * 3600,
            consult_reconnect_grace_secs: 20,
            consult_media: true,
            webrtc_loopback_only: false,
            stun_urls: String::new(),
            turn_urls: String::new(),
            turn_secret: None,
            turn_ttl_secs: 3600,
            webhook_url: String::new(),
            webhook_secret: None,
            healing_on_track_reduction_pct: DEFAULT_HEALING_ON_TRACK_REDUCTION_PCT,
        }
    }
}

/// Why configuration could not be loaded. The message always names the key.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("configuration: {0}")]
    Load(String),
    #[error("configuration: invalid value for `{key}` ({env}): {reason}")]
    Invalid { key: &'static str, env: String, reason: String },
}

impl Config {
    /// Loads defaults, then `file` (if given), then the process environment.
    pub fn load(file: Option<&Path>) -> Result<Self, ConfigError> {
        Self::from_figment(Self::figment(file))
    }

    /// The layered sources, exposed so tests can add their own on top.
    pub fn figment(file: Option<&Path>) -> Figment {
        let mut fig = Figment::new();
        if let Some(path) = file {
            fig = fig.merge(Toml::file_exact(path));
        }
        fig.merge(Env::prefixed(ENV_PREFIX).ignore(ENV_NOT_SETTINGS))
    }

    /// Extracts and validates.
    pub fn from_figment(fig: Figment) -> Result<Self, ConfigError> {
        let config: Config = fig.extract().map_err(|e| ConfigError::Load(describe(e)))?;
        config.validate()?;
        Ok(config)
    }

    fn invalid(key: &'static str, reason: impl Into<String>) -> ConfigError {
        ConfigError::Invalid { key, env: format!("{ENV_PREFIX}{}", key.to_ascii_uppercase()), reason: reason.into() }
    }

    /// Checks values that parse but make no sense.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.http_addr
            .parse::<SocketAddr>()
            .map_err(|e| Self::invalid("http_addr", format!("`{}` is not host:port ({e})", self.http_addr)))?;
        url::Url::parse(&self.public_url).map_err(|e| Self::invalid("public_url", e.to_string()))?;
        for (key, url, schemes) in [
            ("database_url", &self.database_url, &["postgres", "postgresql"][..]),
            ("redis_url", &self.redis_url, &["redis", "rediss"][..]),
            ("mongo_url", &self.mongo_url, &["mongodb", "mongodb+srv"][..]),
        ] {
            let parsed = url::Url::parse(url.expose()).map_err(|e| Self::invalid(key, e.to_string()))?;
            if !schemes.contains(&parsed.scheme()) {
                return Err(Self::invalid(key, format!("scheme must be one of {schemes:?}")));
            }
        }
        if self.database_max_connections == 0 {
            return Err(Self::invalid("database_max_connections", "must be at least 1"));
        }
        if self.scan_processing_stale_secs != 0
            && self.scan_processing_stale_secs.saturating_mul(1000)
                <= self.scan_finish_defer_max_ms.saturating_add(1000)
        {
            return Err(Self::invalid(
                "scan_processing_stale_secs",
                "must be 0 or more than scan_finish_defer_max_ms plus a second (a scan waiting to be processed is not stale)",
            ));
        }
        if self.scan_flush_window_ms > 1000 {
            return Err(Self::invalid("scan_flush_window_ms", "must be at most 1000"));
        }
        if !(0..=19).contains(&self.fusion_nice) {
            return Err(Self::invalid("fusion_nice", "must be between 0 and 19"));
        }
        if self.login_per_address_per_min == 0 || self.register_per_address_per_min == 0 {
            return Err(Self::invalid("login_per_address_per_min", "address limits must be at least 1"));
        }
        if self.capture_redeem_per_address_per_min == 0 {
            return Err(Self::invalid("capture_redeem_per_address_per_min", "must be at least 1"));
        }
        for id in self.ios_app_ids() {
            if !is_ios_app_id(id) {
                return Err(Self::invalid("ios_app_ids", format!("`{id}` is not TEAMID.bundle.id")));
            }
        }
        let package = self.android_app_package.trim();
        if !package.is_empty() && !is_android_package(package) {
            return Err(Self::invalid("android_app_package", format!("`{package}` is not a package name")));
        }
        for f in self.android_cert_fingerprints() {
            if !is_cert_fingerprint(f) {
                return Err(Self::invalid(
                    "android_cert_fingerprints",
                    format!("`{f}` is not a SHA-256 fingerprint (32 hex bytes separated by colons)"),
                ));
            }
        }
        if package.is_empty() != self.android_cert_fingerprints().is_empty() {
            return Err(Self::invalid(
                "android_cert_fingerprints",
                "android_app_package and android_cert_fingerprints are set together",
            ));
        }
        if !(self.healing_on_track_reduction_pct > 0.0 && self.healing_on_track_reduction_pct <= 100.0) {
            return Err(Self::invalid("healing_on_track_reduction_pct", "must be above 0 and at most 100"));
        }
        if self.redis_prefix.is_empty() {
            return Err(Self::invalid("redis_prefix", "must not be empty"));
        }
        if self.mongo_database.is_empty() || self.mongo_database.contains(['/', '.', ' ', '$']) {
            return Err(Self::invalid("mongo_database", "must be a plain database name"));
        }
        BlobLocation::parse(&self.blob_url).map_err(|e| Self::invalid("blob_url", e))?;
        if self.max_body_bytes < 1024 {
            return Err(Self::invalid("max_body_bytes", "must be at least 1024"));
        }
        if !(1..=1_000_000).contains(&self.api_rate_per_sec) {
            return Err(Self::invalid("api_rate_per_sec", "must be between 1 and 1000000"));
        }
        if !(1..=1_000_000).contains(&self.api_rate_burst) {
            return Err(Self::invalid("api_rate_burst", "must be between 1 and 1000000"));
        }
        if !(10..=30_000).contains(&self.readiness_timeout_ms) {
            return Err(Self::invalid("readiness_timeout_ms", "must be between 10 and 30000"));
        }
        if !(100..=120_000).contains(&self.client_header_timeout_ms) {
            return Err(Self::invalid("client_header_timeout_ms", "must be between 100 and 120000"));
        }
        if !(100..=600_000).contains(&self.client_body_timeout_ms) {
            return Err(Self::invalid("client_body_timeout_ms", "must be between 100 and 600000"));
        }
        if self.client_disconnect_timeout_ms > 60_000 {
            return Err(Self::invalid("client_disconnect_timeout_ms", "must be at most 60000"));
        }
        if self.keep_alive_secs > 3600 {
            return Err(Self::invalid("keep_alive_secs", "must be at most 3600"));
        }
        if !(1..=3600).contains(&self.socket_recheck_secs) {
            return Err(Self::invalid("socket_recheck_secs", "must be 1–3600"));
        }
        // The HTTP/1 parser itself refuses heads over 128 KiB with a bare 431; staying well
        // under it means every oversized head is answered by the guard, with the envelope.
        if !(1024..=65_536).contains(&self.max_header_bytes) {
            return Err(Self::invalid("max_header_bytes", "must be between 1024 and 65536"));
        }
        if self.connections_per_address > 1_000_000 {
            return Err(Self::invalid("connections_per_address", "must be at most 1000000 (0: no cap)"));
        }
        if let Some(secret) = &self.token_secret {
            if secret.expose_secret().len() < 32 {
                return Err(Self::invalid("token_secret", "must be at least 32 characters"));
            }
        }
        if let Some(key) = &self.encryption_key {
            crate::crypto::FieldKey::parse(key.expose_secret()).map_err(|e| Self::invalid("encryption_key", e))?;
        }
        if !(2..=100).contains(&self.consult_max_participants) {
            return Err(Self::invalid("consult_max_participants", "must be between 2 and 100"));
        }
        if self.booking_view_max_age_ms > 60_000 {
            return Err(Self::invalid("booking_view_max_age_ms", "must be at most 60000"));
        }
        if self.consult_reconnect_grace_secs > 600 {
            return Err(Self::invalid("consult_reconnect_grace_secs", "must be at most 600"));
        }
        if self.consult_max_duration_secs < 60 {
            return Err(Self::invalid("consult_max_duration_secs", "must be at least 60"));
        }
        if !self.turn_urls.trim().is_empty() && self.turn_secret.is_none() {
            return Err(Self::invalid("turn_secret", "required when turn_urls is set"));
        }
        if !self.webhook_url.is_empty() {
            url::Url::parse(&self.webhook_url).map_err(|e| Self::invalid("webhook_url", e.to_string()))?;
            if self.webhook_secret.is_none() {
                return Err(Self::invalid("webhook_secret", "required when webhook_url is set"));
            }
        }
        for origin in self.allowed_origins.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let u =
                url::Url::parse(origin).map_err(|e| Self::invalid("allowed_origins", format!("`{origin}`: {e}")))?;
            // Any other scheme has an opaque origin, which browsers send as `null`: allowing it
            // would allow every sandboxed page.
            if !matches!(u.scheme(), "http" | "https") || u.host().is_none() {
                return Err(Self::invalid("allowed_origins", format!("`{origin}` is not an http(s) origin")));
            }
        }
        Ok(())
    }

    /// Browser origins allowed to call the API and open sockets.
    pub fn origins(&self) -> Vec<String> {
        // Each as a browser writes it in `Origin`: lower-case scheme and host, no default port,
        // no path — so the comparison with the header can be exact.
        let mut out: Vec<String> = self
            .allowed_origins
            .split(',')
            .map(|s| s.trim().trim_end_matches('/'))
            .filter(|s| !s.is_empty())
            .map(|s| url::Url::parse(s).map(|u| u.origin().ascii_serialization()).unwrap_or_else(|_| s.to_string()))
            .collect();
        if let Ok(u) = url::Url::parse(&self.public_url) {
            out.push(u.origin().ascii_serialization());
        }
        out
    }

    /// The iOS app ids of `ios_app_ids`.
    pub fn ios_app_ids(&self) -> Vec<&str> {
        self.ios_app_ids.split(',').map(str::trim).filter(|s| !s.is_empty()).collect()
    }

    /// The Android signing-certificate fingerprints of `android_cert_fingerprints`, as
    /// written (upper-cased where they are served).
    pub fn android_cert_fingerprints(&self) -> Vec<&str> {
        self.android_cert_fingerprints.split(',').map(str::trim).filter(|s| !s.is_empty()).collect()
    }

    /// `public_url` without a trailing slash, to which paths (`/capture`) are appended.
    pub fn public_base(&self) -> &str {
        self.public_url.trim_end_matches('/')
    }

    /// This node's name.
    pub fn node_name(&self) -> String {
        self.node_id.clone().unwrap_or_else(|| {
            let host = std::fs::read_to_string("/etc/hostname").unwrap_or_default();
            format!("{}-{}", host.trim(), std::process::id())
        })
    }

    /// The text `coherency --help` prints after the usage: every setting.
    pub fn help_table() -> String {
        let mut s = String::from("Settings (TOML key, or environment variable; default):\n");
        for set in SETTINGS {
            s.push_str(&format!("  {:<26} {}\n      {} [default: {}]\n", set.key, set.env(), set.help, set.default));
        }
        s
    }
}

/// `TEAMID.bundle.id`: a 10-character team id, a dot, a reverse-DNS bundle id.
fn is_ios_app_id(s: &str) -> bool {
    let Some((team, bundle)) = s.split_once('.') else { return false };
    team.len() == 10
        && team.bytes().all(|b| b.is_ascii_uppercase() || b.is_ascii_digit())
        && !bundle.is_empty()
        && bundle.len() <= 155
        && bundle.split('.').all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'))
}

/// A Java package name of two or more segments (`health.coherency.app`).
fn is_android_package(s: &str) -> bool {
    let parts: Vec<&str> = s.split('.').collect();
    s.len() <= 150
        && parts.len() >= 2
        && parts.iter().all(|p| {
            p.bytes().next().is_some_and(|b| b.is_ascii_alphabetic())
                && p.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
        })
}

/// 32 hex bytes separated by colons.
fn is_cert_fingerprint(s: &str) -> bool {
    let bytes: Vec<&str> = s.split(':').collect();
    bytes.len() == 32 && bytes.iter().all(|b| b.len() == 2 && b.bytes().all(|c| c.is_ascii_hexdigit()))
}

/// Turns a figment error into one line naming the key and the source.
fn describe(e: figment::Error) -> String {
    let mut lines = Vec::new();
    for err in e {
        let key = err.path.join(".");
        let src = err.metadata.as_ref().map(|m| m.name.to_string()).unwrap_or_default();
        let mut kind = err.kind.to_string();
        if let figment::error::Kind::UnknownField(field, _) = &err.kind {
            kind = format!("unknown key `{field}` ({ENV_PREFIX}{})", field.to_ascii_uppercase());
        }
        if key.is_empty() {
            lines.push(format!("{kind} in {src}"));
        } else {
            lines.push(format!("`{key}` ({ENV_PREFIX}{}): {kind} in {src}", key.to_ascii_uppercase()));
        }
    }
    lines.join("; ")
}

/// A service URL whose password never prints.
#[derive(Clone, Deserialize)]
#[serde(transparent)]
pub struct ServiceUrl(SecretString);

impl ServiceUrl {
    pub fn new(s: &str) -> Self {
        Self(SecretString::from(s.to_string()))
    }
    /// The URL with its password, for connecting only.
    pub fn expose(&self) -> &str {
        self.0.expose_secret()
    }
    /// The URL with any password replaced by `***`, for messages.
    pub fn masked(&self) -> String {
        mask_url(self.expose())
    }
}

impl std::fmt::Debug for ServiceUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.masked())
    }
}

impl std::fmt::Display for ServiceUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.masked())
    }
}

/// Replaces the password in a URL with `***`.
pub fn mask_url(raw: &str) -> String {
    match url::Url::parse(raw) {
        Ok(mut u) => {
            if u.password().is_some() {
                let _ = u.set_password(Some("***"));
            }
            u.to_string()
        }
        Err(_) => "(unparseable url)".into(),
    }
}

/// Where blobs live, parsed from `blob_url`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BlobLocation {
    /// A local folder (created if missing).
    Local(std::path::PathBuf),
    /// `s3://bucket/prefix`; credentials from the standard AWS environment.
    S3 { bucket: String, prefix: String },
    /// `az://container/prefix`; credentials from the standard Azure environment.
    Azure { container: String, prefix: String },
}

impl BlobLocation {
    /// Parses `blob_url`; the message says what the URL lacks.
    pub fn parse(url: &str) -> Result<Self, String> {
        if let Some(rest) = url.strip_prefix("file://") {
            if rest.is_empty() {
                return Err("file:// needs a folder".into());
            }
            return Ok(Self::Local(std::path::PathBuf::from(rest)));
        }
        let split = |rest: &str| {
            let mut it = rest.splitn(2, '/');
            let name = it.next().unwrap_or_default().to_string();
            let prefix = it.next().unwrap_or_default().trim_matches('/').to_string();
            (name, prefix)
        };
        if let Some(rest) = url.strip_prefix("s3://") {
            let (bucket, prefix) = split(rest);
            if bucket.is_empty() {
                return Err("s3:// needs a bucket".into());
            }
            return Ok(Self::S3 { bucket, prefix });
        }
        if let Some(rest) = url.strip_prefix("az://") {
            let (container, prefix) = split(rest);
            if container.is_empty() {
                return Err("az:// needs a container".into());
            }
            return Ok(Self::Azure { container, prefix });
        }
        Err(format!("`{url}` must start with file://, s3:// or az://"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use figment::providers::Serialized;

    fn with(key: &str, value: &str) -> Result<Config, ConfigError> {
        Config::from_figment(Figment::new().merge(Serialized::default(key, value)))
    }

    #[test]
    fn defaults_are_valid() {
        Config::default().validate().unwrap();
    }

    #[test]
    fn a_stale_processing_bound_within_the_finish_deferral_is_refused() {
        let c = |stale: u64, defer: u64| {
            Config { scan_processing_stale_secs: stale, scan_finish_defer_max_ms: defer, ..Config::default() }
                .validate()
        };
        let err = c(30, 30_000).unwrap_err().to_string();
        assert!(err.contains("scan_processing_stale_secs"), "{err}");
        assert!(c(31, 30_000).is_err(), "a scan that waited the whole deferral is not stale a second later");
        assert!(c(32, 30_000).is_ok());
        assert!(c(0, 30_000).is_ok(), "0 turns the takeover off");
    }

    #[test]
    fn connection_limits_out_of_range_are_refused_naming_their_key() {
        let bad = [
            Config { client_header_timeout_ms: 0, ..Config::default() },
            Config { client_body_timeout_ms: 10, ..Config::default() },
            Config { client_disconnect_timeout_ms: 600_000, ..Config::default() },
            Config { keep_alive_secs: 86_400, ..Config::default() },
            Config { max_header_bytes: 100, ..Config::default() },
            Config { max_header_bytes: 200_000, ..Config::default() },
        ];
        let keys = [
            "client_header_timeout_ms",
            "client_body_timeout_ms",
            "client_disconnect_timeout_ms",
            "keep_alive_secs",
            "max_header_bytes",
            "max_header_bytes",
        ];
        for (c, key) in bad.iter().zip(keys) {
            let err = c.validate().unwrap_err().to_string();
            assert!(err.contains(key), "{err}");
        }
        assert!(Config { connections_per_address: 0, keep_alive_secs: 0, ..Config::default() }.validate().is_ok());
    }

    #[test]
    fn allowed_origins_are_http_origins_compared_as_browsers_write_them() {
        let c = Config {
            allowed_origins: "https://Clinic.Example:443/, http://localhost:8080".into(),
            ..Config::default()
        };
        c.validate().unwrap();
        assert_eq!(c.origins(), ["https://clinic.example", "http://localhost:8080", "http://127.0.0.1:8080"]);
        for bad in ["null", "file:///tmp", "chrome-extension://abc", "not a url"] {
            let err = Config { allowed_origins: bad.into(), ..Config::default() }.validate().unwrap_err().to_string();
            assert!(err.contains("allowed_origins"), "{bad}: {err}");
        }
    }

    #[test]
    fn app_link_ids_are_checked_and_the_android_pair_goes_together() {
        let fp = ["AB"; 32].join(":");
        let ok = Config {
            ios_app_ids: "ABCDE12345.health.coherency.app, ZYXWV98765.health.coherency.beta".into(),
            android_app_package: "health.coherency.app".into(),
            android_cert_fingerprints: format!("{fp},{}", fp.to_lowercase()),
            ..Config::default()
        };
        ok.validate().unwrap();
        assert_eq!(ok.ios_app_ids(), ["ABCDE12345.health.coherency.app", "ZYXWV98765.health.coherency.beta"]);
        for (c, key) in [
            (Config { ios_app_ids: "health.coherency.app".into(), ..Config::default() }, "ios_app_ids"),
            (Config { ios_app_ids: "abcde12345.x".into(), ..Config::default() }, "ios_app_ids"),
            (
                Config {
                    android_app_package: "coherency".into(),
                    android_cert_fingerprints: fp.clone(),
                    ..Config::default()
                },
                "android_app_package",
            ),
            (
                Config {
                    android_app_package: "health.coherency.app".into(),
                    android_cert_fingerprints: "AB:CD".into(),
                    ..Config::default()
                },
                "android_cert_fingerprints",
            ),
            (
                Config { android_app_package: "health.coherency.app".into(), ..Config::default() },
                "android_cert_fingerprints",
            ),
            (
                Config { capture_redeem_per_address_per_min: 0, ..Config::default() },
                "capture_redeem_per_address_per_min",
            ),
        ] {
            let err = c.validate().unwrap_err().to_string();
            assert!(err.contains(key), "{err}");
        }
    }

    #[test]
    fn an_unknown_key_is_rejected_with_its_name() {
        let err = with("http_adress", "127.0.0.1:1").unwrap_err().to_string();
        assert!(err.contains("http_adress"), "{err}");
    }

    #[test]
    fn a_bad_value_names_its_key() {
        let err = with("http_addr", "not an address").unwrap_err().to_string();
        assert!(err.contains("http_addr") && err.contains("COHERENCY_HTTP_ADDR"), "{err}");
        let err = Config::from_figment(Figment::new().merge(Serialized::default("shutdown_grace_secs", "soon")))
            .unwrap_err()
            .to_string();
        assert!(err.contains("shutdown_grace_secs"), "{err}");
    }

    #[test]
    fn passwords_never_print() {
        let u = ServiceUrl::new("postgres://app:hunter2@db:5432/x");
        assert_eq!(format!("{u:?}"), "postgres://app:***@db:5432/x");
        assert!(!format!("{u}").contains("hunter2"));
    }

    #[test]
    fn secrets_do_not_print_in_debug() {
        let c = Config { token_secret: Some(SecretString::from("x".repeat(40))), ..Config::default() };
        assert!(!format!("{c:?}").contains("xxxxxxxx"));
    }

    #[test]
    fn every_setting_in_the_table_is_a_real_key() {
        for s in SETTINGS {
            let value = match s.key {
                "trust_forwarded_for" | "consult_media" | "webrtc_loopback_only" => "true",
                "database_max_connections"
                | "max_body_bytes"
                | "readiness_timeout_ms"
                | "client_header_timeout_ms"
                | "client_body_timeout_ms"
                | "client_body_min_rate"
                | "client_disconnect_timeout_ms"
                | "keep_alive_secs"
                | "socket_recheck_secs"
                | "max_header_bytes"
                | "connections_per_address"
                | "shutdown_grace_secs"
                | "drain_delay_ms"
                | "api_rate_per_sec"
                | "api_rate_burst"
                | "consult_max_participants"
                | "consult_empty_timeout_secs"
                | "consult_max_duration_secs"
                | "consult_reconnect_grace_secs"
                | "booking_view_max_age_ms"
                | "capture_redeem_per_address_per_min"
                | "scan_live_fusion_max_scans"
                | "scan_finish_defer_max_ms"
                | "scan_processing_stale_secs"
                | "turn_ttl_secs" => "1024",
                "healing_on_track_reduction_pct" => "50",
                _ => "x",
            };
            let fig = Figment::new().merge(Serialized::default(s.key, value));
            let r: Result<Config, _> = fig.extract();
            if let Err(e) = r {
                assert!(!e.to_string().contains("unknown field"), "{}: {e}", s.key);
            }
        }
    }
}
