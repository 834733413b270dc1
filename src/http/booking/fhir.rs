//! FHIR R4 views of booking: `Schedule` (one per clinician, id = the clinician's id),
//! `Slot` (free, busy, busy-tentative; generated, not stored) and `Appointment` (read and
//! search by patient, practitioner, date). Errors are `OperationOutcome`s.

use actix_web::{web, FromRequest, HttpRequest, HttpResponse};
use chrono::{DateTime, Duration, SecondsFormat, Utc};
use coherency_protocol::Code;
use serde::Deserialize;
use serde_json::{json, Value};
use uuid::Uuid;

use crate::audit::AuditEvent;
use crate::auth::{self, perm, Require};
use crate::booking::{self, Appointment};
use crate::error::ApiError;
use crate::http::fhir::{outcome, FHIR_JSON};
use crate::http::input::{invalid, Day, Instant, PatientRef, PractitionerRef, ScheduleRef};
use crate::http::patients::{parse_query, path_id};
use crate::state::AppState;

fn instant(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

fn ok(v: Value) -> HttpResponse {
    HttpResponse::Ok().content_type(FHIR_JSON).body(v.to_string())
}

fn respond(r: Result<HttpResponse, ApiError>) -> HttpResponse {
    r.unwrap_or_else(|e| outcome(&e))
}

fn bundle(req: &HttpRequest, kind: &str, resources: Vec<Value>) -> Value {
    let base = format!("{}://{}/fhir", req.connection_info().scheme(), req.connection_info().host());
    let total = resources.len();
    let entry: Vec<Value> = resources
        .into_iter()
        .map(|r| json!({"fullUrl": format!("{base}/{kind}/{}", r["id"].as_str().unwrap_or_default()), "resource": r, "search": {"mode": "match"}}))
        .collect();
    let mut b = json!({"resourceType": "Bundle", "type": "searchset", "total": total,
        "link": [{"relation": "self", "url": format!("{base}/{kind}?{}", req.query_string())}]});
    if !entry.is_empty() {
        b["entry"] = json!(entry);
    }
    b
}

/// The FHIR `Appointment` for a row.
pub fn appointment_resource(a: &Appointment) -> Value {
    let status = match a.status.as_str() {
        "held" => "pending",
        "booked" => "booked",
        "no_show" => "noshow",
        _ => "cancelled",
    };
    let mut r = json!({
        "resourceType": "Appointment",
        "id": a.id.to_string(),
        "meta": {"versionId": a.version.to_string(), "lastUpdated": instant(a.updated_at)},
        "status": status,
        "serviceType": [{"text": a.modality.replace('_', " ")}],
        "start": instant(a.start_at),
        "end": instant(a.end_at),
        "minutesDuration": (a.end_at - a.start_at).num_minutes(),
        "created": instant(a.created_at),
        "participant": [
            {"actor": {"reference": format!("Patient/{}", a.patient_id)}, "required": "required",
             "status": if status == "pending" { "tentative" } else { "accepted" }},
            {"actor": {"reference": format!("Practitioner/{}", a.clinician_id)}, "required": "required", "status": "accepted"},
        ],
    });
    if let Some(reason) = &a.cancel_reason {
        r["cancelationReason"] = json!({"text": reason});
    }
    r
}

/// The FHIR `Schedule` of a clinician.
pub fn schedule_resource(s: &booking::Schedule, now: DateTime<Utc>) -> Value {
    json!({
        "resourceType": "Schedule",
        "id": s.clinician_id.to_string(),
        "active": true,
        "actor": [{"reference": format!("Practitioner/{}", s.clinician_id)}],
        "planningHorizon": {"start": instant(now), "end": instant(now + Duration::days(s.horizon_days.into()))},
        "comment": format!("Availability in {}", s.tz.name()),
    })
}

fn slot_resource(clinician: Uuid, type_id: Uuid, start: DateTime<Utc>, end: DateTime<Utc>, status: &str) -> Value {
    json!({
        "resourceType": "Slot",
        "id": format!("{}-{}", type_id, start.timestamp()),
        "schedule": {"reference": format!("Schedule/{clinician}")},
        "status": status,
        "start": instant(start),
        "end": instant(end),
    })
}

/// `GET /fhir/Schedule/{id}`
#[utoipa::path(get, path = "/fhir/Schedule/{id}", tag = "fhir", security(("bearer" = ["bookings:read"])), params(("id" = Uuid, Path)),
    responses((status = 200, description = "Schedule (application/fhir+json)"), (status = 404, description = "OperationOutcome")))]
