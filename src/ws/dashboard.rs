//! `GET /v1/dashboard/ws`: the live board socket (JSON text, `docs/dashboard.md`).
//!
//! Before the upgrade: Origin, credentials (ticket or bearer), `dashboard:view` (MFA for
//! staff); the viewer's scope is resolved (admins: the clinic; clinicians: their calendar
//! and their care-team patients; patients: themself) and the view is audited. After it,
//! the socket runs the text pump (`super::pump`): it waits for `hello`, subscribes to the
//! node's `DashboardHub` (snapshot, or the missed deltas when resuming) and writes what the hub
//! sends, adding the patient's name for this viewer only. Heartbeats carry the resume position;
//! the session re-check also re-reads the viewer's scope.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Instant;

use actix_web::{web, HttpRequest, HttpResponse};
use actix_ws::{CloseReason, Session};
use coherency_actors::dashboard::{HubOut, Scope, SubId, Subscribe, Unsubscribe};
use coherency_protocol::dashboard::{
    Change, ClientMsg, Delta, Item, Position, Section, ServerMsg, DASHBOARD_PROTOCOL_VERSION,
    MAX_CLIENT_MESSAGES_PER_SEC, MAX_CLIENT_MESSAGE_BYTES,
};
use coherency_protocol::Code;
use tokio::sync::mpsc;
use uuid::Uuid;

use super::pump::{self, End, Step, TextSocket};
use crate::audit::AuditEvent;
use crate::auth::{self, Permission, Principal, Role};
use crate::error::ApiError;
use crate::state::AppState;

/// Messages the hub may queue for one socket before it is dropped as too slow.
pub const OUTBOX: usize = 1024;
/// Close code when the socket fell behind (the client resumes).
const CLOSE_TRY_AGAIN: u16 = 1013;

/// Opens the live board socket.
#[utoipa::path(get, path = "/v1/dashboard/ws", tag = "dashboard", security(("bearer" = ["dashboard:view"])),
    params(("ticket" = Option<String>, Query, description = "single-use ticket from POST /v1/auth/ws-ticket (browsers)")),
    responses((status = 101, description = "websocket; see docs/dashboard.md"),
              (status = 401, description = "unauthenticated, token_expired, token_revoked"),
              (status = 403, description = "forbidden, origin_not_allowed, mfa_required"),
              (status = 503, description = "unavailable: draining")))]
#[tracing::instrument(skip_all)]
pub async fn socket(
    state: web::Data<AppState>,
    req: HttpRequest,
    body: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let who = super::authenticate(&req, &state).await?;
    auth::authorize(&state, &req, &who, Permission::DashboardView).await?;
    if state.lifecycle.is_draining() {
        return Err(ApiError::unavailable("the server is draining; reconnect"));
    }
    let scope = scope_for(&state, &who).await?;
    let (response, session, messages) =
        actix_ws::handle(&req, body).map_err(|_| ApiError::new(Code::BadRequest, "expected a websocket upgrade"))?;
    auth::audit(&state, &req, Some(&who), AuditEvent::new("dashboard.view", "success")).await?;
    let messages = messages
        .max_frame_size(MAX_CLIENT_MESSAGE_BYTES)
        .aggregate_continuations()
        .max_continuation_size(MAX_CLIENT_MESSAGE_BYTES);
    let state = state.into_inner();
    let board =
        Board { state: state.clone(), who: who.clone(), scope, rx: None, sub: None, position: 0, rate: Rate::full() };
    pump::spawn(state, &who, session, messages, board);
    Ok(response)
}

/// What `who` may see on the board.
pub async fn scope_for(state: &AppState, who: &Principal) -> Result<Scope, ApiError> {
    Ok(match who.role {
        Role::Admin => Scope::Clinic,
        Role::Patient => Scope::Patient { id: who.patient_id.ok_or_else(ApiError::forbidden)?.as_uuid() },
        Role::Clinician => {
            let patients: Vec<Uuid> = sqlx::query_scalar!(
                "SELECT patient_id FROM care_team WHERE clinician_id = $1 LIMIT 100000",
                who.user_id.as_uuid()
            )
            .fetch_all(&state.stores.pg)
            .await?;
            Scope::Clinician { id: who.user_id.as_uuid(), patients: patients.into_iter().collect::<HashSet<_>>() }
        }
    })
}

/// A token bucket over client messages.
struct Rate {
    tokens: f64,
    at: Instant,
}

impl Rate {
    fn full() -> Self {
        Self { tokens: f64::from(MAX_CLIENT_MESSAGES_PER_SEC), at: Instant::now() }
    }

