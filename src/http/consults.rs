//! Consults over HTTP: create (from an appointment, or ad hoc by a clinician), read, patient
//! check-in, the host's queue and decisions (admit, deny, remove), private messages to a
//! participant, invitations, ending, the event log and the clinician's waiting room. Live
//! state lives in the consult's `Room` (`coherency_actors::room`); this module authorises,
//! audits and forwards.
//!
//! Who: the consult's clinician is its host (admins may act as host); the patient is the
//! consult's patient; invited users are participants with the role the host gave them.
//! Anyone else gets 404. Every admit, deny, message, invite, remove and end is audited.

use actix::MailboxError;
use actix_web::{web, HttpRequest, HttpResponse};
use chrono::{DateTime, Utc};
use coherency_actors::room::{self, Decision, Participant};
use coherency_protocol::consult::{ParticipantRole, RoomEvent};
use coherency_protocol::ids::{ConsultId, PatientId};
use coherency_protocol::{Code, ErrorCode};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::audit::AuditEvent;
use crate::auth::{self, perm, Principal, Require, Role};
use crate::consults::{self, Consult};
use crate::error::ApiError;
use crate::http::input::{Line, NonNegative, Text};
use crate::http::patients::path_id;
use crate::http::resource;
use crate::services::consults::{Consults, VisibleConsult};
use crate::state::AppState;

/// `POST /v1/consults`
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateConsult {
    /// The appointment this consult is for (the clinician, patient and start come from it).
    pub appointment_id: Option<Uuid>,
    /// For an ad hoc consult: the patient (optional; invite others instead).
    pub patient_id: Option<Uuid>,
}

/// `POST /v1/consults/{id}/invite`
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct InviteBody {
    pub user_id: Uuid,
    pub role: InviteRole,
}

/// The role an invited user joins a consult in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum InviteRole {
    Interpreter,
    Family,
    Clinician,
}

impl From<InviteRole> for ParticipantRole {
    fn from(r: InviteRole) -> Self {
        match r {
            InviteRole::Interpreter => ParticipantRole::Interpreter,
            InviteRole::Family => ParticipantRole::Family,
            InviteRole::Clinician => ParticipantRole::Clinician,
        }
    }
}

/// `POST /v1/consults/{id}/end`
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EndBody {
    /// Why, in a few words (default `host_ended`); shown to everyone in the room.
    #[serde(default)]
    pub reason: Option<Line<0, 100>>,
}

/// `POST /v1/consults/{id}/participants/{pid}/message`
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MessageBody {
    /// What the participant reads ("Running 5 minutes late"); line breaks allowed.
    pub text: Text<1, { coherency_protocol::consult::MAX_MESSAGE_CHARS }>,
}

/// A private message the host sent to one participant.
#[derive(Debug, Serialize, ToSchema)]
pub struct MessageView {
    /// The recipient.
    pub participant_id: Uuid,
    /// The recipient's user.
    pub user_id: Uuid,
    /// The recipient's state when it was sent: `waiting` or `admitted`.
    pub state: String,
    /// The sender's user id (as `from` in the `chat` signal).
    pub from: Uuid,
    /// The text as stored and sent (trimmed).
    pub text: String,
    pub at: DateTime<Utc>,
    /// Whether the recipient was connected and it was sent to them now (a participant with
    /// no open connection does not receive it later; it is kept in the consult's record).
    pub delivered: bool,
}

/// A participant as the API shows it.
#[derive(Debug, Serialize, ToSchema)]
pub struct ParticipantView {
    pub id: Uuid,
    pub user_id: Uuid,
    pub role: String,
    pub state: String,
    pub checked_in_at: Option<DateTime<Utc>>,
    pub admitted_at: Option<DateTime<Utc>>,
    pub joined: bool,
    /// The person's display name (`users.display_name`), shown in the room instead of a role.
    pub display_name: Option<String>,
}

impl From<&Participant> for ParticipantView {
    fn from(p: &Participant) -> Self {
        Self {
            id: p.id,
            user_id: p.user_id,
            role: p.role.as_str().into(),
            state: p.state.as_str().into(),
            checked_in_at: p.checked_in_at,
            admitted_at: p.admitted_at,
            joined: p.joined_at.is_some(),
            display_name: None,
        }
    }
}