pub async fn read_schedule(state: web::Data<AppState>, req: HttpRequest) -> HttpResponse {
    respond(
        async {
            Require::<perm::BookingsRead>::extract(&req).await?;
            let id = path_id(&req, "id")?;
            let s = booking::load_schedule(&state.stores.pg, id).await?.ok_or_else(ApiError::not_found)?;
            Ok(ok(schedule_resource(&s, state.clock.now())))
        }
        .await,
    )
}

/// Query of `GET /fhir/Slot`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct SlotSearch {
    /// `Schedule/{clinician id}` or the id.
    #[param(inline)]
    pub schedule: ScheduleRef,
    /// Appointment type id (`service-type`).
    #[serde(rename = "service-type")]
    pub service_type: Uuid,
    /// A day, `YYYY-MM-DD` (UTC): at most 366 days before and 761 days after today.
    #[param(inline)]
    pub start: Day,
}

/// `GET /fhir/Slot?schedule=&service-type=&start=`: the day's slots, free or busy
/// (busy-tentative while held).
#[utoipa::path(get, path = "/fhir/Slot", tag = "fhir", security(("bearer" = ["bookings:read"])), params(SlotSearch),
    responses((status = 200, description = "Bundle searchset (application/fhir+json)"),
    (status = 404, description = "OperationOutcome: no such schedule or appointment type")))]
pub async fn search_slots(state: web::Data<AppState>, req: HttpRequest) -> HttpResponse {
    respond(
        async {
            Require::<perm::BookingsRead>::extract(&req).await?;
            let q: SlotSearch = parse_query(&req)?;
            // The day sizes slot generation (and a date near chrono's limits would overflow).
            booking::check_day("start", q.start.get(), state.clock.now())?;
            let cid = q.schedule.id();
            let sched = booking::load_schedule(&state.stores.pg, cid).await?.ok_or_else(ApiError::not_found)?;
            let ty = booking::load_type(&state.stores.pg, q.service_type)
                .await?
                .filter(|t| t.clinician_id == cid)
                .ok_or_else(ApiError::not_found)?;
            let from = q.start.get().and_time(chrono::NaiveTime::MIN).and_utc();
            let to = from + Duration::days(1);
            let now = state.clock.now();
            let cands = booking::candidate_slots(&sched, &ty, from, to, now);
            let s = ty.shape();
            let taken = booking::busy(&state.stores.pg, cid, from - s.buffer_before, to + s.buffer_after, now).await?;
            let out = cands
                .into_iter()
                .map(|(st, en)| {
                    let (bs, be) = (st - s.buffer_before, en + s.buffer_after);
                    let hit = taken.iter().find(|a| a.blocks(bs, be));
                    let status = match hit {
                        None => "free",
                        Some(a) if a.status == "held" => "busy-tentative",
                        Some(_) => "busy",
                    };
                    slot_resource(cid, ty.id, st, en, status)
                })
                .collect();
            Ok(ok(bundle(&req, "Slot", out)))
        }
        .await,
    )
}

/// `GET /fhir/Appointment/{id}`
#[utoipa::path(get, path = "/fhir/Appointment/{id}", tag = "fhir", security(("bearer" = ["bookings:read"])), params(("id" = Uuid, Path)),
    responses((status = 200, description = "Appointment (application/fhir+json)"), (status = 404, description = "OperationOutcome")))]
