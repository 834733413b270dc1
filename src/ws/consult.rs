//! `GET /v1/consults/{id}/signal`: the consult signalling socket (JSON text frames,
//! `docs/protocol.md`). Before the upgrade: Origin, credentials, `consults:join`, and the
//! caller's part in the consult; the room then seats the connection (a patient connecting
//! checks in). A denied or removed caller, or an ended consult, is refused before the upgrade.
//! After it, this task is a pump: it parses frames, forwards them to the `Room`, and writes
//! what the room puts in its outbox. It always tells the room when it ends, so the seat is
//! held for the reconnect grace period and then released.

use std::time::Duration;

use actix_web::{web, HttpRequest, HttpResponse};
use actix_ws::{CloseCode, CloseReason, Message};
use coherency_actors::room::Outbound;
use coherency_protocol::consult::{ClientSignal, ParticipantRole, ServerSignal, MAX_SIGNAL_FRAME};
use coherency_protocol::ids::ConsultId;
use coherency_protocol::Code;
use futures_util::StreamExt;
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::auth::{self, Permission};
use crate::error::ApiError;
use crate::services::consults::{Consults, VisibleConsult};
use crate::state::AppState;

/// How often the server pings.
const HEARTBEAT: Duration = Duration::from_secs(5);
/// A client silent this long is dropped (its seat is kept for the grace period).
const CLIENT_TIMEOUT: Duration = Duration::from_secs(20);
/// How often the session behind the socket is re-checked (a backstop to the revocation bus).
const RECHECK: Duration = Duration::from_secs(30);

/// Opens the consult's signalling socket.
#[utoipa::path(get, path = "/v1/consults/{id}/signal", tag = "consults", security(("bearer" = ["consults:join"])),
    params(("id" = uuid::Uuid, Path, description = "consult id"),
           ("ticket" = Option<String>, Query, description = "single-use ticket from POST /v1/auth/ws-ticket (browsers)")),
    responses((status = 101, description = "websocket; see docs/protocol.md"),
              (status = 401), (status = 403, description = "forbidden (denied or removed), origin_not_allowed, mfa_required"),
              (status = 404, description = "no such consult visible to the caller"),
              (status = 409, description = "consult_ended, check_in_too_early, room_full"),
              (status = 503, description = "unavailable: draining")))]
#[tracing::instrument(skip_all, fields(room_id = tracing::field::Empty))]
pub async fn signal(
    state: web::Data<AppState>,
    req: HttpRequest,
    body: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let who = super::authenticate(&req, &state).await?;
    auth::authorize(&state, &req, &who, Permission::ConsultsJoin).await?;
    let id: ConsultId = req.match_info().get("id").and_then(|s| s.parse().ok()).ok_or_else(ApiError::not_found)?;
    tracing::Span::current().record("room_id", tracing::field::display(id));
    let VisibleConsult { consult: c, role } = state.consults.visible(&who, id).await?;
    if role == ParticipantRole::Patient {
        Consults::check_in_open(&c, state.clock.now())?;
    }
    if state.lifecycle.is_draining() {
        return Err(ApiError::unavailable("the server is draining; reconnect"));
    }
    let room = crate::consults::room(&state, &c).await?;
    let (tx, mut rx) = mpsc::unbounded_channel::<Outbound>();
    let ice_servers = crate::consults::ice_servers_for(&state.config, who.user_id, state.clock.now());
    let conn = room.connect(&state, who.user_id, role, ice_servers, tx).await?;
    let (response, mut session, stream) = match actix_ws::handle(&req, body) {
        Ok(x) => x,
        Err(_) => {
            conn.disconnect(&state).await;
            return Err(ApiError::new(Code::BadRequest, "expected a websocket upgrade"));
        }
    };
    auth::audit(
        &state,
        &req,
        Some(&who),
        crate::audit::AuditEvent::new("consult.signal", "success").target("consult", c.id),
    )
    .await?;
    let mut stream = stream.max_frame_size(MAX_SIGNAL_FRAME);
    let mut guard = state.sockets.register(who.user_id, who.session_id);
    let mut shutdown = state.lifecycle.subscribe();
    let gauge = state.metrics.websockets_open.with_label_values(&["consult"]);
    gauge.inc();
    let state2 = state.clone();
    actix_web::rt::spawn(async move {
        let mut beat = tokio::time::interval(HEARTBEAT);
        let mut recheck = tokio::time::interval(RECHECK);
        recheck.tick().await;
        let mut last_heard = Instant::now();
        let error = |code: Code, message: &str| {
            serde_json::to_string(&ServerSignal::Error { code: code.as_str().into(), message: message.into() })
                .unwrap_or_default()
        };
        let reason: Option<CloseReason> = loop {
            tokio::select! {
                out = rx.recv() => match out {
                    Some(Outbound::Signal(s)) => {
                        let text = serde_json::to_string(&s).unwrap_or_default();
                        if session.text(text).await.is_err() { break None; }
                    }
                    Some(Outbound::Close(code, why)) => break Some(CloseReason { code: CloseCode::Other(code), description: Some(why.into_owned()) }),
                    None => break Some(CloseReason { code: CloseCode::Away, description: Some("room closed".into()) }),
                },
                msg = stream.next() => match msg {
                    Some(Ok(Message::Text(t))) => {
                        last_heard = Instant::now();
                        match super::parse_text::<ClientSignal>(&t, "not a signalling message") {
                            Ok(m) => conn.send(&state2, m).await,
                            Err(r) => { let _ = session.text(error(r.code, &r.message)).await; }
                        }
                    }
                    Some(Ok(Message::Ping(b))) => { last_heard = Instant::now(); let _ = session.pong(&b).await; }
                    Some(Ok(Message::Pong(_))) => last_heard = Instant::now(),
                    Some(Ok(Message::Close(r))) => break r,
                    Some(Ok(_)) => last_heard = Instant::now(),
                    Some(Err(_)) => break Some(CloseReason { code: CloseCode::Size, description: Some("frame too large".into()) }),
                    None => break None,
                },
                _ = guard.closed.changed() => {
                    let code = guard.closed.borrow().unwrap_or(4002);
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
        conn.disconnect(&state2).await;
        let _ = session.close(reason).await;
        gauge.dec();
        drop(guard);
    });
    Ok(response)
}
