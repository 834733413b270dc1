//! Booking over HTTP: clinicians' schedules and appointment types, free slots, holds,
//! confirmation, cancellation, atomic reschedule, no-shows and the waitlist. The domain
//! (transactions, the exclusion constraint, sweeping, offers) is `crate::booking`; the FHIR
//! R4 face (`Schedule`, `Slot`, `Appointment`) is [`fhir`].
//!
//! Who: patients book for themselves; clinicians and admins for patients they may see
//! (`services::access`); a clinician also sees and manages appointments in their
//! own calendar. What the caller may not see answers 404. Every action is audited.
//! Handlers parse, authorise, send the change to the clinician's calendar actor
//! (`state.calendars`) and audit; the SQL is `crate::store::booking`.

pub mod fhir;

use actix_web::{web, HttpRequest, HttpResponse};
use chrono::{DateTime, Duration, Utc};
use chrono_tz::Tz;
use coherency_protocol::ids::PatientId;
use coherency_protocol::{Code, ErrorCode};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use crate::audit::AuditEvent;
use crate::auth::{self, perm, Principal, Require, Role};
use crate::booking::{self, slots, Appointment, AppointmentType, BookingError, NewHold, WaitlistEntry};
use crate::error::ApiError;
use crate::http::input::{ClockTime, Day, IdempotencyKey, Instant, Int, Line, Text, TimeZone};
use crate::http::patients::{parse_query, path_id};
use crate::state::AppState;
use crate::store::booking as store;

/// Longest waitlist window (`to` − `from`), in days.
pub const MAX_WAITLIST_DAYS: i64 = 366;
/// Longest idempotency key.
pub const MAX_IDEMPOTENCY_KEY: usize = IdempotencyKey::MAX;

// ---------------------------------------------------------------------------------------------
// Bodies

/// One weekly window, wall-clock in the schedule's zone.
#[derive(Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WeeklyWindow {
    /// ISO weekday: 1 = Monday … 7 = Sunday.
    #[schema(inline)]
    pub weekday: Int<1, 7>,
    /// `HH:MM`.
    pub start: ClockTime,
    /// `HH:MM`, after `start`.
    pub end: ClockTime,
}

/// What a dated exception does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ExceptionKind {
    /// Removes hours: the whole day without `start`/`end`, or those hours.
    Off,
    /// Adds the hours `start`–`end`.
    Extra,
}

/// A dated exception. `off` without hours closes the day; `off` or `extra` with hours needs
/// both `start` and `end`, `end` after `start`.
#[derive(Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ScheduleException {
    /// The day, in the schedule's zone: at most 366 days before and 761 days after today.
    pub date: Day,
    pub kind: ExceptionKind,
    pub start: Option<ClockTime>,
    pub end: Option<ClockTime>,
}

/// `PUT /v1/clinicians/{id}/schedule` body (replaces the schedule).
#[derive(Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ScheduleBody {
    /// IANA zone, e.g. `Europe/London`.
    pub time_zone: TimeZone,
    /// How far ahead patients may book (1–730 days, default 60).
    #[schema(inline)]
    pub horizon_days: Option<Int<1, 730>>,
    /// Minimum notice before a slot (minutes, 0–43,200, default 0).
    #[schema(inline)]
    pub min_notice_minutes: Option<Int<0, 43200>>,
    /// Weekly windows: at most 70, and windows of one weekday may not overlap (they may
    /// touch: 09:00–12:00 and 12:00–17:00).
    #[schema(max_items = 70)]
    pub weekly: Vec<WeeklyWindow>,
    /// Dated exceptions: at most 1,100, each dated within the calendar range.
    #[serde(default)]
    #[schema(max_items = 1100)]
    pub exceptions: Vec<ScheduleException>,
}

/// A schedule with its appointment types.
#[derive(Debug, Serialize, ToSchema)]
pub struct ScheduleView {
    pub clinician_id: Uuid,
    pub time_zone: String,
    pub horizon_days: i32,
    pub min_notice_minutes: i32,
    pub weekly: Vec<WeeklyWindow>,
    pub exceptions: Vec<ScheduleException>,
    pub appointment_types: Vec<AppointmentType>,
}

/// `POST /v1/clinicians/{id}/appointment-types` body.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TypeBody {
    pub name: Line<1, 100>,
    pub duration_minutes: Int<5, 480>,
    /// Free time kept before each appointment (default 0).
    pub buffer_before_minutes: Option<Int<0, 240>>,
    /// Free time kept after each appointment (default 0).
    pub buffer_after_minutes: Option<Int<0, 240>>,
    pub modality: Modality,
}

/// How an appointment type is held.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Modality {
    Telehealth,
    InPerson,
}