pub async fn read_appointment(state: web::Data<AppState>, req: HttpRequest) -> HttpResponse {
    respond(
        async {
            let who = Require::<perm::BookingsRead>::extract(&req).await?;
            let id = path_id(&req, "id")?;
            let a = booking::load(&state.stores.pg, id).await?.ok_or_else(ApiError::not_found)?;
            if !super::may_see(&state, &who, &a).await? {
                return Err(ApiError::not_found());
            }
            auth::audit(
                &state,
                &req,
                Some(&who),
                AuditEvent::new("fhir.appointment.read", "success").target("appointment", a.id),
            )
            .await?;
            Ok(ok(appointment_resource(&a)))
        }
        .await,
    )
}

/// Query of `GET /fhir/Appointment`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct AppointmentSearch {
    /// `Patient/{id}` or the id.
    #[param(inline)]
    pub patient: Option<PatientRef>,
    /// `Practitioner/{id}` or the id.
    #[param(inline)]
    pub practitioner: Option<PractitionerRef>,
    /// A day (UTC).
    #[param(inline)]
    pub date: Option<Day>,
}

fn reference(field: &str, kind: &str, v: Option<&str>) -> Result<Option<Uuid>, ApiError> {
    v.map(|s| {
        s.trim_start_matches(&format!("{kind}/"))
            .parse()
            .map_err(|_| ApiError::field(Code::InvalidField, field, format!("{kind}/{{id}}")))
    })
    .transpose()
}

/// `GET /fhir/Appointment?patient=&practitioner=&date=`
#[utoipa::path(get, path = "/fhir/Appointment", tag = "fhir", security(("bearer" = ["bookings:read"])), params(AppointmentSearch),
    responses((status = 200, description = "Bundle searchset (application/fhir+json)"),
    (status = 404, description = "OperationOutcome: no such patient or practitioner visible to the caller")))]
pub async fn search_appointments(state: web::Data<AppState>, req: HttpRequest) -> HttpResponse {
    respond(
        async {
            let who = Require::<perm::BookingsRead>::extract(&req).await?;
            let q: AppointmentSearch = parse_query(&req)?;
            let from = q.date.map(|d| d.get().and_time(chrono::NaiveTime::MIN).and_utc().fixed_offset());
            let day = |t| Instant::new(t).map_err(|why| invalid("date", why));
            let aq = super::AppointmentQuery {
                patient: q.patient.map(|p| p.id()),
                clinician: q.practitioner.map(|p| p.id()),
                from: from.map(day).transpose()?,
                to: from.map(|f| day(f + Duration::days(1))).transpose()?,
            };
            let found = super::search(&state, &req, &who, &aq).await?;
            auth::audit(
                &state,
                &req,
                Some(&who),
                AuditEvent::new("fhir.appointment.search", "success")
                    .details(json!({"ids": found.iter().map(|a| a.id).collect::<Vec<_>>()})),
            )
            .await?;
            Ok(ok(bundle(&req, "Appointment", found.iter().map(appointment_resource).collect())))
        }
        .await,
    )
}

/// Reads a `Slot/{type}-{epoch seconds}` reference (the ids `GET /fhir/Slot` hands out).
fn slot_reference(v: &Value) -> Result<(Uuid, DateTime<Utc>), ApiError> {
    let bad = || ApiError::field(Code::InvalidField, "slot", "one reference Slot/{id} from GET /fhir/Slot");
    let slots = v["slot"].as_array().ok_or_else(bad)?;
    let [only] = slots.as_slice() else { return Err(bad()) };
    let id = only["reference"].as_str().and_then(|r| r.strip_prefix("Slot/")).ok_or_else(bad)?;
    let (ty, secs) = id.rsplit_once('-').ok_or_else(bad)?;
    let ty: Uuid = ty.parse().map_err(|_| bad())?;
    let start = secs.parse::<i64>().ok().and_then(|s| DateTime::from_timestamp(s, 0)).ok_or_else(bad)?;
    Ok((ty, start))
}

/// Most participants a `$book` Appointment may list.
pub const MAX_PARTICIPANTS: usize = 2;