/// `views` with their people's display names.
async fn named(state: &AppState, mut views: Vec<ParticipantView>) -> Result<Vec<ParticipantView>, ApiError> {
    let ids: Vec<Uuid> = views.iter().map(|v| v.user_id).collect();
    let names = crate::store::users::display_names(&state.stores.pg, &ids).await?;
    for v in &mut views {
        v.display_name = names.get(&v.user_id).cloned();
    }
    Ok(views)
}

async fn named_one(state: &AppState, p: &Participant) -> Result<ParticipantView, ApiError> {
    Ok(named(state, vec![ParticipantView::from(p)]).await?.pop().unwrap_or_else(|| ParticipantView::from(p)))
}

/// A consult and its participants.
#[derive(Debug, Serialize, ToSchema)]
pub struct ConsultView {
    #[serde(flatten)]
    pub consult: Consult,
    pub participants: Vec<ParticipantView>,
    /// The caller's own part, when they have one.
    pub me: Option<ParticipantView>,
    /// The clinician's display name (everyone with a part in the consult sees who it is with).
    pub clinician_name: Option<String>,
}

/// `POST /v1/consults/{id}/check-in` answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct CheckInView {
    pub participant_id: Uuid,
    pub state: String,
    /// 1-based place in the queue (0 when not waiting).
    pub position: u32,
}

fn mailbox(_: MailboxError) -> ApiError {
    ApiError::new(Code::ConsultEnded, "the consult has ended")
}

fn is_host(who: &Principal, c: &Consult) -> bool {
    Consults::is_host(who, c)
}

async fn audit_consult(
    state: &AppState,
    req: &HttpRequest,
    who: &Principal,
    action: &str,
    outcome: &str,
    c: &Consult,
    extra: serde_json::Value,
) -> Result<(), ApiError> {
    let mut details = extra;
    details["patient_id"] = serde_json::json!(c.patient_id);
    auth::audit(state, req, Some(who), AuditEvent::new(action, outcome).target("consult", c.id).details(details)).await
}

async fn hosted(state: &AppState, req: &HttpRequest, who: &Principal, action: &str) -> Result<Consult, ApiError> {
    let id = ConsultId::from_uuid(path_id(req, "id")?);
    let c = state.consults.visible(who, id).await?.consult;
    if !is_host(who, &c) {
        audit_consult(state, req, who, action, "denied", &c, serde_json::json!({})).await?;
        return Err(ApiError::forbidden());
    }
    Ok(c)
}

async fn participants_of(state: &AppState, c: &Consult) -> Result<Vec<Participant>, ApiError> {
    // A running room (here or on its owner) knows who is joined right now; otherwise the
    // stored rows do.
    if let Some(r) = state.consult_rooms.running(c).await {
        if let Ok(ps) = r.call(&state.cluster, room::Participants).await {
            return Ok(ps);
        }
    }
    let rows = sqlx::query!(
        "SELECT id, user_id, role, state, invited_by, checked_in_at, admitted_at, joined_at, left_at
         FROM consult_participants WHERE consult_id = $1 ORDER BY id",
        c.id,
    )
    .fetch_all(&state.stores.pg)
    .await?;
    let mut out = Vec::new();
    for r in rows {
        let (Some(role), Some(st)) =
            (ParticipantRole::parse(&r.role), coherency_protocol::consult::ParticipantState::parse(&r.state))
        else {
            continue;
        };
        out.push(Participant {
            id: r.id,
            user_id: r.user_id,
            role,
            state: st,
            invited_by: r.invited_by,
            checked_in_at: r.checked_in_at,
            admitted_at: r.admitted_at,
            joined_at: r.joined_at,
            left_at: r.left_at,
        });
    }
    Ok(out)
}

async fn view(state: &AppState, who: &Principal, c: Consult) -> Result<ConsultView, ApiError> {
    let ps = participants_of(state, &c).await?;
    let host = is_host(who, &c);
    // Every name the answer carries, in one query: the clinician's, the caller's own, and
    // for the host everyone's.
    let mut ids: Vec<Uuid> = vec![c.clinician_id, who.user_id.as_uuid()];
    if host {
        ids.extend(ps.iter().map(|p| p.user_id));
    }
    let mut names = crate::store::users::display_names(&state.stores.pg, &ids).await?;
    let shown =
        |p: &Participant| ParticipantView { display_name: names.get(&p.user_id).cloned(), ..ParticipantView::from(p) };
    let me = ps.iter().find(|p| p.user_id == who.user_id.as_uuid()).map(shown);
    let participants = if host { ps.iter().map(shown).collect() } else { Vec::new() };
    let clinician_name = names.remove(&c.clinician_id);
    Ok(ConsultView { consult: c, participants, me, clinician_name })
}