impl Modality {
    pub fn as_str(self) -> &'static str {
        match self {
            Modality::Telehealth => "telehealth",
            Modality::InPerson => "in_person",
        }
    }
}

/// Query of `GET /v1/slots`.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct SlotsQuery {
    /// Clinician (user) id.
    pub clinician: Uuid,
    /// Appointment type id.
    #[serde(rename = "type")]
    pub type_id: Uuid,
    /// RFC 3339 instant (default now); at most 366 days before and 761 days after now.
    #[param(inline)]
    pub from: Option<Instant>,
    /// RFC 3339 instant (default `from` + 7 days; after `from`, at most 31 days after it,
    /// and at most 761 days after now).
    #[param(inline)]
    pub to: Option<Instant>,
    /// IANA zone the answer is written in (default the clinician's).
    pub tz: Option<TimeZone>,
}

/// One free slot, written in the requested zone.
#[derive(Debug, Serialize, ToSchema)]
pub struct SlotView {
    pub start: String,
    pub end: String,
}

/// Free slots.
#[derive(Debug, Serialize, ToSchema)]
pub struct SlotList {
    pub clinician_id: Uuid,
    pub type_id: Uuid,
    pub time_zone: String,
    pub slots: Vec<SlotView>,
}

/// `POST /v1/appointments` body: holds a slot for [`booking::HOLD_TTL`] (or books it
/// outright with `confirm: true`). Send `Idempotency-Key` to make retries safe.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateAppointment {
    /// Defaults to the caller's own patient record.
    pub patient_id: Option<Uuid>,
    pub clinician_id: Uuid,
    pub type_id: Uuid,
    /// A slot start from `GET /v1/slots` (RFC 3339).
    pub start: Instant,
    #[serde(default)]
    pub confirm: bool,
}

/// `POST /v1/appointments/{id}/cancel` body.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CancelBody {
    /// Why.
    pub reason: Text<1, 500>,
}

/// `POST /v1/appointments/{id}/reschedule` body.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RescheduleBody {
    pub start: Instant,
    /// A different appointment type of the same clinician (default: unchanged).
    pub type_id: Option<Uuid>,
}

/// Query of `GET /v1/appointments`.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct AppointmentQuery {
    pub patient: Option<Uuid>,
    pub clinician: Option<Uuid>,
    /// Appointments ending after this instant.
    #[param(inline)]
    pub from: Option<Instant>,
    /// Appointments starting before this instant (after `from` when both are given). At most
    /// 500 appointments are answered, by start.
    #[param(inline)]
    pub to: Option<Instant>,
}

/// Appointments, by start.
#[derive(Debug, Serialize, ToSchema)]
pub struct AppointmentList {
    pub appointments: Vec<Appointment>,
}

/// `POST /v1/waitlist` body.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WaitlistBody {
    pub patient_id: Option<Uuid>,
    pub clinician_id: Uuid,
    pub type_id: Uuid,
    /// At most 366 days before and 761 days after now.
    pub from: Instant,
    /// After `from`, at most 730 days after it and 761 days after now.
    pub to: Instant,
}

// ---------------------------------------------------------------------------------------------
// Helpers

async fn audit(
    state: &AppState,
    req: &HttpRequest,
    who: &Principal,
    action: &str,
    outcome: &str,
    a: Option<&Appointment>,
    extra: serde_json::Value,
) -> Result<(), ApiError> {
    let mut ev = AuditEvent::new(action, outcome);
    let mut details = extra;
    if let Some(a) = a {
        ev = ev.target("appointment", a.id);
        details["patient_id"] = serde_json::json!(a.patient_id);
        details["clinician_id"] = serde_json::json!(a.clinician_id);
    }
    auth::audit(state, req, Some(who), ev.details(details)).await
}

/// Whether `who` may see appointment `a`.
pub async fn may_see(state: &AppState, who: &Principal, a: &Appointment) -> Result<bool, ApiError> {
    Ok(who.user_id.as_uuid() == a.clinician_id
        || state.access.can_see_patient(who, PatientId::from_uuid(a.patient_id)).await?)
}

async fn visible(
    state: &AppState,
    req: &HttpRequest,
    who: &Principal,
    id: Uuid,
    action: &str,
) -> Result<Appointment, ApiError> {
    let a = store::load(&state.stores.pg, id).await?.ok_or_else(ApiError::not_found)?;
    if !may_see(state, who, &a).await? {
        audit(state, req, who, action, "denied", Some(&a), serde_json::json!({})).await?;
        return Err(ApiError::not_found());
    }
    Ok(a)
}