/// The body of `$book`, as the schema states it (documentation): a FHIR `Appointment` whose
/// `status` says book or hold, naming exactly one `Slot/{type id}-{epoch seconds}` (an id
/// `GET /fhir/Slot` hands out) and at most a Patient and a Practitioner. Its other elements
/// are the client's and are not read, but are JSON text all the same: every key one line,
/// every string free of control and bidirectional formatting characters ([`FhirElement`]).
pub struct BookRequest;

/// Any JSON value whose keys and strings obey the character rule (the elements of a FHIR
/// resource the server does not read).
pub struct FhirElement;

const ELEMENT_REF: &str = "#/components/schemas/FhirElement";

fn element() -> Value {
    json!({"$ref": ELEMENT_REF})
}

/// An object of the given properties whose other members are [`FhirElement`]s.
fn open_object(required: &[&str], properties: Value) -> Value {
    json!({
        "type": "object",
        "required": required,
        "properties": properties,
        "propertyNames": {"type": "string", "pattern": coherency_protocol::text::ONE_LINE_PATTERN},
        "additionalProperties": element(),
    })
}

fn doc_schema(v: Value) -> utoipa::openapi::RefOr<utoipa::openapi::Schema> {
    serde_json::from_value(v).unwrap_or_else(|e| unreachable!("static schema does not parse: {e}"))
}

impl utoipa::PartialSchema for BookRequest {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::Schema> {
        let uuid = "[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}";
        let slot = open_object(
            &["reference"],
            json!({"reference": {"type": "string", "pattern": format!("^Slot/{uuid}-[0-9]{{1,11}}$"),
                                 "description": "`Slot/{appointment type id}-{start, epoch seconds}` from `GET /fhir/Slot`"}}),
        );
        let actor = open_object(
            &["reference"],
            json!({"reference": {"type": "string", "pattern": format!("^(?:Patient|Practitioner)/{uuid}$")}}),
        );
        let mut book = open_object(
            &["resourceType", "status", "slot"],
            json!({
                "resourceType": {"type": "string", "enum": ["Appointment"]},
                "status": {"type": "string", "enum": ["booked", "proposed", "pending"],
                           "description": "`booked` books the slot; `proposed` or `pending` holds it"},
                "slot": {"type": "array", "items": slot, "minItems": 1, "maxItems": 1},
                "participant": {"type": "array", "maxItems": MAX_PARTICIPANTS,
                                "items": open_object(&["actor"], json!({"actor": actor})),
                                "description": "`Patient/{id}` (default: the caller) and `Practitioner/{id}` (the slot's owner)"},
            }),
        );
        book["description"] = json!("A FHIR R4 `Appointment` naming one slot; other elements are not read");
        doc_schema(book)
    }
}

impl utoipa::ToSchema for BookRequest {
    fn schemas(schemas: &mut Vec<(String, utoipa::openapi::RefOr<utoipa::openapi::Schema>)>) {
        schemas.push(("FhirElement".into(), <FhirElement as utoipa::PartialSchema>::schema()));
    }
}

impl utoipa::PartialSchema for FhirElement {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::Schema> {
        doc_schema(json!({
            "description": "A JSON value whose keys are one line and whose strings hold no control (but tab and line breaks) or bidirectional formatting character",
            "anyOf": [
                {"type": ["null", "boolean", "number"]},
                {"type": "string", "pattern": coherency_protocol::text::MANY_LINES_PATTERN},
                {"type": "array", "items": element()},
                {"type": "object", "propertyNames": {"type": "string", "pattern": coherency_protocol::text::ONE_LINE_PATTERN},
                 "additionalProperties": element()},
            ]
        }))
    }
}