    fn allow(&mut self) -> bool {
        let rate = f64::from(MAX_CLIENT_MESSAGES_PER_SEC);
        self.tokens = (self.tokens + self.at.elapsed().as_secs_f64() * rate).min(rate);
        self.at = Instant::now();
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// One viewer's board: before `hello` it waits for it; after, it carries the hub's messages.
struct Board {
    state: Arc<AppState>,
    who: Principal,
    scope: Scope,
    /// The hub's messages for this board, once subscribed.
    rx: Option<mpsc::Receiver<HubOut>>,
    sub: Option<SubId>,
    /// Everything up to this hub seq has been sent (the client's resume position).
    position: u64,
    rate: Rate,
}

/// The board's goodbye: an `error` frame, then the close.
fn refuse(code: Code, message: &str, close: u16) -> End {
    let msg = ServerMsg::Error { code: code.as_str().to_string(), message: message.to_string() };
    End::close(close, message).after(msg.to_json())
}

impl Board {
    async fn send(&mut self, session: &mut Session, msg: &ServerMsg) -> Step {
        session.text(msg.to_json()).await.map_err(|_| End::close(pump::CLOSE_GOING_AWAY, "socket closed"))
    }

    /// Subscribes to the hub in the current scope; `resume` asks for the missed deltas.
    async fn subscribe(&mut self, resume: Option<Position>) -> Step {
        let (tx, rx) = mpsc::channel(OUTBOX);
        match self.state.dashboard.send(Subscribe { scope: self.scope.clone(), resume, tx }).await {
            Ok(Some(id)) => {
                self.sub = Some(id);
                self.rx = Some(rx);
                Ok(())
            }
            Ok(None) | Err(_) => Err(refuse(Code::Unavailable, "the dashboard is unavailable; retry", CLOSE_TRY_AGAIN)),
        }
    }

    /// Adds the patient's name to an item, and a scan's wound (from the node's cache).
    async fn named(&self, mut item: Item) -> Item {
        if let Some(p) = item.patient_id {
            item.patient_name = self.state.patient_names.get(&self.state.stores.pg, p).await;
        }
        if item.section == Section::Scans {
            item.wound = self.state.patient_names.wound_of_scan(&self.state.stores.pg, item.id).await.map(Box::new);
        }
        item
    }
}

impl TextSocket for Board {
    const KIND: &'static str = "dashboard";
    type Out = HubOut;

    fn is_open(&self) -> bool {
        self.rx.is_some()
    }

    fn late(&mut self) -> End {
        refuse(Code::MalformedMessage, "no hello in time", 1008)
    }

    async fn outbound(&mut self) -> Option<HubOut> {
        match &mut self.rx {
            Some(rx) => rx.recv().await,
            None => std::future::pending().await,
        }
    }

    async fn forward(&mut self, session: &mut Session, out: Option<HubOut>) -> Step {
        let msg = match out {
            Some(HubOut::Position(seq)) => {
                self.position = self.position.max(seq);
                return Ok(());
            }
            Some(HubOut::Msg(m)) => m,
            None => return Err(refuse(Code::Unavailable, "the board fell behind; resume", CLOSE_TRY_AGAIN)),
        };
        let msg = match &*msg {
            ServerMsg::Snapshot(s) => {
                let mut s = s.clone();
                let mut items = Vec::with_capacity(s.items.len());
                for i in std::mem::take(&mut s.items) {
                    items.push(self.named(i).await);
                }
                s.items = items;
                self.position = s.seq;
                ServerMsg::Snapshot(s)
            }
            ServerMsg::Delta(Delta { seq, change: Change::Upsert { item } }) => {
                self.position = *seq;
                let item = self.named(item.clone()).await;
                ServerMsg::Delta(Delta { seq: *seq, change: Change::Upsert { item } })
            }
            ServerMsg::Delta(d) => {
                self.position = d.seq;
                (*msg).clone()
            }
            ServerMsg::Resumed { from_seq, .. } => {
                self.position = *from_seq;
                (*msg).clone()
            }
            other => other.clone(),
        };
        self.send(session, &msg).await
    }

    async fn text(&mut self, session: &mut Session, text: &str) -> Step {
        if !self.rate.allow() {
            return Err(refuse(Code::RateLimited, "too many messages", 1008));
        }
        let msg = super::parse_text::<ClientMsg>(text, "unreadable message").map_err(|r| {
            let error = ServerMsg::Error { code: r.code.as_str().to_string(), message: r.message };
            End::close(1008, "refused message").after(error.to_json())
        })?;
        match (msg, self.is_open()) {
            (ClientMsg::Hello { v, resume }, false) => {
                if v != DASHBOARD_PROTOCOL_VERSION {
                    return Err(refuse(Code::UnsupportedVersion, "unsupported dashboard protocol version", 1008));
                }
                self.subscribe(resume).await
            }
            (_, false) => Err(refuse(Code::MalformedMessage, "the first message must be hello", 1008)),
            (ClientMsg::Ping, true) => self.send(session, &ServerMsg::Pong).await,
            (ClientMsg::Pong, true) => Ok(()),
            (ClientMsg::Hello { .. }, true) => Err(refuse(Code::MalformedMessage, "hello was already received", 1008)),
        }
    }

    fn binary(&mut self) -> Step {
        Err(refuse(Code::MalformedMessage, "binary messages are not part of this protocol", 1003))
    }

    fn broken(&mut self) -> End {
        refuse(Code::FrameTooLarge, "message too large or malformed", 1009)
    }

    fn closed(&mut self, _: Option<CloseReason>) -> End {
        End::close(1000, "closed by the client")
    }

    /// The heartbeat is the board's own `ping`, carrying the resume position.
    async fn ping(&mut self, session: &mut Session) -> bool {
        let seq = self.position;
        session.text(ServerMsg::Ping { seq }.to_json()).await.is_ok()
    }

    fn session_ended(&mut self, code: Code) -> End {
        refuse(code, "the session has ended", crate::auth::sockets::CLOSE_SESSION_ENDED)
    }

    /// A care team that changed: a fresh snapshot in the new scope.
    async fn recheck(&mut self) -> Step {
        let Ok(now) = scope_for(&self.state, &self.who).await else { return Ok(()) };
        if now == self.scope {
            return Ok(());
        }
        if let Some(id) = self.sub.take() {
            self.state.dashboard.do_send(Unsubscribe(id));
        }
        self.scope = now;
        self.subscribe(None).await
    }

    async fn leave(&mut self) {
        if let Some(id) = self.sub.take() {
            self.state.dashboard.do_send(Unsubscribe(id));
        }
    }
}