/// The patient a create names: patients always themselves.
async fn patient_for(
    state: &AppState,
    req: &HttpRequest,
    who: &Principal,
    given: Option<Uuid>,
    action: &str,
) -> Result<Uuid, ApiError> {
    let pid = match (who.role, given, who.patient_id) {
        (Role::Patient, None, Some(own)) => own,
        (_, Some(p), _) => PatientId::from_uuid(p),
        _ => return Err(ApiError::field(Code::InvalidField, "patient_id", "patient_id is required")),
    };
    state.access.patient(&auth::caller_of(req, state, who), pid, action).await?;
    Ok(pid.as_uuid())
}

async fn clinician_type(
    state: &AppState,
    clinician_id: Uuid,
    type_id: Uuid,
) -> Result<(booking::Schedule, AppointmentType), ApiError> {
    let sched = store::load_schedule(&state.stores.pg, clinician_id).await?.ok_or(BookingError::NoSchedule)?;
    let ty = store::load_type(&state.stores.pg, type_id)
        .await?
        .filter(|t| t.clinician_id == clinician_id && t.active)
        .ok_or(BookingError::NoType)?;
    Ok((sched, ty))
}

/// A clinician manages their own schedule; admins any clinician's. Others see 404.
async fn require_manage(state: &AppState, who: &Principal, clinician_id: Uuid) -> Result<(), ApiError> {
    let is_clinician = store::is_clinician(&state.stores.pg, clinician_id).await?;
    if !is_clinician || !(who.role == Role::Admin || who.user_id.as_uuid() == clinician_id) {
        return Err(ApiError::not_found());
    }
    Ok(())
}

fn ok_json<T: Serialize>(v: &T) -> HttpResponse {
    HttpResponse::Ok().json(v)
}

// ---------------------------------------------------------------------------------------------
// Schedules

/// `PUT /v1/clinicians/{id}/schedule`: replaces the clinician's weekly rules and exceptions.
#[utoipa::path(put, path = "/v1/clinicians/{id}/schedule", tag = "booking", security(("bearer" = ["schedule:manage"])),
    params(("id" = Uuid, Path)), request_body = ScheduleBody,
    responses((status = 200, body = ScheduleView), (status = 400, description = "invalid_field"), (status = 404)))]
#[tracing::instrument(skip_all)]
pub async fn put_schedule(
    state: web::Data<AppState>,
    req: HttpRequest,
    who: Require<perm::ScheduleManage>,
    body: crate::http::Json<ScheduleBody>,
) -> Result<HttpResponse, ApiError> {
    let id = path_id(&req, "id")?;
    require_manage(&state, &who, id).await?;
    let body = body.parse()?;
    let (horizon, notice) = check_schedule(&body, state.clock.now())?;
    let rules: Vec<slots::Rule> = body
        .weekly
        .iter()
        .map(|w| slots::Rule { weekday: w.weekday.get() as u32, start: w.start.get(), end: w.end.get() })
        .collect();
    let exceptions: Vec<slots::Exception> = body
        .exceptions
        .iter()
        .map(|e| slots::Exception {
            day: e.date.get(),
            extra: e.kind == ExceptionKind::Extra,
            hours: e.start.map(ClockTime::get).zip(e.end.map(ClockTime::get)),
        })
        .collect();
    let schedule = store::NewSchedule {
        tz: body.time_zone.get(),
        horizon_days: horizon,
        min_notice_min: notice,
        rules: &rules,
        exceptions: &exceptions,
    };
    store::put_schedule(&state.stores.pg, id, schedule, state.clock.now()).await?;
    state.calendars.invalidate(id);
    auth::audit(&state, &req, Some(&who), AuditEvent::new("schedule.update", "success").target("clinician", id))
        .await?;
    Ok(ok_json(&schedule_view(&state, id).await?))
}

