//! `GET /v1/dashboard/ws`: the live board socket (JSON text, `docs/dashboard.md`).
//!
//! Before the upgrade: Origin, credentials (ticket or bearer), `dashboard:view` (MFA for
//! staff); the viewer's scope is resolved (admins: the clinic; clinicians: their calendar
//! and their care-team patients; patients: themself) and the view is audited. After it,
//! this task is a pump: it waits for `hello`, subscribes to the node's `DashboardHub`
//! (snapshot, or the missed deltas when resuming) and writes what the hub sends, adding the
//! patient's name for this viewer only. Heartbeats carry the resume position.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix_web::{web, HttpRequest, HttpResponse};
use actix_ws::{AggregatedMessage, CloseCode, CloseReason, Session};
use coherency_actors::dashboard::{HubOut, Scope, SubId, Subscribe, Unsubscribe};
use coherency_protocol::dashboard::{
    Change, ClientMsg, Delta, Item, ServerMsg, DASHBOARD_PROTOCOL_VERSION, MAX_CLIENT_MESSAGES_PER_SEC,
    MAX_CLIENT_MESSAGE_BYTES,
};
use coherency_protocol::Code;
use tokio::sync::mpsc;
use uuid::Uuid;

use crate::audit::AuditEvent;
use crate::auth::{self, Permission, Principal, Role};
use crate::error::ApiError;
use crate::state::AppState;

/// How often the server pings (with its resume position).
pub const HEARTBEAT: Duration = Duration::from_secs(5);
/// A client silent this long is dropped.
pub const CLIENT_TIMEOUT: Duration = Duration::from_secs(20);
/// Time allowed for `hello` after the upgrade.
pub const HELLO_TIMEOUT: Duration = Duration::from_secs(10);
/// How often the session and the viewer's scope are re-checked.
pub const RECHECK: Duration = Duration::from_secs(30);
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
    actix_web::rt::spawn(run(state.into_inner(), who, scope, session, messages));
    Ok(response)
}

/// What `who` may see on the board.
pub async fn scope_for(state: &AppState, who: &Principal) -> Result<Scope, ApiError> {
    Ok(match who.role {
        Role::Admin => Scope::Clinic,
        Role::Patient => Scope::Patient { id: who.patient_id.ok_or_else(ApiError::forbidden)? },
        Role::Clinician => {
            let patients: Vec<Uuid> =
                sqlx::query_scalar("SELECT patient_id FROM care_team WHERE clinician_id = $1 LIMIT 100000")
                    .bind(who.user_id)
                    .fetch_all(&state.stores.pg)
                    .await?;
            Scope::Clinician { id: who.user_id, patients: patients.into_iter().collect::<HashSet<_>>() }
        }
    })
}

struct Pump {
    state: Arc<AppState>,
    session: Session,
    /// Everything up to this hub seq has been sent (the client's resume position).
    position: u64,
    last_heard: Instant,
}

