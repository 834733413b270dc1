//! The HTTP transport: the listener, the connection guard in front of the HTTP/1 parser, the
//! per-address connection cap and the request-body deadline. Everything a client can send
//! before a route runs is bounded here, and everything the server answers on its own (a
//! head that does not parse, arrives too slowly or is too large; one connection too many)
//! carries the same JSON error envelope as the routes' answers.
//!
//! Why not `actix_web::HttpServer`: it hands the socket straight to actix-http's dispatcher,
//! which answers a malformed, oversized or slow request head itself, with an empty body, before
//! any middleware runs. Here the server is assembled from the same parts (actix-server's
//! listener, actix-http's `HttpService`) with [`conn::Guarded`] between the socket and the
//! dispatcher: it reads every request head with actix-http's own parser before the dispatcher
//! does, and keeps a head the dispatcher would refuse from ever reaching it (see `conn`).

pub mod body;
mod conn;
mod peers;

use std::net::TcpListener;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use actix_http::{HttpService, KeepAlive, Request, Response};
use actix_server::Server;
use actix_service::{
    fn_factory, fn_service, map_config, IntoServiceFactory, Service, ServiceFactory, ServiceFactoryExt,
};
use actix_web::body::MessageBody;
use actix_web::dev::AppConfig;
use bytes::Bytes;
use coherency_protocol::error::{Code, ErrorBody, ErrorDetail};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::config::Config;

pub use peers::Peers;

/// The connection and request limits, from the configuration.
#[derive(Debug, Clone)]
pub struct Limits {
    /// A request head must be complete this long after it started (the connection's opening,
    /// for the first).
    pub header_timeout: Duration,
    /// Largest request line plus headers.
    pub max_header_bytes: usize,
    /// A body gets this long, plus a second per `body_min_rate` bytes received.
    pub body_timeout: Duration,
    /// Bytes per second that earn a slow body more time; 0: none.
    pub body_min_rate: u64,
    /// How long a closing connection is still read (and discarded) so the answer arrives.
    pub disconnect_timeout: Duration,
    /// Idle time between requests before the connection closes; zero: one request each.
    pub keep_alive: Duration,
    /// Open connections per client address; 0: no cap.
    pub per_address: usize,
}

impl Limits {
    pub fn from_config(c: &Config) -> Self {
        Self {
            header_timeout: Duration::from_millis(c.client_header_timeout_ms),
            max_header_bytes: c.max_header_bytes,
            body_timeout: Duration::from_millis(c.client_body_timeout_ms),
            body_min_rate: c.client_body_min_rate,
            disconnect_timeout: Duration::from_millis(c.client_disconnect_timeout_ms),
            keep_alive: Duration::from_secs(c.keep_alive_secs),
            per_address: c.connections_per_address,
        }
    }

    fn keep_alive(&self) -> KeepAlive {
        if self.keep_alive.is_zero() {
            KeepAlive::Disabled
        } else {
            KeepAlive::Timeout(self.keep_alive)
        }
    }
}

/// How the server runs: workers stop after `grace` seconds of draining; signals are the
/// application's to handle.
pub struct Serving {
    pub limits: Limits,
    pub grace_secs: u64,
}