/// Refuses a schedule whose size or dates make no sense, before anything is stored: the
/// bounds are in `docs/booking.md` and `docs/security.md` (Bounded work). Answers the
/// horizon and notice to store.
fn check_schedule(body: &ScheduleBody, now: DateTime<Utc>) -> Result<(i32, i32), ApiError> {
    let tz = body.time_zone.get();
    let horizon = body.horizon_days.map_or(60, Int::get_i32);
    if !(1..=booking::MAX_HORIZON_DAYS).contains(&horizon) {
        return Err(ApiError::field(Code::InvalidField, "horizon_days", "horizon_days must be 1-730"));
    }
    let notice = body.min_notice_minutes.map_or(0, Int::get_i32);
    if body.weekly.len() > booking::MAX_WEEKLY_WINDOWS {
        return Err(ApiError::field(
            Code::InvalidField,
            "weekly",
            format!("at most {} weekly windows", booking::MAX_WEEKLY_WINDOWS),
        ));
    }
    if body.exceptions.len() > booking::MAX_EXCEPTIONS {
        return Err(ApiError::field(
            Code::InvalidField,
            "exceptions",
            format!("at most {} exceptions", booking::MAX_EXCEPTIONS),
        ));
    }
    for (i, w) in body.weekly.iter().enumerate() {
        if w.end <= w.start {
            return Err(ApiError::field(Code::InvalidField, format!("weekly[{i}]"), "end after start"));
        }
        // At most 70 windows: the pairwise check is at most 2,415 comparisons.
        if let Some(j) =
            body.weekly[..i].iter().position(|o| o.weekday == w.weekday && o.start < w.end && w.start < o.end)
        {
            return Err(ApiError::field(Code::InvalidField, format!("weekly[{i}]"), format!("overlaps weekly[{j}]")));
        }
    }
    let today = now.with_timezone(&tz).date_naive();
    let (first, last) =
        (today - Duration::days(booking::MAX_PAST_DAYS), today + Duration::days(booking::MAX_FUTURE_DAYS));
    for (i, e) in body.exceptions.iter().enumerate() {
        if e.date.get() < first || e.date.get() > last {
            return Err(ApiError::field(
                Code::InvalidField,
                format!("exceptions[{i}].date"),
                format!(
                    "must lie within {} days before and {} days after today",
                    booking::MAX_PAST_DAYS,
                    booking::MAX_FUTURE_DAYS
                ),
            ));
        }
        let ok = match (e.kind, e.start, e.end) {
            (ExceptionKind::Off, None, None) => true,
            (_, Some(s), Some(en)) => en > s,
            _ => false,
        };
        if !ok {
            return Err(ApiError::field(
                Code::InvalidField,
                format!("exceptions[{i}]"),
                "kind off|extra; extra needs start < end",
            ));
        }
    }
    Ok((horizon, notice))
}

async fn schedule_view(state: &AppState, id: Uuid) -> Result<ScheduleView, ApiError> {
    let s = store::load_schedule(&state.stores.pg, id).await?.ok_or_else(ApiError::not_found)?;
    let mut weekly = s
        .rules
        .iter()
        .map(|r| {
            let weekday = Int::new(i64::from(r.weekday)).map_err(ApiError::internal)?;
            Ok(WeeklyWindow { weekday, start: r.start.into(), end: r.end.into() })
        })
        .collect::<Result<Vec<WeeklyWindow>, ApiError>>()?;
    weekly.sort_by_key(|w| (w.weekday, w.start));
    let mut exceptions = s
        .exceptions
        .iter()
        .map(|e| {
            Ok(ScheduleException {
                date: Day::try_from(e.day).map_err(ApiError::internal)?,
                kind: if e.extra { ExceptionKind::Extra } else { ExceptionKind::Off },
                start: e.hours.map(|h| h.0.into()),
                end: e.hours.map(|h| h.1.into()),
            })
        })
        .collect::<Result<Vec<ScheduleException>, ApiError>>()?;
    exceptions.sort_by_key(|e| (e.date, e.start));
    Ok(ScheduleView {
        clinician_id: id,
        time_zone: s.tz.name().into(),
        horizon_days: s.horizon_days,
        min_notice_minutes: s.min_notice_min,
        weekly,
        exceptions,
        appointment_types: store::list_types(&state.stores.pg, id).await?,
    })
}

/// `GET /v1/clinicians/{id}/schedule`: the schedule and its appointment types.
#[utoipa::path(get, path = "/v1/clinicians/{id}/schedule", tag = "booking", security(("bearer" = ["bookings:read"])),
    params(("id" = Uuid, Path)), responses((status = 200, body = ScheduleView), (status = 404)))]
#[tracing::instrument(skip_all)]
pub async fn get_schedule(
    state: web::Data<AppState>,
    req: HttpRequest,
    _who: Require<perm::BookingsRead>,
) -> Result<HttpResponse, ApiError> {
    let id = path_id(&req, "id")?;
    Ok(ok_json(&schedule_view(&state, id).await?))
}

/// `POST /v1/clinicians/{id}/appointment-types`
#[utoipa::path(post, path = "/v1/clinicians/{id}/appointment-types", tag = "booking", security(("bearer" = ["schedule:manage"])),
    params(("id" = Uuid, Path)), request_body = TypeBody,
    responses((status = 201, body = AppointmentType), (status = 400, description = "invalid_field"), (status = 404)))]
