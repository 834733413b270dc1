//! `GET /v1/consults/{id}/signal`: the consult signalling socket (JSON text frames,
//! `docs/protocol.md`). Before the upgrade: Origin, credentials, `consults:join`, and the
//! caller's part in the consult; the room then seats the connection (a patient connecting
//! checks in). A denied or removed caller, or an ended consult, is refused before the upgrade.
//! After it, the socket runs the text pump (`super::pump`): it parses frames, forwards them to
//! the `Room`, and writes what the room puts in its outbox. It always tells the room when it
//! ends, so the seat is held for the reconnect grace period and then released.

use actix_web::{web, HttpRequest, HttpResponse};
use actix_ws::Session;
use coherency_actors::room::Outbound;
use coherency_protocol::consult::{ClientSignal, ParticipantRole, ServerSignal, MAX_SIGNAL_FRAME};
use coherency_protocol::ids::ConsultId;
use coherency_protocol::Code;
use tokio::sync::mpsc;

use super::pump::{self, End, Step, TextSocket};
use crate::auth::{self, Permission};
use crate::cluster::rooms::Conn;
use crate::error::ApiError;
use crate::services::consults::{Consults, VisibleConsult};
use crate::state::AppState;

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
    let room = state.consult_rooms.room(&c).await?;
    let (tx, rx) = mpsc::unbounded_channel::<Outbound>();
    let ice_servers = crate::consults::ice_servers_for(&state.config, who.user_id, state.clock.now());
    let conn = room.connect(&state.cluster, who.user_id.as_uuid(), role, ice_servers, tx).await?;
    let (response, session, stream) = match actix_ws::handle(&req, body) {
        Ok(x) => x,
        Err(_) => {
            conn.disconnect(&state.cluster).await;
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
    let messages =
        stream.max_frame_size(MAX_SIGNAL_FRAME).aggregate_continuations().max_continuation_size(MAX_SIGNAL_FRAME);
    let socket = Signalling { state: state.clone(), conn, rx };
    pump::spawn(state.into_inner(), &who, session, messages, socket);
    Ok(response)
}

/// One seat's signalling: client frames go to the room, the room's outbox comes back.
struct Signalling {
    state: web::Data<AppState>,
    conn: Conn,
    rx: mpsc::UnboundedReceiver<Outbound>,
}

impl TextSocket for Signalling {
    const KIND: &'static str = "consult";
    type Out = Outbound;

    /// A participant in a consult is in a call: the session lives as long as the socket
    /// answers (up to the session's absolute limit).
    fn keeps_session_alive(&self) -> bool {
        true
    }

    async fn outbound(&mut self) -> Option<Outbound> {
        self.rx.recv().await
    }

    async fn forward(&mut self, session: &mut Session, out: Option<Outbound>) -> Step {
        match out {
            Some(Outbound::Signal(s)) => {
                let text = serde_json::to_string(&s).unwrap_or_default();
                session.text(text).await.map_err(|_| End::gone())
            }
            Some(Outbound::Close(code, why)) => Err(End::close(code, why.into_owned())),
            None => Err(End::close(pump::CLOSE_GOING_AWAY, "room closed")),
        }
    }

    async fn text(&mut self, session: &mut Session, text: &str) -> Step {
        match super::parse_text::<ClientSignal>(text, "not a signalling message") {
            Ok(m) => self.conn.send(&self.state.cluster, m).await,
            Err(r) => {
                let error = ServerSignal::Error { code: r.code.as_str().into(), message: r.message };
                let _ = session.text(serde_json::to_string(&error).unwrap_or_default()).await;
            }
        }
        Ok(())
    }

    fn session_ended(&mut self, _: Code) -> End {
        pump::session_ended()
    }

    /// The room keeps the seat for the reconnect grace period, then releases it.
    async fn leave(&mut self) {
        self.conn.disconnect(&self.state.cluster).await;
    }
}
