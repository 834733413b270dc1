//! `GET /v1/ws`: the per-user event socket (JSON text frames), run by the text pump
//! (`super::pump`). It greets, keeps a heartbeat, and answers the client's `ping`; it closes
//! with 4002 when the session ends anywhere, and with 1001 when the node drains.

use actix_web::{web, HttpRequest, HttpResponse};
use actix_ws::Session;
use coherency_protocol::Code;
use serde_json::json;
use uuid::Uuid;

use super::pump::{self, End, Step, TextSocket};
use crate::auth::Role;
use crate::error::ApiError;
use crate::state::AppState;

/// Largest text message a client may send.
pub const MAX_FRAME: usize = 4 * 1024;

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
    let (response, session, stream) =
        actix_ws::handle(&req, body).map_err(|e| ApiError::new(coherency_protocol::Code::BadRequest, e.to_string()))?;
    let messages = stream.max_frame_size(MAX_FRAME).aggregate_continuations().max_continuation_size(MAX_FRAME);
    let socket = Events { user_id: who.user_id.as_uuid(), role: who.role };
    pump::spawn(state.into_inner(), &who, session, messages, socket);
    Ok(response)
}

/// The event socket of one user's session.
struct Events {
    user_id: Uuid,
    role: Role,
}

impl TextSocket for Events {
    const KIND: &'static str = "events";
    /// Nothing is addressed to the socket by an actor yet.
    type Out = std::convert::Infallible;

    fn greeting(&self) -> Option<String> {
        Some(json!({"type": "welcome", "user_id": self.user_id, "role": self.role}).to_string())
    }

    async fn outbound(&mut self) -> Option<Self::Out> {
        std::future::pending().await
    }

    async fn forward(&mut self, _: &mut Session, out: Option<Self::Out>) -> Step {
        match out {
            Some(never) => match never {},
            None => Ok(()),
        }
    }

    async fn text(&mut self, session: &mut Session, text: &str) -> Step {
        let reply = match coherency_protocol::text::check(text, coherency_protocol::text::Lines::Many) {
            Ok(()) if text.trim() == "ping" => json!({"type": "pong"}),
            Ok(()) => {
                json!({"type": "error", "code": "malformed_message", "message": "the only client message is ping"})
            }
            Err(why) => json!({"type": "error", "code": "invalid_field", "message": format!("the message {why}")}),
        };
        let _ = session.text(reply.to_string()).await;
        Ok(())
    }

    fn session_ended(&mut self, _: Code) -> End {
        pump::session_ended().after(json!({"type": "session_ended"}).to_string())
    }

    async fn leave(&mut self) {}
}