#[tracing::instrument(skip_all)]
pub async fn create_type(
    state: web::Data<AppState>,
    req: HttpRequest,
    who: Require<perm::ScheduleManage>,
    body: crate::http::Json<TypeBody>,
) -> Result<HttpResponse, ApiError> {
    let id = path_id(&req, "id")?;
    require_manage(&state, &who, id).await?;
    let b = body.parse()?;
    let buffer = |v: Option<Int<0, 240>>| v.map_or(0, Int::get_i32);
    let new = store::NewType {
        name: b.name.as_str(),
        duration_min: b.duration_minutes.get_i32(),
        buffer_before_min: buffer(b.buffer_before_minutes),
        buffer_after_min: buffer(b.buffer_after_minutes),
        modality: b.modality.as_str(),
    };
    let ty = store::create_type(&state.stores.pg, id, new, state.clock.now()).await?;
    state.calendars.invalidate(id);
    auth::audit(
        &state,
        &req,
        Some(&who),
        AuditEvent::new("appointment_type.create", "success").target("appointment_type", ty.id),
    )
    .await?;
    Ok(HttpResponse::Created().json(ty))
}

// ---------------------------------------------------------------------------------------------
// Slots

/// `GET /v1/slots`: free slots of one appointment type, written in the caller's zone.
#[utoipa::path(get, path = "/v1/slots", tag = "booking", security(("bearer" = ["bookings:read"])), params(SlotsQuery),
    responses((status = 200, body = SlotList), (status = 400, description = "invalid_field"), (status = 404)))]
#[tracing::instrument(skip_all)]
pub async fn slots(
    state: web::Data<AppState>,
    req: HttpRequest,
    _who: Require<perm::BookingsRead>,
) -> Result<HttpResponse, ApiError> {
    let q: SlotsQuery = parse_query(&req)?;
    // The window sizes slot generation: bounded before the schedule is read.
    let now = state.clock.now();
    let from = q.from.map(|d| d.get().with_timezone(&Utc)).unwrap_or(now);
    booking::check_instant("from", from, now)?;
    let to = q.to.map(|d| d.get().with_timezone(&Utc)).unwrap_or(from + Duration::days(7));
    if to <= from || to - from > Duration::days(booking::MAX_SLOT_RANGE_DAYS) {
        return Err(ApiError::field(
            Code::InvalidField,
            "to",
            format!("to must be after from, at most {} days", booking::MAX_SLOT_RANGE_DAYS),
        ));
    }
    booking::check_instant("to", to, now)?;
    let (sched, ty) = clinician_type(&state, q.clinician, q.type_id).await?;
    let out_tz: Tz = q.tz.map_or(sched.tz, TimeZone::get);
    let free = booking::free_slots(&state.stores.pg, state.clock.now(), &sched, &ty, from, to).await?;
    Ok(ok_json(&SlotList {
        clinician_id: q.clinician,
        type_id: q.type_id,
        time_zone: out_tz.name().into(),
        slots: free
            .into_iter()
            .map(|(s, e)| SlotView {
                start: s.with_timezone(&out_tz).to_rfc3339(),
                end: e.with_timezone(&out_tz).to_rfc3339(),
            })
            .collect(),
    }))
}

// ---------------------------------------------------------------------------------------------
// Appointments

pub(crate) fn idempotency_key(req: &HttpRequest) -> Result<Option<String>, ApiError> {
    let Some(v) = req.headers().get("idempotency-key") else { return Ok(None) };
    let bad = |why: &str| ApiError::field(Code::InvalidField, "Idempotency-Key", format!("`Idempotency-Key` {why}"));
    let s = v.to_str().map_err(|_| bad(IdempotencyKey::RULE))?;
    Ok(Some(IdempotencyKey::new(s).map_err(bad)?.into_inner()))
}

/// `POST /v1/appointments`: holds a slot (5 minutes) or, with `confirm`, books it.
/// Replaying an `Idempotency-Key` answers the appointment it created (200).
#[utoipa::path(post, path = "/v1/appointments", tag = "booking", security(("bearer" = ["bookings:write"])), request_body = CreateAppointment,
    params(("Idempotency-Key" = inline(Option<IdempotencyKey>), Header, nullable = false, description = "makes retries safe")),
    responses((status = 201, body = Appointment), (status = 200, body = Appointment, description = "idempotent replay"),
              (status = 400, description = "invalid_field"), (status = 404), (status = 409, description = "slot_taken"),
              (status = 429, description = "too_many_holds")))]
#[tracing::instrument(skip_all)]
pub async fn create(
    state: web::Data<AppState>,
    req: HttpRequest,
    who: Require<perm::BookingsWrite>,
    body: crate::http::Json<CreateAppointment>,
) -> Result<HttpResponse, ApiError> {
    let b = body.parse()?;
    let key = idempotency_key(&req)?;
    let (a, replayed) = place(&state, &req, &who, b, key).await?;
    Ok(if replayed {
        ok_json(&a)
    } else {
        HttpResponse::Created().insert_header(("Location", format!("/v1/appointments/{}", a.id))).json(a)
    })
}