/// The `Patient/{id}` and `Practitioner/{id}` participants named in an Appointment.
fn participants(v: &Value) -> Result<(Option<Uuid>, Option<Uuid>), ApiError> {
    let (mut patient, mut practitioner) = (None, None);
    let all = v["participant"].as_array().map(Vec::as_slice).unwrap_or_default();
    if all.len() > MAX_PARTICIPANTS {
        return Err(ApiError::field(
            Code::InvalidField,
            "participant",
            format!("at most {MAX_PARTICIPANTS} participants (a Patient and a Practitioner)"),
        ));
    }
    for p in all {
        let r = p["actor"]["reference"].as_str().unwrap_or_default();
        if r.starts_with("Patient/") {
            patient = reference("participant", "Patient", Some(r))?;
        } else if r.starts_with("Practitioner/") {
            practitioner = reference("participant", "Practitioner", Some(r))?;
        } else {
            return Err(ApiError::field(
                Code::InvalidField,
                "participant",
                "actors are Patient/{id} or Practitioner/{id}",
            ));
        }
    }
    Ok((patient, practitioner))
}

/// `POST /fhir/Appointment/$book`: books (`status: booked`) or holds (`proposed`/`pending`) the
/// one Slot the Appointment names, for its Patient participant (default: the caller). Same
/// rules, audit and `Idempotency-Key` as `POST /v1/appointments`; a taken slot is a 409
/// OperationOutcome with code `slot_taken`.
#[utoipa::path(post, path = "/fhir/Appointment/$book", tag = "fhir", security(("bearer" = ["bookings:write"])),
    request_body(content = BookRequest, description = "FHIR Appointment with one slot reference", content_type = "application/fhir+json"),
    params(("Idempotency-Key" = inline(Option<crate::http::input::IdempotencyKey>), Header, nullable = false, description = "makes retries safe")),
    responses((status = 201, description = "Appointment (application/fhir+json)"), (status = 200, description = "idempotent replay"),
              (status = 400, description = "OperationOutcome invalid_field"), (status = 409, description = "OperationOutcome slot_taken")))]
pub async fn book(state: web::Data<AppState>, req: HttpRequest, body: web::Bytes) -> HttpResponse {
    respond(
        async {
            let who = Require::<perm::BookingsWrite>::extract(&req).await?;
            let v: Value = crate::http::json::parse(&body)?;
            if v["resourceType"] != "Appointment" {
                return Err(ApiError::field(Code::InvalidField, "resourceType", "must be Appointment"));
            }
            let confirm = match v["status"].as_str() {
                Some("booked") => true,
                Some("proposed" | "pending") => false,
                _ => {
                    return Err(ApiError::field(Code::InvalidField, "status", "booked, or proposed/pending for a hold"))
                }
            };
            let (type_id, start) = slot_reference(&v)?;
            let (patient_id, practitioner) = participants(&v)?;
            let clinician_id = crate::store::booking::type_clinician(&state.stores.pg, type_id)
                .await?
                .ok_or_else(|| ApiError::field(Code::InvalidField, "slot", "no such slot"))?;
            if practitioner.is_some_and(|p| p != clinician_id) {
                return Err(ApiError::field(
                    Code::InvalidField,
                    "participant",
                    "the Practitioner does not own this slot",
                ));
            }
            let start = Instant::new(start.fixed_offset()).map_err(|why| invalid("slot", why))?;
            let b = super::CreateAppointment { patient_id, clinician_id, type_id, start, confirm };
            let key = super::idempotency_key(&req)?;
            let (a, replayed) = super::place(&state, &req, &who, b, key).await?;
            let body = appointment_resource(&a).to_string();
            Ok(if replayed {
                HttpResponse::Ok().content_type(FHIR_JSON).body(body)
            } else {
                HttpResponse::Created()
                    .content_type(FHIR_JSON)
                    .insert_header(("Location", format!("/fhir/Appointment/{}", a.id)))
                    .body(body)
            })
        }
        .await,
    )
}

/// Registers the booking FHIR routes.
pub fn configure(cfg: &mut web::ServiceConfig) {
    use crate::http::resource;
    cfg.service(resource("/fhir/Appointment/$book").route(web::post().to(book)))
        .service(resource("/fhir/Schedule/{id}").route(web::get().to(read_schedule)))
        .service(resource("/fhir/Slot").route(web::get().to(search_slots)))
        .service(resource("/fhir/Appointment/{id}").route(web::get().to(read_appointment)))
        .service(resource("/fhir/Appointment").route(web::get().to(search_appointments)));
}