/// Opens a consult for an appointment (idempotent per appointment) or ad hoc.
#[utoipa::path(post, path = "/v1/consults", tag = "consults", security(("bearer" = ["consults:host"])),
    request_body = CreateConsult,
    responses((status = 201, body = ConsultView), (status = 200, body = ConsultView, description = "the appointment's existing consult"),
              (status = 404, description = "no such appointment or patient visible to the caller"),
              (status = 409, description = "the appointment is not booked")))]
#[tracing::instrument(skip_all)]
pub async fn create(
    state: web::Data<AppState>,
    req: HttpRequest,
    who: Require<perm::ConsultsHost>,
    body: crate::http::Json<CreateConsult>,
) -> Result<HttpResponse, ApiError> {
    let b = body.parse()?;
    let c = if let Some(aid) = b.appointment_id {
        let a = crate::booking::load(&state.stores.pg, aid).await?.ok_or_else(ApiError::not_found)?;
        if a.clinician_id != who.user_id.as_uuid() && who.role != Role::Admin {
            return Err(ApiError::not_found());
        }
        if let Some(existing) = consults::by_appointment(&state.stores.pg, aid).await? {
            let v = view(&state, &who, existing).await?;
            return Ok(HttpResponse::Ok().json(v));
        }
        if a.status != "booked" {
            return Err(ApiError::new(Code::Conflict, "only a booked appointment can have a consult"));
        }
        state
            .consult_rooms
            .create(Some(aid), a.clinician_id, Some(a.patient_id), Some(a.start_at), who.user_id.as_uuid())
            .await?
    } else {
        if let Some(pid) = b.patient_id {
            if !state.access.can_see_patient(&who, PatientId::from_uuid(pid)).await? {
                return Err(ApiError::not_found());
            }
        }
        state.consult_rooms.create(None, who.user_id.as_uuid(), b.patient_id, None, who.user_id.as_uuid()).await?
    };
    audit_consult(&state, &req, &who, "consult.create", "success", &c, serde_json::json!({})).await?;
    let v = view(&state, &who, c).await?;
    Ok(HttpResponse::Created().insert_header(("Location", format!("/v1/consults/{}", v.consult.id))).json(v))
}

/// The consult of an appointment, opened if need be: the clinician's "Start consult" and the
/// patient's "Join" on the board. The patient may open it from [`consults::CHECK_IN_OPENS_BEFORE`]
/// before the start (the check-in window) while the appointment is booked; the clinician (or
/// an admin) at any time. Anyone else, or an appointment that does not exist: 404.
#[utoipa::path(post, path = "/v1/appointments/{id}/consult", tag = "consults", security(("bearer" = ["consults:join"])),
    params(("id" = Uuid, Path)),
    responses((status = 201, body = ConsultView, description = "opened now"), (status = 200, body = ConsultView, description = "the appointment's consult"),
              (status = 404, description = "no such appointment of the caller's"),
              (status = 409, description = "check_in_too_early (the patient, more than 15 minutes before the start), conflict (the appointment is not booked)")))]