/// Holds or books a slot for `who` (the REST and FHIR `$book` entry points); answers the
/// appointment and whether it is the replay of an earlier request with the same key.
pub(crate) async fn place(
    state: &web::Data<AppState>,
    req: &HttpRequest,
    who: &Principal,
    b: CreateAppointment,
    key: Option<String>,
) -> Result<(Appointment, bool), ApiError> {
    let start = b.start.get().with_timezone(&Utc);
    if let Some(k) = &key {
        if let Some(a) = store::by_idempotency_key(&state.stores.pg, who.user_id.as_uuid(), k).await? {
            if a.clinician_id != b.clinician_id || a.start_at != start {
                return Err(BookingError::KeyReused.into());
            }
            return Ok((a, true));
        }
    }
    let patient_id = patient_for(state, req, who, b.patient_id, "booking.hold").await?;
    let hold = NewHold {
        clinician_id: b.clinician_id,
        patient_id,
        type_id: b.type_id,
        start,
        confirm: b.confirm,
        created_by: who.user_id.as_uuid(),
        idempotency_key: key,
    };
    let action = if b.confirm { "booking.book" } else { "booking.hold" };
    match state.calendars.hold(hold).await {
        Ok(held) if held.replayed => Ok((held.appointment, true)),
        Ok(held) => {
            audit(state, req, who, action, "success", Some(&held.appointment), serde_json::json!({})).await?;
            Ok((held.appointment, false))
        }
        Err(e) => {
            let details = serde_json::json!({"code": e.code().as_str(), "clinician_id": b.clinician_id, "patient_id": patient_id});
            audit(state, req, who, action, "failure", None, details).await?;
            Err(e.into())
        }
    }
}

/// `GET /v1/appointments/{id}`
#[utoipa::path(get, path = "/v1/appointments/{id}", tag = "booking", security(("bearer" = ["bookings:read"])),
    params(("id" = Uuid, Path)), responses((status = 200, body = Appointment), (status = 404)))]
#[tracing::instrument(skip_all)]
pub async fn get(
    state: web::Data<AppState>,
    req: HttpRequest,
    who: Require<perm::BookingsRead>,
) -> Result<HttpResponse, ApiError> {
    let id = path_id(&req, "id")?;
    let a = visible(&state, &req, &who, id, "booking.read").await?;
    audit(&state, &req, &who, "booking.read", "success", Some(&a), serde_json::json!({})).await?;
    Ok(ok_json(&a))
}

/// Appointments matching `q` the caller may see (patient: own; clinician: own calendar or a
/// named patient they may see; admin: any).
pub async fn search(
    state: &AppState,
    req: &HttpRequest,
    who: &Principal,
    q: &AppointmentQuery,
) -> Result<Vec<Appointment>, ApiError> {
    let patient = match (who.role, q.patient) {
        (Role::Patient, None) => who.patient_id,
        (_, p) => p.map(PatientId::from_uuid),
    };
    if let Some(p) = patient {
        state.access.patient(&auth::caller_of(req, state, who), p, "booking.search").await?;
    }
    let patient = patient.map(|p| p.as_uuid());
    let clinician = match (who.role, patient, q.clinician) {
        (Role::Clinician, None, None) => Some(who.user_id.as_uuid()),
        (Role::Clinician, None, Some(c)) if c != who.user_id.as_uuid() => return Err(ApiError::not_found()),
        (Role::Admin, None, None) => {
            return Err(ApiError::field(Code::InvalidField, "patient", "name a patient or a clinician"))
        }
        (_, _, c) => c,
    };
    let from = q.from.map(|d| d.get().with_timezone(&Utc));
    let to = q.to.map(|d| d.get().with_timezone(&Utc));
    if let (Some(f), Some(t)) = (from, to) {
        if t <= f {
            return Err(ApiError::field(Code::InvalidField, "to", "to must be after from"));
        }
    }
    Ok(store::search(&state.stores.pg, patient, clinician, from, to).await?)
}

/// `GET /v1/appointments?patient=&clinician=&from=&to=`
#[utoipa::path(get, path = "/v1/appointments", tag = "booking", security(("bearer" = ["bookings:read"])), params(AppointmentQuery),
    responses((status = 200, body = AppointmentList), (status = 400), (status = 404)))]
#[tracing::instrument(skip_all)]
pub async fn list(
    state: web::Data<AppState>,
    req: HttpRequest,
    who: Require<perm::BookingsRead>,
) -> Result<HttpResponse, ApiError> {
    let q: AppointmentQuery = parse_query(&req)?;
    let appointments = search(&state, &req, &who, &q).await?;
    auth::audit(
        &state,
        &req,
        Some(&who),
        AuditEvent::new("booking.search", "success")
            .details(serde_json::json!({"ids": appointments.iter().map(|a| a.id).collect::<Vec<_>>()})),
    )
    .await?;
    Ok(ok_json(&AppointmentList { appointments }))
}

