//! `GET /v1/ws`: the per-user event socket (JSON text frames). It greets, keeps a heartbeat,
//! and carries notifications addressed to the user; it closes with 4002 when the session
//! ends anywhere, and with 1001 when the node drains.

use std::time::{Duration, Instant};

use actix_web::{web, HttpRequest, HttpResponse};
use actix_ws::{CloseCode, CloseReason, Message};
use futures_util::StreamExt;
use serde_json::json;

use crate::error::ApiError;
use crate::state::AppState;

/// How often the server pings.
pub const HEARTBEAT: Duration = Duration::from_secs(5);
/// A client silent this long is dropped.
pub const CLIENT_TIMEOUT: Duration = Duration::from_secs(15);
/// Largest text frame a client may send.
pub const MAX_FRAME: usize = 4 * 1024;
/// How often the session behind the socket is re-checked (a backstop to the bus).
pub const RECHECK: Duration = Duration::from_secs(30);

/// Opens the caller's event socket: a websocket of JSON text frames that carries the events
/// addressed to the user.
///
/// Server → client: `{"type":"welcome","user_id","role"}` on open; `{"type":"pong"}` after a
/// client's `ping` text; `{"type":"session_ended"}` just before a close with code 4002 when
/// the session ends on any node (logout, logout-all, revocation, expiry; re-checked every
/// 30 s). Client → server: `ping` (text) or websocket pings; text frames over 4 KiB close the
/// socket (1009). Any other text is answered `{"type":"error","code","message"}` and the
/// socket stays open: `invalid_field` when it holds a character no text may
/// (`docs/security.md`, "Input bounds"), otherwise `malformed_message`. The server pings every 5 s and closes a client silent for 15 s (1001), and
/// closes with 1001 when the node drains.
///
/// Credentials: `?ticket=` (browsers; single use, 30 s) or `Authorization: Bearer` (native
/// clients). A browser's `Origin` must be one the server allows.
#[utoipa::path(get, path = "/v1/ws", tag = "auth", security(("bearer" = ["self"])),
    params(("ticket" = Option<String>, Query, description = "single-use ticket from POST /v1/auth/ws-ticket (browsers)")),
    responses(
        (status = 101, description = "Switching Protocols: the websocket is open (frames above)"),
        (status = 400, description = "bad_request: not a websocket handshake (`Upgrade: websocket`, `Sec-WebSocket-Key`, version 13)"),
        (status = 401, description = "unauthenticated, token_expired, token_revoked: no valid ticket or bearer token"),
        (status = 403, description = "origin_not_allowed: a browser page from an origin the server does not allow")))]
pub async fn socket(
    state: web::Data<AppState>,
    req: HttpRequest,
    body: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let who = super::authenticate(&req, &state).await?;
    crate::auth::authorize(&state, &req, &who, crate::auth::Permission::SelfService).await?;
    let (response, mut session, stream) =
        actix_ws::handle(&req, body).map_err(|e| ApiError::new(coherency_protocol::Code::BadRequest, e.to_string()))?;
    let mut stream = stream.max_frame_size(MAX_FRAME);
    let mut guard = state.sockets.register(who.user_id, who.session_id);
    let mut shutdown = state.lifecycle.subscribe();
    let gauge = state.metrics.websockets_open.with_label_values(&["events"]);
    gauge.inc();
    let state2 = state.clone();
    actix_web::rt::spawn(async move {
        let _ = session.text(json!({"type": "welcome", "user_id": who.user_id, "role": who.role}).to_string()).await;
        let mut beat = tokio::time::interval(HEARTBEAT);
        let mut recheck = tokio::time::interval(RECHECK);
        recheck.tick().await;
        let mut last_heard = Instant::now();
        let reason: Option<CloseReason> = loop {
            tokio::select! {
                msg = stream.next() => match msg {
                    Some(Ok(Message::Ping(b))) => { last_heard = Instant::now(); let _ = session.pong(&b).await; }
                    Some(Ok(Message::Pong(_))) => last_heard = Instant::now(),
                    Some(Ok(Message::Text(t))) => {
                        last_heard = Instant::now();
                        let reply = match coherency_protocol::text::check(&t, coherency_protocol::text::Lines::Many) {
                            Ok(()) if t.trim() == "ping" => json!({"type": "pong"}),
                            Ok(()) => json!({"type": "error", "code": "malformed_message", "message": "the only client message is ping"}),
                            Err(why) => json!({"type": "error", "code": "invalid_field", "message": format!("the message {why}")}),
                        };
                        let _ = session.text(reply.to_string()).await;
                    }
                    Some(Ok(Message::Close(r))) => break r,
                    Some(Ok(_)) => last_heard = Instant::now(),
                    Some(Err(_)) => break Some(CloseReason { code: CloseCode::Size, description: Some("frame too large".into()) }),
                    None => break None,
                },
                _ = guard.closed.changed() => {
                    let code = guard.closed.borrow().unwrap_or(4002);
                    let _ = session.text(json!({"type":"session_ended"}).to_string()).await;
                    break Some(CloseReason { code: CloseCode::Other(code), description: Some("session ended".into()) });
                }
                _ = shutdown.changed() => break Some(CloseReason { code: CloseCode::Away, description: Some("server going away".into()) }),
                _ = recheck.tick() => {
                    if crate::auth::session_principal(&state2, who.session_id).await.is_err() {
                        break Some(CloseReason { code: CloseCode::Other(4002), description: Some("session ended".into()) });
                    }
                }
                _ = beat.tick() => {
                    if last_heard.elapsed() > CLIENT_TIMEOUT {
                        break Some(CloseReason { code: CloseCode::Away, description: Some("heartbeat timeout".into()) });
                    }
                    if session.ping(b"").await.is_err() { break None; }
                }
            }
        };
        let _ = session.close(reason).await;
        gauge.dec();
        drop(guard);
    });
    Ok(response)
}