enum End {
    Close(u16, &'static str),
    Error(Code, &'static str, u16),
    /// A client message refused before it was read: its `error` frame, then 1008.
    Refused(super::Refused),
}

async fn run(
    state: Arc<AppState>,
    who: Principal,
    scope: Scope,
    session: Session,
    mut messages: actix_ws::AggregatedMessageStream,
) {
    let gauge = state.metrics.websockets_open.with_label_values(&["dashboard"]);
    gauge.inc();
    let mut guard = state.sockets.register(who.user_id, who.session_id);
    let mut shutdown = state.lifecycle.subscribe();
    let mut pump = Pump { state: state.clone(), session, position: 0, last_heard: Instant::now() };
    let mut sub = None;
    let end = pump.pump(&who, scope, &mut messages, &mut guard.closed, &mut shutdown, &mut sub).await;
    if let Some(id) = sub {
        state.dashboard.do_send(Unsubscribe(id));
    }
    let (code, reason) = match end {
        End::Close(code, reason) => (code, reason),
        End::Error(code, message, close) => {
            let msg = ServerMsg::Error { code: code.as_str().to_string(), message: message.to_string() };
            let _ = pump.session.text(msg.to_json()).await;
            (close, message)
        }
        End::Refused(r) => {
            let msg = ServerMsg::Error { code: r.code.as_str().to_string(), message: r.message };
            let _ = pump.session.text(msg.to_json()).await;
            (1008, "refused message")
        }
    };
    let _ = pump
        .session
        .clone()
        .close(Some(CloseReason { code: CloseCode::from(code), description: Some(reason.into()) }))
        .await;
    gauge.dec();
    drop(guard);
}

/// A token bucket over client messages.
struct Rate {
    tokens: f64,
    at: Instant,
}

impl Rate {
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

/// Patient names for the boards of this node, looked up once per patient however many
/// boards need them at the same moment (one query, the others wait for it) and kept for
/// [`PatientNames::TTL`] so a renamed patient is shown by the new name soon after.
#[derive(Default)]
pub struct PatientNames {
    cells: std::sync::Mutex<HashMap<Uuid, (Instant, NameCell)>>,
}

/// One patient's name, looked up at most once.
type NameCell = Arc<tokio::sync::OnceCell<Option<String>>>;

impl PatientNames {
    pub const TTL: Duration = Duration::from_secs(60);
    /// Most names kept; past this, expired ones are dropped (and all, if none had expired).
    pub const MAX: usize = 20_000;

    pub async fn get(&self, pg: &sqlx::PgPool, patient: Uuid) -> Option<String> {
        let cell = {
            let mut cells = self.cells.lock().unwrap_or_else(|p| p.into_inner());
            if cells.len() >= Self::MAX {
                cells.retain(|_, (at, _)| at.elapsed() < Self::TTL);
                if cells.len() >= Self::MAX {
                    cells.clear();
                }
            }
            let entry = cells.entry(patient).or_insert_with(|| (Instant::now(), Default::default()));
            if entry.0.elapsed() >= Self::TTL {
                *entry = (Instant::now(), Default::default());
            }
            entry.1.clone()
        };
        let looked_up = cell
            .get_or_try_init(|| async {
                sqlx::query_as::<_, (String, String)>("SELECT given_name, family_name FROM patients WHERE id = $1")
                    .bind(patient)
                    .fetch_optional(pg)
                    .await
                    .map(|r| r.map(|(g, f)| format!("{g} {f}")))
            })
            .await;
        // A failed lookup is not kept: the next board asks again.
        looked_up.ok().cloned().flatten()
    }
}

enum Read {
    Msg(ClientMsg),
    Control,
}

impl Pump {
    async fn send(&mut self, msg: &ServerMsg) -> bool {
        self.session.text(msg.to_json()).await.is_ok()
    }

    /// Adds the patient's name to an item (from the node's cache).
    async fn named(&self, mut item: Item) -> Item {
        if let Some(p) = item.patient_id {
            item.patient_name = self.state.patient_names.get(&self.state.stores.pg, p).await;
        }
        item
    }

    async fn forward(&mut self, out: HubOut) -> bool {
        let msg = match out {
            HubOut::Position(seq) => {
                self.position = self.position.max(seq);
                return true;
            }
            HubOut::Msg(m) => m,
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
        self.send(&msg).await
    }

    fn read(
        &mut self,
        m: Option<Result<AggregatedMessage, actix_ws::ProtocolError>>,
        rate: &mut Rate,
    ) -> Result<Read, End> {
        self.last_heard = Instant::now();
        match m {
            None | Some(Ok(AggregatedMessage::Close(_))) => Err(End::Close(1000, "closed by the client")),
            Some(Ok(AggregatedMessage::Text(t))) => {
                if !rate.allow() {
                    return Err(End::Error(Code::RateLimited, "too many messages", 1008));
                }
                super::parse_text::<ClientMsg>(&t, "unreadable message").map(Read::Msg).map_err(End::Refused)
            }
            Some(Ok(AggregatedMessage::Binary(_))) => {
                Err(End::Error(Code::MalformedMessage, "binary messages are not part of this protocol", 1003))
            }
            Some(Ok(AggregatedMessage::Ping(_) | AggregatedMessage::Pong(_))) => Ok(Read::Control),
            Some(Err(_)) => Err(End::Error(Code::FrameTooLarge, "message too large or malformed", 1009)),
        }
    }

    async fn pump(
        &mut self,
        who: &Principal,
        mut scope: Scope,
        messages: &mut actix_ws::AggregatedMessageStream,
        revoked: &mut tokio::sync::watch::Receiver<Option<u16>>,
        shutdown: &mut tokio::sync::watch::Receiver<bool>,
        sub: &mut Option<SubId>,
    ) -> End {
        let mut rate = Rate { tokens: f64::from(MAX_CLIENT_MESSAGES_PER_SEC), at: Instant::now() };
        let deadline = tokio::time::Instant::now() + HELLO_TIMEOUT;
        let resume = loop {
            tokio::select! {
                m = tokio::time::timeout_at(deadline, messages.recv()) => {
                    let Ok(m) = m else { return End::Error(Code::MalformedMessage, "no hello in time", 1008) };
                    match self.read(m, &mut rate) {
                        Err(end) => return end,
                        Ok(Read::Control) => {}
                        Ok(Read::Msg(ClientMsg::Hello { v, resume })) => {
                            if v != DASHBOARD_PROTOCOL_VERSION {
                                return End::Error(Code::UnsupportedVersion, "unsupported dashboard protocol version", 1008);
                            }
                            break resume;
                        }
                        Ok(Read::Msg(_)) => return End::Error(Code::MalformedMessage, "the first message must be hello", 1008),
                    }
                }
                _ = shutdown.changed() => return End::Close(1001, "server going away"),
                _ = revoked.changed() => return End::Error(Code::TokenRevoked, "the session has ended", 4002),
            }
        };
        let (tx, mut rx) = mpsc::channel(OUTBOX);
        match self.state.dashboard.send(Subscribe { scope: scope.clone(), resume, tx }).await {
            Ok(Some(id)) => *sub = Some(id),
            Ok(None) | Err(_) => {
                return End::Error(Code::Unavailable, "the dashboard is unavailable; retry", CLOSE_TRY_AGAIN)
            }
        }
        let mut beat = tokio::time::interval(HEARTBEAT);
        beat.tick().await;
        let mut recheck = tokio::time::interval(RECHECK);
        recheck.tick().await;
        loop {
            tokio::select! {
                out = rx.recv() => match out {
                    Some(out) => {
                        if !self.forward(out).await {
                            return End::Close(1001, "socket closed");
                        }
                    }
                    None => return End::Error(Code::Unavailable, "the board fell behind; resume", CLOSE_TRY_AGAIN),
                },
                m = messages.recv() => match self.read(m, &mut rate) {
                    Err(end) => return end,
                    Ok(Read::Control) => {}
                    Ok(Read::Msg(ClientMsg::Ping)) => {
                        if !self.send(&ServerMsg::Pong).await {
                            return End::Close(1001, "socket closed");
                        }
                    }
                    Ok(Read::Msg(ClientMsg::Pong)) => {}
                    Ok(Read::Msg(ClientMsg::Hello { .. })) => {
                        return End::Error(Code::MalformedMessage, "hello was already received", 1008)
                    }
                },
                _ = beat.tick() => {
                    if self.last_heard.elapsed() > CLIENT_TIMEOUT {
                        return End::Close(1001, "heartbeat timeout");
                    }
                    let seq = self.position;
                    if !self.send(&ServerMsg::Ping { seq }).await {
                        return End::Close(1001, "socket closed");
                    }
                }
                _ = recheck.tick() => {
                    if let Err(e) = crate::auth::session_principal(&self.state, who.session_id).await {
                        if matches!(e.code, Code::TokenRevoked | Code::TokenExpired | Code::Unauthenticated) {
                            return End::Error(e.code, "the session has ended", 4002);
                        }
                    }
                    // A care team that changed: a fresh snapshot in the new scope.
                    if let Ok(now) = scope_for(&self.state, who).await {
                        if now != scope {
                            if let Some(id) = sub.take() {
                                self.state.dashboard.do_send(Unsubscribe(id));
                            }
                            scope = now;
                            let (tx, new_rx) = mpsc::channel(OUTBOX);
                            rx = new_rx;
                            match self.state.dashboard.send(Subscribe { scope: scope.clone(), resume: None, tx }).await {
                                Ok(Some(id)) => *sub = Some(id),
                                Ok(None) | Err(_) => {
                                    return End::Error(Code::Unavailable, "the dashboard is unavailable; retry", CLOSE_TRY_AGAIN)
                                }
                            }
                        }
                    }
                }
                _ = shutdown.changed() => return End::Close(1001, "server going away"),
                _ = revoked.changed() => return End::Error(Code::TokenRevoked, "the session has ended", 4002),
            }
        }
    }
}