/// `POST /v1/appointments/{id}/confirm`: turns a live hold into a booking.
#[utoipa::path(post, path = "/v1/appointments/{id}/confirm", tag = "booking", security(("bearer" = ["bookings:write"])),
    params(("id" = Uuid, Path)),
    responses((status = 200, body = Appointment), (status = 404), (status = 409, description = "hold_expired, conflict")))]
#[tracing::instrument(skip_all)]
pub async fn confirm(
    state: web::Data<AppState>,
    req: HttpRequest,
    who: Require<perm::BookingsWrite>,
) -> Result<HttpResponse, ApiError> {
    let id = path_id(&req, "id")?;
    let cur = visible(&state, &req, &who, id, "booking.confirm").await?;
    let res = state.calendars.confirm(cur.clinician_id, id).await;
    finish(&state, &req, &who, "booking.confirm", &cur, res).await
}

async fn finish(
    state: &AppState,
    req: &HttpRequest,
    who: &Principal,
    action: &str,
    cur: &Appointment,
    res: Result<Appointment, BookingError>,
) -> Result<HttpResponse, ApiError> {
    match res {
        Ok(a) => {
            audit(state, req, who, action, "success", Some(&a), serde_json::json!({"from": cur.id})).await?;
            Ok(ok_json(&a))
        }
        Err(e) => {
            audit(state, req, who, action, "failure", Some(cur), serde_json::json!({"code": e.code().as_str()}))
                .await?;
            Err(e.into())
        }
    }
}

/// `POST /v1/appointments/{id}/cancel`: by the patient or staff, with a reason. The freed
/// time goes to the first matching waitlist entry.
#[utoipa::path(post, path = "/v1/appointments/{id}/cancel", tag = "booking", security(("bearer" = ["bookings:write"])),
    params(("id" = Uuid, Path)), request_body = CancelBody,
    responses((status = 200, body = Appointment), (status = 400), (status = 404), (status = 409)))]
#[tracing::instrument(skip_all)]
pub async fn cancel(
    state: web::Data<AppState>,
    req: HttpRequest,
    who: Require<perm::BookingsWrite>,
    body: crate::http::Json<CancelBody>,
) -> Result<HttpResponse, ApiError> {
    let id = path_id(&req, "id")?;
    let cur = visible(&state, &req, &who, id, "booking.cancel").await?;
    let b = body.parse()?;
    let msg = booking::Cancel { id, by: who.user_id.as_uuid(), reason: b.reason.as_str().to_string() };
    let res = state.calendars.cancel(cur.clinician_id, msg).await;
    finish(&state, &req, &who, "booking.cancel", &cur, res).await
}

/// `POST /v1/appointments/{id}/reschedule`: atomically moves a hold or booking; answers the
/// new appointment (the old one is `cancelled` with reason `rescheduled`).
#[utoipa::path(post, path = "/v1/appointments/{id}/reschedule", tag = "booking", security(("bearer" = ["bookings:write"])),
    params(("id" = Uuid, Path)), request_body = RescheduleBody,
    responses((status = 200, body = Appointment), (status = 400), (status = 404), (status = 409, description = "slot_taken")))]
#[tracing::instrument(skip_all)]
pub async fn reschedule(
    state: web::Data<AppState>,
    req: HttpRequest,
    who: Require<perm::BookingsWrite>,
    body: crate::http::Json<RescheduleBody>,
) -> Result<HttpResponse, ApiError> {
    let id = path_id(&req, "id")?;
    let cur = visible(&state, &req, &who, id, "booking.reschedule").await?;
    let b = body.parse()?;
    let msg = booking::Reschedule {
        id,
        by: who.user_id.as_uuid(),
        type_id: b.type_id.unwrap_or(cur.type_id),
        start: b.start.get().with_timezone(&Utc),
    };
    let res = state.calendars.reschedule(cur.clinician_id, msg).await;
    finish(&state, &req, &who, "booking.reschedule", &cur, res).await
}

/// `POST /v1/appointments/{id}/no-show`: staff mark a started booking as a no-show.
#[utoipa::path(post, path = "/v1/appointments/{id}/no-show", tag = "booking", security(("bearer" = ["bookings:write"])),
    params(("id" = Uuid, Path)), responses((status = 200, body = Appointment), (status = 403), (status = 404), (status = 409)))]