#[tracing::instrument(skip_all)]
pub async fn for_appointment(
    state: web::Data<AppState>,
    req: HttpRequest,
    who: Require<perm::ConsultsJoin>,
) -> Result<HttpResponse, ApiError> {
    let aid = path_id(&req, "id")?;
    let a = crate::booking::load(&state.stores.pg, aid).await?.ok_or_else(ApiError::not_found)?;
    let is_patient = who.role == Role::Patient && who.patient_id == Some(PatientId::from_uuid(a.patient_id));
    let is_clinician = a.clinician_id == who.user_id.as_uuid() || who.role == Role::Admin;
    if !is_patient && !is_clinician {
        return Err(ApiError::not_found());
    }
    if let Some(existing) = consults::by_appointment(&state.stores.pg, aid).await? {
        return Ok(HttpResponse::Ok().json(view(&state, &who, existing).await?));
    }
    if a.status != "booked" {
        return Err(ApiError::new(Code::Conflict, "only a booked appointment can have a consult"));
    }
    if !is_clinician && state.clock.now() < a.start_at - consults::CHECK_IN_OPENS_BEFORE {
        return Err(ApiError::new(Code::CheckInTooEarly, "the consult opens 15 minutes before the appointment"));
    }
    let c = state
        .consult_rooms
        .create(Some(aid), a.clinician_id, Some(a.patient_id), Some(a.start_at), who.user_id.as_uuid())
        .await?;
    audit_consult(&state, &req, &who, "consult.create", "success", &c, serde_json::json!({"appointment_id": aid}))
        .await?;
    let v = view(&state, &who, c).await?;
    Ok(HttpResponse::Created().insert_header(("Location", format!("/v1/consults/{}", v.consult.id))).json(v))
}

/// A consult the caller takes part in.
#[utoipa::path(get, path = "/v1/consults/{id}", tag = "consults", security(("bearer" = ["consults:join"])),
    params(("id" = Uuid, Path)), responses((status = 200, body = ConsultView), (status = 404)))]
#[tracing::instrument(skip_all)]
pub async fn get(
    state: web::Data<AppState>,
    req: HttpRequest,
    who: Require<perm::ConsultsJoin>,
) -> Result<HttpResponse, ApiError> {
    let c = state.consults.visible(&who, ConsultId::from_uuid(path_id(&req, "id")?)).await?.consult;
    audit_consult(&state, &req, &who, "consult.read", "success", &c, serde_json::json!({})).await?;
    Ok(HttpResponse::Ok().json(view(&state, &who, c).await?))
}

/// The consult's patient checks in: they enter the host's waiting room.
#[utoipa::path(post, path = "/v1/consults/{id}/check-in", tag = "consults", security(("bearer" = ["consults:join"])),
    params(("id" = Uuid, Path)),
    responses((status = 200, body = CheckInView), (status = 403, description = "denied or removed"), (status = 404),
              (status = 409, description = "check_in_too_early, consult_ended")))]
#[tracing::instrument(skip_all)]
pub async fn check_in(
    state: web::Data<AppState>,
    req: HttpRequest,
    who: Require<perm::ConsultsJoin>,
) -> Result<HttpResponse, ApiError> {
    let VisibleConsult { consult: c, role } =
        state.consults.visible(&who, ConsultId::from_uuid(path_id(&req, "id")?)).await?;
    if role != ParticipantRole::Patient {
        return Err(ApiError::new(Code::Conflict, "only the consult's patient checks in"));
    }
    Consults::check_in_open(&c, state.clock.now())?;
    let r = state.consult_rooms.room(&c).await?;
    let (pid, st, position) = r
        .call(&state.cluster, room::CheckIn { user_id: who.user_id.as_uuid(), role: ParticipantRole::Patient })
        .await?
        .map_err(ApiError::from)?;
    audit_consult(&state, &req, &who, "consult.check_in", "success", &c, serde_json::json!({})).await?;
    Ok(HttpResponse::Ok().json(CheckInView { participant_id: pid, state: st.as_str().into(), position }))
}

/// The waiting participants of one consult, oldest check-in first (host only).
#[utoipa::path(get, path = "/v1/consults/{id}/queue", tag = "consults", security(("bearer" = ["consults:host"])),
    params(("id" = Uuid, Path)), responses((status = 200, body = [ParticipantView]), (status = 403), (status = 404),
    (status = 409, description = "consult_ended")))]
#[tracing::instrument(skip_all)]
pub async fn queue(
    state: web::Data<AppState>,
    req: HttpRequest,
    who: Require<perm::ConsultsHost>,
) -> Result<HttpResponse, ApiError> {
    let c = hosted(&state, &req, &who, "consult.queue").await?;
    let r = state.consult_rooms.room(&c).await?;
    let q = r.call(&state.cluster, room::Queue).await?;
    let v = named(&state, q.iter().map(ParticipantView::from).collect()).await?;
    Ok(HttpResponse::Ok().json(v))
}