/// Builds the HTTP server on `listener`, serving the application `factory` makes (once per
/// worker), behind the connection guard and the per-address cap.
pub fn serve<F, I, S, B>(listener: TcpListener, factory: F, serving: Serving) -> std::io::Result<Server>
where
    F: Fn() -> I + Send + Clone + 'static,
    I: IntoServiceFactory<S, Request>,
    S: ServiceFactory<Request, Config = AppConfig> + 'static,
    S::Error: Into<actix_web::Error> + 'static,
    S::InitError: std::fmt::Debug,
    S::Response: Into<Response<B>> + 'static,
    <S::Service as Service<Request>>::Future: 'static,
    S::Service: 'static,
    B: MessageBody + 'static,
{
    let addr = listener.local_addr()?;
    let limits = Arc::new(serving.limits);
    let peers = Peers::default();
    let builder = Server::build().disable_signals().shutdown_timeout(serving.grace_secs);
    let drain = builder.graceful_shutdown_signal();
    builder
        .listen("coherency-http", listener, move || {
            let limits = limits.clone();
            let peers = peers.clone();
            let drain = drain.clone();
            let app = factory().into_factory().map_err(|err| err.into().error_response());
            let h1 = HttpService::build()
                .keep_alive(limits.keep_alive())
                // A backstop only: the guard answers a slow first head before this fires.
                .client_request_timeout(limits.header_timeout + Duration::from_secs(1))
                .client_disconnect_timeout(limits.disconnect_timeout)
                // A client that stops sending still gets the answers to what it sent (and the
                // guard's answer, written when the dispatcher closes the connection).
                .h1_allow_half_closed(true)
                .local_addr(addr)
                .graceful_shutdown_signal(move || {
                    let drain = drain.clone();
                    async move { drain.notified().await }
                })
                .h1(map_config(app, |_| AppConfig::default()));
            fn_factory(move || {
                let h1 = h1.new_service(());
                let limits = limits.clone();
                let peers = peers.clone();
                async move {
                    let h1 = Rc::new(h1.await?);
                    let codec = actix_http::ServiceConfig::default();
                    Ok::<_, ()>(fn_service(move |io: TcpStream| {
                        let h1 = h1.clone();
                        let limits = limits.clone();
                        let peers = peers.clone();
                        let codec = codec.clone();
                        async move {
                            let peer = io.peer_addr().ok();
                            // Small, latency-critical messages (scan acks, board deltas,
                            // signalling) must not wait for the peer's delayed ACK (Nagle):
                            // without this an ack sat until the phone's next frame carried
                            // the TCP ACK, one frame interval later.
                            let _ = io.set_nodelay(true);
                            let slot = match peer {
                                Some(a) => match peers.admit(a.ip(), limits.per_address) {
                                    Some(slot) => Some(slot),
                                    None => {
                                        refuse(io, &limits).await;
                                        return Ok(());
                                    }
                                },
                                None => None,
                            };
                            h1.call((conn::Guarded::new(io, limits, codec, slot), peer)).await
                        }
                    }))
                }
            })
        })
        .map(|b| b.run())
}

/// A complete HTTP/1.1 error answer in the envelope, ending the connection. `request_id` is
/// fresh: no request was read, but the id ties the answer to the log line.
fn error_response(code: Code, message: &str, retry_after: Option<u64>) -> (Bytes, String) {
    let request_id = uuid::Uuid::new_v4().to_string();
    let body = ErrorBody {
        error: ErrorDetail {
            code: code.as_str().into(),
            message: message.into(),
            request_id: Some(request_id.clone()),
            field: None,
        },
    };
    let json = serde_json::to_string(&body).unwrap_or_default();
    let status =
        actix_web::http::StatusCode::from_u16(code.http_status()).unwrap_or(actix_web::http::StatusCode::BAD_REQUEST);
    let mut head = format!(
        "HTTP/1.1 {} {}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\ndate: {}\r\nx-request-id: {request_id}\r\n",
        status.as_str(),
        status.canonical_reason().unwrap_or(""),
        json.len(),
        actix_web::http::header::HttpDate::from(std::time::SystemTime::now()),
    );
    if let Some(secs) = retry_after {
        head.push_str(&format!("retry-after: {secs}\r\n"));
    }
    head.push_str("\r\n");
    head.push_str(&json);
    (Bytes::from(head), request_id)
}

/// Answers a connection over the per-address cap with `429 too_many_connections` and closes
/// it, reading what the client already sent for at most the disconnect timeout so the answer
/// is not lost to a reset.
async fn refuse(mut io: TcpStream, limits: &Limits) {
    let (bytes, request_id) =
        error_response(Code::TooManyConnections, "too many open connections from this address", Some(1));
    tracing::info!(request_id, "connection refused: too many from one address");
    let linger = limits.disconnect_timeout.max(Duration::from_millis(100));
    let _ = tokio::time::timeout(linger, async {
        io.write_all(&bytes).await?;
        io.shutdown().await?;
        let mut sink = [0u8; 4096];
        let mut left = conn::DRAIN_CAP;
        while left > 0 {
            let n = io.read(&mut sink).await?;
            if n == 0 {
                break;
            }
            left = left.saturating_sub(n);
        }
        Ok::<_, std::io::Error>(())
    })
    .await;
}