#[tracing::instrument(skip_all)]
pub async fn no_show(
    state: web::Data<AppState>,
    req: HttpRequest,
    who: Require<perm::BookingsWrite>,
) -> Result<HttpResponse, ApiError> {
    let id = path_id(&req, "id")?;
    let cur = visible(&state, &req, &who, id, "booking.no_show").await?;
    if who.role == Role::Patient {
        audit(&state, &req, &who, "booking.no_show", "denied", Some(&cur), serde_json::json!({})).await?;
        return Err(ApiError::forbidden());
    }
    let res = state.calendars.no_show(cur.clinician_id, id).await;
    finish(&state, &req, &who, "booking.no_show", &cur, res).await
}

// ---------------------------------------------------------------------------------------------
// Waitlist

/// `POST /v1/waitlist`: waits for a freed slot of the clinician between `from` and `to`.
/// When one frees, the first waiting entry gets a hold (an offer, `booking.offered` event)
/// to confirm; an offer left to lapse passes to the next entry.
#[utoipa::path(post, path = "/v1/waitlist", tag = "booking", security(("bearer" = ["bookings:write"])), request_body = WaitlistBody,
    responses((status = 201, body = WaitlistEntry), (status = 400), (status = 404)))]
#[tracing::instrument(skip_all)]
pub async fn join_waitlist(
    state: web::Data<AppState>,
    req: HttpRequest,
    who: Require<perm::BookingsWrite>,
    body: crate::http::Json<WaitlistBody>,
) -> Result<HttpResponse, ApiError> {
    let b = body.parse()?;
    let (from, to) = (b.from.get().with_timezone(&Utc), b.to.get().with_timezone(&Utc));
    let now = state.clock.now();
    booking::check_instant("from", from, now)?;
    if to <= from || to - from > Duration::days(MAX_WAITLIST_DAYS) {
        return Err(ApiError::field(
            Code::InvalidField,
            "to",
            format!("to must be after from, at most {MAX_WAITLIST_DAYS} days later"),
        ));
    }
    booking::check_instant("to", to, now)?;
    let patient_id = patient_for(&state, &req, &who, b.patient_id, "waitlist.join").await?;
    clinician_type(&state, b.clinician_id, b.type_id).await?;
    let w = store::join_waitlist(&state.stores.pg, b.clinician_id, patient_id, b.type_id, (from, to), now).await?;
    auth::audit(
        &state,
        &req,
        Some(&who),
        AuditEvent::new("waitlist.join", "success")
            .target("waitlist", w.id)
            .details(serde_json::json!({"patient_id": patient_id})),
    )
    .await?;
    Ok(HttpResponse::Created().json(w))
}

/// `GET /v1/waitlist/{id}`: the entry and, when offered, the held appointment to confirm.
#[utoipa::path(get, path = "/v1/waitlist/{id}", tag = "booking", security(("bearer" = ["bookings:read"])),
    params(("id" = Uuid, Path)), responses((status = 200, body = WaitlistEntry), (status = 404)))]
#[tracing::instrument(skip_all)]
pub async fn get_waitlist(
    state: web::Data<AppState>,
    req: HttpRequest,
    who: Require<perm::BookingsRead>,
) -> Result<HttpResponse, ApiError> {
    let id = path_id(&req, "id")?;
    let w = store::waitlist_entry(&state.stores.pg, id).await?.ok_or_else(ApiError::not_found)?;
    state
        .access
        .patient(&auth::caller_of(&req, &state, &who), PatientId::from_uuid(w.patient_id), "waitlist.read")
        .await?;
    auth::audit(&state, &req, Some(&who), AuditEvent::new("waitlist.read", "success").target("waitlist", w.id)).await?;
    Ok(ok_json(&w))
}

/// Registers the booking routes.
pub fn configure(cfg: &mut web::ServiceConfig) {
    use crate::http::resource;
    cfg.service(
        resource("/v1/clinicians/{id}/schedule").route(web::put().to(put_schedule)).route(web::get().to(get_schedule)),
    )
    .service(resource("/v1/clinicians/{id}/appointment-types").route(web::post().to(create_type)))
    .service(resource("/v1/slots").route(web::get().to(slots)))
    .service(resource("/v1/appointments").route(web::post().to(create)).route(web::get().to(list)))
    .service(resource("/v1/appointments/{id}").route(web::get().to(get)))
    .service(resource("/v1/appointments/{id}/confirm").route(web::post().to(confirm)))
    .service(resource("/v1/appointments/{id}/cancel").route(web::post().to(cancel)))
    .service(resource("/v1/appointments/{id}/reschedule").route(web::post().to(reschedule)))
    .service(resource("/v1/appointments/{id}/no-show").route(web::post().to(no_show)))
    .service(resource("/v1/waitlist").route(web::post().to(join_waitlist)))
    .service(resource("/v1/waitlist/{id}").route(web::get().to(get_waitlist)));
    cfg.configure(fhir::configure);
}