async fn decide(
    state: web::Data<AppState>,
    req: HttpRequest,
    who: Require<perm::ConsultsHost>,
    decision: Decision,
) -> Result<HttpResponse, ApiError> {
    let action = match decision {
        Decision::Admit => "consult.admit",
        Decision::Deny => "consult.deny",
        Decision::Remove => "consult.remove",
    };
    let c = hosted(&state, &req, &who, action).await?;
    let participant_id = path_id(&req, "pid")?;
    let r = state.consult_rooms.room(&c).await?;
    let res = r.call(&state.cluster, room::Decide { participant_id, by: who.user_id.as_uuid(), decision }).await?;
    match res {
        Ok(p) => {
            audit_consult(
                &state,
                &req,
                &who,
                action,
                "success",
                &c,
                serde_json::json!({"participant_id": p.id, "user_id": p.user_id}),
            )
            .await?;
            Ok(HttpResponse::Ok().json(named_one(&state, &p).await?))
        }
        Err(e) => {
            audit_consult(
                &state,
                &req,
                &who,
                action,
                "failure",
                &c,
                serde_json::json!({"participant_id": participant_id, "code": e.code().as_str()}),
            )
            .await?;
            Err(e.into())
        }
    }
}

/// Admits a waiting participant.
#[utoipa::path(post, path = "/v1/consults/{id}/participants/{pid}/admit", tag = "consults", security(("bearer" = ["consults:host"])),
    params(("id" = Uuid, Path), ("pid" = Uuid, Path)),
    responses((status = 200, body = ParticipantView), (status = 403), (status = 404), (status = 409, description = "not waiting, room_full, consult_ended")))]
pub async fn admit(
    state: web::Data<AppState>,
    req: HttpRequest,
    who: Require<perm::ConsultsHost>,
) -> Result<HttpResponse, ApiError> {
    decide(state, req, who, Decision::Admit).await
}

/// Denies a waiting participant (final for this consult).
#[utoipa::path(post, path = "/v1/consults/{id}/participants/{pid}/deny", tag = "consults", security(("bearer" = ["consults:host"])),
    params(("id" = Uuid, Path), ("pid" = Uuid, Path)),
    responses((status = 200, body = ParticipantView), (status = 403), (status = 404), (status = 409)))]
pub async fn deny(
    state: web::Data<AppState>,
    req: HttpRequest,
    who: Require<perm::ConsultsHost>,
) -> Result<HttpResponse, ApiError> {
    decide(state, req, who, Decision::Deny).await
}

/// Removes a participant (final for this consult).
#[utoipa::path(post, path = "/v1/consults/{id}/participants/{pid}/remove", tag = "consults", security(("bearer" = ["consults:host"])),
    params(("id" = Uuid, Path), ("pid" = Uuid, Path)),
    responses((status = 200, body = ParticipantView), (status = 403), (status = 404), (status = 409)))]
pub async fn remove(
    state: web::Data<AppState>,
    req: HttpRequest,
    who: Require<perm::ConsultsHost>,
) -> Result<HttpResponse, ApiError> {
    decide(state, req, who, Decision::Remove).await
}

/// Sends a private message to one participant who is waiting or in the call: only their
/// connection receives it (`chat` with `to`), a waiting participant included.
#[utoipa::path(post, path = "/v1/consults/{id}/participants/{pid}/message", tag = "consults", security(("bearer" = ["consults:host"])),
    params(("id" = Uuid, Path), ("pid" = Uuid, Path)), request_body = MessageBody,
    responses((status = 201, body = MessageView), (status = 400, description = "invalid_field (`text`), unknown_field"), (status = 403), (status = 404, description = "no such participant in a consult the caller hosts"),
              (status = 409, description = "participant_not_present (denied, removed, left, or not yet arrived), consult_ended, conflict (the host)")))]
#[tracing::instrument(skip_all)]
pub async fn message(
    state: web::Data<AppState>,
    req: HttpRequest,
    who: Require<perm::ConsultsHost>,
    body: crate::http::Json<MessageBody>,
) -> Result<HttpResponse, ApiError> {
    let c = hosted(&state, &req, &who, "consult.message").await?;
    let participant_id = path_id(&req, "pid")?;
    let text = body.parse()?.text.into_inner();
    let r = state.consult_rooms.room(&c).await?;
    let by = who.user_id.as_uuid();
    let res = r.call(&state.cluster, room::PrivateMessage { participant_id, by, text: text.clone() }).await?;
    // The text is PHI: the audit row names who and whom, never what.
    match res {
        Ok(sent) => {
            let p = &sent.participant;
            let details =
                serde_json::json!({"participant_id": p.id, "user_id": p.user_id, "delivered": sent.delivered});
            audit_consult(&state, &req, &who, "consult.message", "success", &c, details).await?;
            Ok(HttpResponse::Created().json(MessageView {
                participant_id: p.id,
                user_id: p.user_id,
                state: p.state.as_str().into(),
                from: by,
                text,
                at: sent.at,
                delivered: sent.delivered,
            }))
        }
        Err(e) => {
            let details = serde_json::json!({"participant_id": participant_id, "code": e.code().as_str()});
            audit_consult(&state, &req, &who, "consult.message", "failure", &c, details).await?;
            Err(e.into())
        }
    }
}

/// Invites another user (interpreter, family member, clinician); they are admitted when they connect.
#[utoipa::path(post, path = "/v1/consults/{id}/invite", tag = "consults", security(("bearer" = ["consults:host"])),
    params(("id" = Uuid, Path)), request_body = InviteBody,
    responses((status = 201, body = ParticipantView), (status = 400, description = "invalid_field"), (status = 403), (status = 404), (status = 409)))]
#[tracing::instrument(skip_all)]
pub async fn invite(
    state: web::Data<AppState>,
    req: HttpRequest,
    who: Require<perm::ConsultsHost>,
    body: crate::http::Json<InviteBody>,
) -> Result<HttpResponse, ApiError> {
    let c = hosted(&state, &req, &who, "consult.invite").await?;
    let b = body.parse()?;
    let role = ParticipantRole::from(b.role);
    let exists: bool = sqlx::query_scalar!(
        r#"SELECT EXISTS (SELECT 1 FROM users WHERE id = $1 AND disabled_at IS NULL) AS "exists!""#,
        b.user_id,
    )
    .fetch_one(&state.stores.pg)
    .await?;
    if !exists {
        return Err(ApiError::field(Code::InvalidField, "user_id", "no such user"));
    }
    let r = state.consult_rooms.room(&c).await?;
    let res = r.call(&state.cluster, room::Invite { user_id: b.user_id, role, by: who.user_id.as_uuid() }).await?;
    match res {
        Ok(p) => {
            audit_consult(
                &state,
                &req,
                &who,
                "consult.invite",
                "success",
                &c,
                serde_json::json!({"participant_id": p.id, "user_id": p.user_id, "role": role.as_str()}),
            )
            .await?;
            Ok(HttpResponse::Created().json(named_one(&state, &p).await?))
        }
        Err(e) => {
            audit_consult(
                &state,
                &req,
                &who,
                "consult.invite",
                "failure",
                &c,
                serde_json::json!({"user_id": b.user_id, "code": e.code().as_str()}),
            )
            .await?;
            Err(e.into())
        }
    }
}

/// Ends the consult: everyone is disconnected.
#[utoipa::path(post, path = "/v1/consults/{id}/end", tag = "consults", security(("bearer" = ["consults:host"])),
    params(("id" = Uuid, Path)), request_body = Option<EndBody>,
    responses((status = 200, body = ConsultView), (status = 403), (status = 404), (status = 409, description = "consult_ended")))]
#[tracing::instrument(skip_all)]
pub async fn end(
    state: web::Data<AppState>,
    req: HttpRequest,
    who: Require<perm::ConsultsHost>,
    body: Option<crate::http::Json<EndBody>>,
) -> Result<HttpResponse, ApiError> {
    let b = match body {
        Some(b) => b.parse()?,
        None => EndBody::default(),
    };
    let c = hosted(&state, &req, &who, "consult.end").await?;
    let reason = b.reason.and_then(Line::non_empty).unwrap_or_else(|| "host_ended".into());
    let r = state.consult_rooms.room(&c).await?;
    r.call(&state.cluster, room::End { by: who.user_id.as_uuid(), reason }).await?.map_err(ApiError::from)?;
    audit_consult(&state, &req, &who, "consult.end", "success", &c, serde_json::json!({})).await?;
    let c = consults::load(&state.stores.pg, c.id).await?.ok_or_else(ApiError::not_found)?;
    Ok(HttpResponse::Ok().json(view(&state, &who, c).await?))
}

/// Query of `GET /v1/consults/{id}/events`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct AfterQuery {
    /// Only events with a larger `seq` (default 0: from the start).
    #[param(inline)]
    pub after: Option<NonNegative>,
}

/// The room's event log in sequence order (host, admitted participants).
#[utoipa::path(get, path = "/v1/consults/{id}/events", tag = "consults", security(("bearer" = ["consults:join"])),
    params(("id" = Uuid, Path), AfterQuery),
    responses((status = 200, body = [RoomEventSchema], description = "the room's events after `after`, oldest first (at most 1,000)"),
    (status = 403, description = "not_admitted"), (status = 404)))]
#[tracing::instrument(skip_all)]
pub async fn events(
    state: web::Data<AppState>,
    req: HttpRequest,
    who: Require<perm::ConsultsJoin>,
) -> Result<HttpResponse, ApiError> {
    let c = state.consults.visible(&who, ConsultId::from_uuid(path_id(&req, "id")?)).await?.consult;
    if !is_host(&who, &c) {
        let ever_admitted: bool = sqlx::query_scalar!(
            r#"SELECT EXISTS (SELECT 1 FROM consult_participants WHERE consult_id = $1 AND user_id = $2 AND admitted_at IS NOT NULL
                              AND state NOT IN ('denied', 'removed')) AS "ever_admitted!""#,
            c.id,
            who.user_id.as_uuid(),
        )
        .fetch_one(&state.stores.pg)
        .await?;
        if !ever_admitted {
            return Err(ApiError::new(Code::NotAdmitted, "only admitted participants see the room's events"));
        }
    }
    let q: AfterQuery = crate::http::input::query(&req)?;
    let rows: Vec<serde_json::Value> = sqlx::query_scalar!(
        "SELECT body FROM consult_events WHERE consult_id = $1 AND seq > $2 ORDER BY seq LIMIT 1000",
        c.id,
        q.after.map_or(0, |a| a.get()),
    )
    .fetch_all(&state.stores.pg)
    .await?;
    let events: Vec<RoomEvent> = rows.into_iter().filter_map(|v| serde_json::from_value(v).ok()).collect();
    audit_consult(&state, &req, &who, "consult.events", "success", &c, serde_json::json!({})).await?;
    Ok(HttpResponse::Ok().json(events))
}

/// A room event as the events route returns it (documentation mirror of
/// `coherency_protocol::consult::RoomEvent`, which has no schema of its own; a test below
/// keeps the two in step).
#[derive(ToSchema)]
#[schema(as = RoomEvent)]
#[allow(dead_code)]
pub struct RoomEventSchema {
    pub consult_id: Uuid,
    /// Per-room sequence number: 1, 2, 3, … with no gaps.
    pub seq: u64,
    /// `opened`, `checked_in`, `admitted`, `denied`, `invited`, `joined`, `left`,
    /// `left_before_joined`, `removed`, `track_published`, `track_unpublished`,
    /// `scan_requested`, `scan_progress`, `scan_finished`, `muted`, `unmuted`, `ended`.
    pub kind: String,
    /// The participant the event is about, when there is one.
    pub participant_id: Option<Uuid>,
    pub user_id: Option<Uuid>,
    /// `host`, `patient`, `interpreter`, `family` or `clinician`.
    pub role: Option<String>,
    /// Who caused it (the host for admit, deny, invite, remove, end).
    pub by: Option<Uuid>,
    /// Kind-specific facts (track id and kind, end reason, scan id, …). Never PHI.
    pub data: Option<serde_json::Value>,
    /// RFC 3339 time the room recorded it.
    pub at: String,
}

/// One entry of the clinician's waiting room.
#[derive(Debug, Serialize, ToSchema)]
pub struct WaitingEntryView {
    pub consult_id: Uuid,
    pub participant_id: Uuid,
    pub user_id: Uuid,
    pub role: String,
    pub checked_in_at: DateTime<Utc>,
}

/// The caller's waiting room: everyone checked in to their consults, oldest first.
#[utoipa::path(get, path = "/v1/waiting-room", tag = "consults", security(("bearer" = ["consults:host"])),
    responses((status = 200, body = [WaitingEntryView])))]
#[tracing::instrument(skip_all)]
pub async fn waiting_room(
    state: web::Data<AppState>,
    req: HttpRequest,
    who: Require<perm::ConsultsHost>,
) -> Result<HttpResponse, ApiError> {
    // Rooms with waiting patients that this node has not started yet are started first.
    let open: Vec<Uuid> = sqlx::query_scalar!(
        "SELECT DISTINCT c.id FROM consults c JOIN consult_participants p ON p.consult_id = c.id
         WHERE c.clinician_id = $1 AND c.status <> 'ended' AND p.state = 'waiting'",
        who.user_id.as_uuid(),
    )
    .fetch_all(&state.stores.pg)
    .await?;
    // Rooms another node runs are asked for their queues.
    let mut v: Vec<WaitingEntryView> = Vec::new();
    for id in open {
        if let Some(c) = consults::load(&state.stores.pg, id).await? {
            if let r @ consults::RoomRef::Remote { .. } = state.consult_rooms.room(&c).await? {
                for p in r.call(&state.cluster, room::Queue).await? {
                    v.push(WaitingEntryView {
                        consult_id: c.id,
                        participant_id: p.id,
                        user_id: p.user_id,
                        role: p.role.as_str().into(),
                        checked_in_at: p.checked_in_at.unwrap_or(c.created_at),
                    });
                }
            }
        }
    }
    let list =
        state.consult_rooms.waiting().of(who.user_id.as_uuid()).send(room::waiting::List).await.map_err(mailbox)?;
    v.extend(list.into_iter().map(|e| WaitingEntryView {
        consult_id: e.consult_id.as_uuid(),
        participant_id: e.participant_id,
        user_id: e.user_id,
        role: e.role.as_str().into(),
        checked_in_at: e.checked_in_at,
    }));
    v.sort_by_key(|e| e.checked_in_at);
    auth::audit(&state, &req, Some(&who), AuditEvent::new("consult.waiting_room", "success")).await?;
    Ok(HttpResponse::Ok().json(v))
}

/// Registers the consult routes.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(resource("/v1/consults").route(web::post().to(create)))
        .service(resource("/v1/waiting-room").route(web::get().to(waiting_room)))
        .service(resource("/v1/consults/{id}").route(web::get().to(get)))
        .service(resource("/v1/appointments/{id}/consult").route(web::post().to(for_appointment)))
        .service(resource("/v1/consults/{id}/check-in").route(web::post().to(check_in)))
        .service(resource("/v1/consults/{id}/queue").route(web::get().to(queue)))
        .service(resource("/v1/consults/{id}/participants/{pid}/admit").route(web::post().to(admit)))
        .service(resource("/v1/consults/{id}/participants/{pid}/deny").route(web::post().to(deny)))
        .service(resource("/v1/consults/{id}/participants/{pid}/remove").route(web::post().to(remove)))
        .service(resource("/v1/consults/{id}/participants/{pid}/message").route(web::post().to(message)))
        .service(resource("/v1/consults/{id}/invite").route(web::post().to(invite)))
        .service(resource("/v1/consults/{id}/end").route(web::post().to(end)))
        .service(resource("/v1/consults/{id}/events").route(web::get().to(events)))
        .service(resource("/v1/consults/{id}/signal").route(web::get().to(crate::ws::consult::signal)));
}

#[cfg(test)]
mod tests {
    use utoipa::PartialSchema;

    #[test]
    fn the_room_event_schema_names_every_field_the_events_route_sends() {
        let full = serde_json::json!({
            "consult_id": uuid::Uuid::nil(), "seq": 1, "kind": "opened", "participant_id": uuid::Uuid::nil(),
            "user_id": uuid::Uuid::nil(), "role": "host", "by": uuid::Uuid::nil(), "data": {"reason": "x"},
            "at": "2026-01-01T00:00:00Z"
        });
        let event: super::RoomEvent = serde_json::from_value(full).unwrap();
        let sent = serde_json::to_value(event).unwrap();
        let schema = serde_json::to_value(super::RoomEventSchema::schema()).unwrap();
        for key in sent.as_object().unwrap().keys() {
            assert!(schema["properties"][key].is_object(), "RoomEvent sends `{key}`, its schema lacks it");
        }
    }
}
