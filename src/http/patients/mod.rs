//! Patient records: the profile (demographics, identifiers, encrypted national id and notes),
//! optimistic concurrency (`ETag` / `If-Match`), deactivation, keyset-paginated search, and
//! the audit row every PHI read, search, write and export leaves. Who may see a record is
//! decided once, by `crate::services::access` (`state.access.patient`, which audits a
//! refusal, and `state.access.can_see_patient`); every patient-scoped feature calls it.
//!
//! Sub-resources (clinical lists, contacts, coverages, consents, care team) live in
//! [`entries`]; the FHIR R4 face is `crate::http::fhir`.

pub mod entries;
pub mod seed;

use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64URL;
use base64::Engine;
use chrono::{DateTime, NaiveDate, Utc};
use coherency_protocol::ids::PatientId;
use coherency_protocol::Code;
use serde::{Deserialize, Serialize};
use sqlx::{PgPool, Postgres, QueryBuilder, Row};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::audit::AuditEvent;
use crate::auth::{self, perm, Principal, Require, Role};
use crate::error::ApiError;
use crate::http::input::{
    at_most, CountryCode, Cursor, Day, Email, EntityTag, LanguageTag, Line, Mrn, NameQuery, NationalId, PageSize,
    PersonName, Phone, Text,
};
use crate::state::AppState;

pub use seed::seed_patients;

/// Search page size when none is asked for (the bound is [`PageSize`]).
pub const DEFAULT_LIMIT: i64 = 20;
/// The organisation MRNs are unique within (single-tenant for now).
pub const DEFAULT_ORG: &str = "default";

/// Fields a patient may write on their own record; everything else is staff-only.
pub const PATIENT_WRITABLE: &[&str] = &["gender_identity", "preferred_language", "phone", "email", "address"];

// ---------------------------------------------------------------------------------------------
// Types

/// FHIR administrative gender.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Sex {
    Male,
    Female,
    Other,
    Unknown,
}

impl Sex {
    pub fn as_str(self) -> &'static str {
        match self {
            Sex::Male => "male",
            Sex::Female => "female",
            Sex::Other => "other",
            Sex::Unknown => "unknown",
        }
    }
    fn parse(s: &str) -> Self {
        match s {
            "male" => Sex::Male,
            "female" => Sex::Female,
            "other" => Sex::Other,
            _ => Sex::Unknown,
        }
    }
}

/// An address as a request sends it: at most 3 street lines, each one line.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AddressInput {
    /// Street lines.
    #[serde(default, deserialize_with = "at_most::<3, _, _>")]
    #[schema(max_items = 3)]
    pub lines: Vec<Line<1, 200>>,
    pub city: Option<Line<0, 200>>,
    /// State, province or county.
    pub region: Option<Line<0, 200>>,
    pub postal_code: Option<Line<0, 16>>,
    /// ISO 3166-1 alpha-2 (`GB`, `US`).
    pub country: Option<CountryCode>,
}

/// A postal address, as stored and answered.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Address {
    /// Street lines (at most 3).
    #[serde(default)]
    pub lines: Vec<String>,
    pub city: Option<String>,
    /// State, province or county.
    pub region: Option<String>,
    pub postal_code: Option<String>,
    /// ISO 3166-1 alpha-2 (`GB`, `US`).
    pub country: Option<String>,
}

/// `POST /v1/patients` body.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreatePatient {
    pub given_name: PersonName,
    pub family_name: PersonName,
    pub middle_name: Option<PersonName>,
    pub prefix: Option<PersonName>,
    pub suffix: Option<PersonName>,
    /// `YYYY-MM-DD`, 1900 to today.
    pub birth_date: Day,
    pub sex: Option<Sex>,
    pub gender_identity: Option<Line<0, 100>>,
    /// BCP 47 tag (`en`, `pt-BR`).
    pub preferred_language: Option<LanguageTag>,
    pub phone: Option<Phone>,
    pub email: Option<Email>,
    pub address: Option<AddressInput>,
    /// Medical record number (1–32 letters, digits or `-`), unique within the organisation.
    pub mrn: Option<Mrn>,
    /// 1–32 letters, digits, spaces or `-`; stored encrypted.
    pub national_id: Option<NationalId>,
    /// Free-text clinical notes; stored encrypted.
    pub notes: Option<Text<0, 4000>>,
}

pub use crate::input::Patch;

/// `PATCH /v1/patients/{id}` body (a merge patch: absent keeps, `null` clears; the names and
/// the birth date cannot be cleared, so they may not be `null`).
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields, default)]
pub struct UpdatePatient {
    #[schema(value_type = PersonName)]
    pub given_name: Patch<PersonName>,
    #[schema(value_type = PersonName)]
    pub family_name: Patch<PersonName>,
    #[schema(value_type = Option<PersonName>)]
    pub middle_name: Patch<PersonName>,
    #[schema(value_type = Option<PersonName>)]
    pub prefix: Patch<PersonName>,
    #[schema(value_type = Option<PersonName>)]
    pub suffix: Patch<PersonName>,
    /// `YYYY-MM-DD`, 1900 to today.
    #[schema(value_type = Day)]
    pub birth_date: Patch<Day>,
    #[schema(value_type = Option<Sex>)]
    pub sex: Patch<Sex>,
    #[schema(value_type = Option<Line<0, 100>>)]
    pub gender_identity: Patch<Line<0, 100>>,
    #[schema(value_type = Option<LanguageTag>)]
    pub preferred_language: Patch<LanguageTag>,
    #[schema(value_type = Option<Phone>)]
    pub phone: Patch<Phone>,
    #[schema(value_type = Option<Email>)]
    pub email: Patch<Email>,
    #[schema(value_type = Option<AddressInput>)]
    pub address: Patch<AddressInput>,
    #[schema(value_type = Option<Mrn>)]
    pub mrn: Patch<Mrn>,
    #[schema(value_type = Option<NationalId>)]
    pub national_id: Patch<NationalId>,
    #[schema(value_type = Option<Text<0, 4000>>)]
    pub notes: Patch<Text<0, 4000>>,
}

impl UpdatePatient {
    /// The fields this patch touches, in declaration order.
    pub fn fields(&self) -> Vec<&'static str> {
        let all: [(&'static str, bool); 15] = [
            ("given_name", self.given_name.is_set()),
            ("family_name", self.family_name.is_set()),
            ("middle_name", self.middle_name.is_set()),
            ("prefix", self.prefix.is_set()),
            ("suffix", self.suffix.is_set()),
            ("birth_date", self.birth_date.is_set()),
            ("sex", self.sex.is_set()),
            ("gender_identity", self.gender_identity.is_set()),
            ("preferred_language", self.preferred_language.is_set()),
            ("phone", self.phone.is_set()),
            ("email", self.email.is_set()),
            ("address", self.address.is_set()),
            ("mrn", self.mrn.is_set()),
            ("national_id", self.national_id.is_set()),
            ("notes", self.notes.is_set()),
        ];
        all.iter().filter(|(_, set)| *set).map(|(f, _)| *f).collect()
    }
}

/// A patient record as the API returns it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Patient {
    pub id: Uuid,
    /// The patient's own login, when they have one.
    pub user_id: Option<Uuid>,
    pub active: bool,
    pub organization_id: String,
    pub mrn: Option<String>,
    pub prefix: Option<String>,
    pub given_name: String,
    pub middle_name: Option<String>,
    pub family_name: String,
    pub suffix: Option<String>,
    #[schema(value_type = String, format = Date)]
    pub birth_date: NaiveDate,
    pub sex: Sex,
    pub gender_identity: Option<String>,
    pub preferred_language: Option<String>,
    pub phone: Option<String>,
    pub email: Option<String>,
    pub address: Option<Address>,
    pub national_id: Option<String>,
    pub notes: Option<String>,
    /// The concurrency version; the `ETag` is this number in quotes.
    pub version: i64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub deactivated_at: Option<DateTime<Utc>>,
}

/// One search hit (no national id, no notes).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct PatientSummary {
    pub id: Uuid,
    pub active: bool,
    pub mrn: Option<String>,
    pub given_name: String,
    pub middle_name: Option<String>,
    pub family_name: String,
    #[schema(value_type = String, format = Date)]
    pub birth_date: NaiveDate,
    pub sex: Sex,
}

/// A page of search results.
#[derive(Debug, Serialize, ToSchema)]
pub struct PatientPage {
    pub items: Vec<PatientSummary>,
    /// Pass as `cursor` for the next page; absent on the last page.
    pub next_cursor: Option<String>,
}

/// A patients row as stored (protected fields still encrypted).
struct PatientRow {
    id: Uuid,
    user_id: Option<Uuid>,
    active: bool,
    organization_id: String,
    mrn: Option<String>,
    name_prefix: Option<String>,
    given_name: String,
    middle_name: Option<String>,
    family_name: String,
    name_suffix: Option<String>,
    birth_date: NaiveDate,
    sex: String,
    gender_identity: Option<String>,
    preferred_language: Option<String>,
    phone: Option<String>,
    email: Option<String>,
    address: Option<serde_json::Value>,
    national_id_enc: Option<String>,
    notes_enc: Option<String>,
    version: i64,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
    deactivated_at: Option<DateTime<Utc>>,
}

fn decrypt_opt(state: &AppState, v: Option<String>) -> Result<Option<String>, ApiError> {
    v.map(|c| state.field_key.decrypt(&c).map_err(ApiError::internal)).transpose()
}

fn from_row(state: &AppState, r: PatientRow) -> Result<Patient, ApiError> {
    Ok(Patient {
        id: r.id,
        user_id: r.user_id,
        active: r.active,
        organization_id: r.organization_id,
        mrn: r.mrn,
        prefix: r.name_prefix,
        given_name: r.given_name,
        middle_name: r.middle_name,
        family_name: r.family_name,
        suffix: r.name_suffix,
        birth_date: r.birth_date,
        sex: Sex::parse(&r.sex),
        gender_identity: r.gender_identity,
        preferred_language: r.preferred_language,
        phone: r.phone,
        email: r.email,
        address: r.address.map(serde_json::from_value).transpose().map_err(ApiError::internal)?,
        national_id: decrypt_opt(state, r.national_id_enc)?,
        notes: decrypt_opt(state, r.notes_enc)?,
        version: r.version,
        created_at: r.created_at,
        updated_at: r.updated_at,
        deactivated_at: r.deactivated_at,
    })
}

/// Loads a record (no access check).
pub async fn load(state: &AppState, id: Uuid) -> Result<Option<Patient>, ApiError> {
    let row = sqlx::query_as!(
        PatientRow,
        "SELECT id, user_id, active, organization_id, mrn, name_prefix, given_name, middle_name, family_name,
                name_suffix, birth_date, sex, gender_identity, preferred_language, phone, email, address,
                national_id_enc, notes_enc, version, created_at, updated_at, deactivated_at
         FROM patients WHERE id = $1",
        id,
    )
    .fetch_optional(&state.stores.pg)
    .await?;
    row.map(|r| from_row(state, r)).transpose()
}

// ---------------------------------------------------------------------------------------------
// Validation

/// A birth date: a [`Day`] (from 1900) that is not after today.
pub fn birth_date(d: Day, today: NaiveDate, field: &str) -> Result<NaiveDate, ApiError> {
    not_future(d, today, field).map(Day::get)
}

/// A date that is not after today (its lower bound, 1900-01-01, is [`Day`]'s). "Today" moves,
/// so no schema can state this rule; the field's description does.
pub fn not_future(d: Day, today: NaiveDate, field: &str) -> Result<Day, ApiError> {
    if d.get() > today {
        return Err(ApiError::field(Code::InvalidField, field, format!("`{field}` must not be after today")));
    }
    Ok(d)
}

/// A phone number as stored: without separators.
pub fn phone(p: Phone) -> String {
    p.normalise().into_inner()
}

fn address(a: AddressInput) -> Address {
    Address {
        lines: a.lines.into_iter().map(Line::into_inner).collect(),
        city: a.city.and_then(Line::non_empty),
        region: a.region.and_then(Line::non_empty),
        postal_code: a.postal_code.and_then(Line::non_empty),
        country: a.country.filter(|c| !c.is_empty()).map(|c| c.to_ascii_uppercase()),
    }
}

/// The validated, plaintext form of every writable column.
#[derive(Debug, Clone)]
struct Profile {
    given_name: String,
    family_name: String,
    middle_name: Option<String>,
    prefix: Option<String>,
    suffix: Option<String>,
    birth_date: NaiveDate,
    sex: Sex,
    gender_identity: Option<String>,
    preferred_language: Option<String>,
    phone: Option<String>,
    email: Option<String>,
    address: Option<Address>,
    mrn: Option<String>,
    national_id: Option<String>,
    notes: Option<String>,
}

impl Profile {
    fn from_patient(p: &Patient) -> Self {
        Self {
            given_name: p.given_name.clone(),
            family_name: p.family_name.clone(),
            middle_name: p.middle_name.clone(),
            prefix: p.prefix.clone(),
            suffix: p.suffix.clone(),
            birth_date: p.birth_date,
            sex: p.sex,
            gender_identity: p.gender_identity.clone(),
            preferred_language: p.preferred_language.clone(),
            phone: p.phone.clone(),
            email: p.email.clone(),
            address: p.address.clone(),
            mrn: p.mrn.clone(),
            national_id: p.national_id.clone(),
            notes: p.notes.clone(),
        }
    }

    fn from_create(c: CreatePatient, today: NaiveDate) -> Result<Self, ApiError> {
        Ok(Self {
            given_name: c.given_name.into_inner(),
            family_name: c.family_name.into_inner(),
            middle_name: c.middle_name.map(Line::into_inner),
            prefix: c.prefix.map(Line::into_inner),
            suffix: c.suffix.map(Line::into_inner),
            birth_date: birth_date(c.birth_date, today, "birth_date")?,
            sex: c.sex.unwrap_or(Sex::Unknown),
            gender_identity: c.gender_identity.and_then(Line::non_empty),
            preferred_language: c.preferred_language.map(LanguageTag::into_inner),
            phone: c.phone.map(phone),
            email: c.email.map(|e| e.normalise().into_inner()),
            address: c.address.map(address),
            mrn: c.mrn.map(Mrn::into_inner),
            national_id: c.national_id.map(|n| n.trim().to_string()),
            notes: c.notes.and_then(Text::non_empty),
        })
    }

    /// Applies a validated patch; `null` on a required field is refused naming it.
    fn apply(&mut self, p: UpdatePatient, today: NaiveDate) -> Result<(), ApiError> {
        fn required<T>(v: Patch<T>, field: &str) -> Result<Option<T>, ApiError> {
            v.required(|| ApiError::field(Code::InvalidField, field, format!("`{field}` cannot be cleared")))
        }
        if let Some(v) = required(p.given_name, "given_name")? {
            self.given_name = v.into_inner();
        }
        if let Some(v) = required(p.family_name, "family_name")? {
            self.family_name = v.into_inner();
        }
        if let Some(v) = required(p.birth_date, "birth_date")? {
            self.birth_date = birth_date(v, today, "birth_date")?;
        }
        match p.sex {
            Patch::Absent => {}
            Patch::Null => self.sex = Sex::Unknown,
            Patch::Value(s) => self.sex = s,
        }
        p.middle_name.apply(&mut self.middle_name, |s| Some(s.into_inner()));
        p.prefix.apply(&mut self.prefix, |s| Some(s.into_inner()));
        p.suffix.apply(&mut self.suffix, |s| Some(s.into_inner()));
        p.gender_identity.apply(&mut self.gender_identity, |s| s.non_empty());
        p.preferred_language.apply(&mut self.preferred_language, |s| Some(s.into_inner()));
        p.phone.apply(&mut self.phone, |s| Some(phone(s)));
        p.email.apply(&mut self.email, |s| Some(s.normalise().into_inner()));
        p.address.apply(&mut self.address, |a| Some(address(a)));
        p.mrn.apply(&mut self.mrn, |s| Some(s.into_inner()));
        p.national_id.apply(&mut self.national_id, |s| Some(s.trim().to_string()));
        p.notes.apply(&mut self.notes, |s| s.non_empty());
        Ok(())
    }
}

/// Refuses, naming the first one, fields the caller's role may not write.
pub fn check_writable(who: &Principal, fields: &[&'static str]) -> Result<(), ApiError> {
    if who.role != Role::Patient {
        return Ok(());
    }
    if let Some(f) = fields.iter().find(|f| !PATIENT_WRITABLE.contains(f)) {
        return Err(ApiError::field(Code::Forbidden, *f, format!("patients may not change `{f}`; ask your care team")));
    }
    Ok(())
}

fn mrn_conflict(e: sqlx::Error) -> ApiError {
    if let sqlx::Error::Database(db) = &e {
        if db.constraint() == Some("patients_org_mrn") {
            return ApiError::field(Code::Conflict, "mrn", "this MRN is already assigned in the organisation");
        }
    }
    e.into()
}

/// A uuid path segment, parsed after authorisation; malformed ids are missing resources.
pub fn path_id(req: &HttpRequest, name: &str) -> Result<Uuid, ApiError> {
    req.match_info().get(name).and_then(|s| s.parse().ok()).ok_or_else(ApiError::not_found)
}

// ---------------------------------------------------------------------------------------------
// ETag

/// The strong entity tag for a version.
pub fn etag(version: i64) -> String {
    format!("\"{version}\"")
}

/// The version `If-Match` names: 428 when absent, 412 when it cannot match anything.
pub fn if_match(req: &HttpRequest) -> Result<i64, ApiError> {
    let raw = req
        .headers()
        .get(header::IF_MATCH)
        .ok_or_else(|| ApiError::new(Code::PreconditionRequired, "send If-Match with the ETag you last read"))?;
    // A value that is not one of our entity tags matches no version: 412, as a stale one.
    raw.to_str()
        .ok()
        .and_then(|s| EntityTag::new(s).ok())
        .and_then(|t| t.version())
        .ok_or_else(|| ApiError::new(Code::PreconditionFailed, "If-Match does not match the current version"))
}

fn stale() -> ApiError {
    ApiError::new(Code::PreconditionFailed, "the record changed since you read it; read it again")
}

/// A profile's columns as stored: the address as JSON, the protected fields encrypted.
struct Stored {
    address: Option<serde_json::Value>,
    national_id_enc: Option<String>,
    notes_enc: Option<String>,
}

impl Profile {
    fn stored(&self, state: &AppState) -> Stored {
        Stored {
            address: self.address.as_ref().map(|a| serde_json::to_value(a).unwrap_or_default()),
            national_id_enc: self.national_id.as_deref().map(|v| state.field_key.encrypt(v)),
            notes_enc: self.notes.as_deref().map(|v| state.field_key.encrypt(v)),
        }
    }
}

fn with_etag(mut b: actix_web::HttpResponseBuilder, p: &Patient) -> HttpResponse {
    b.insert_header((header::ETAG, etag(p.version))).json(p)
}

// ---------------------------------------------------------------------------------------------
// Handlers

/// `POST /v1/patients`: a clinician (who joins the care team) or an admin creates a record.
#[utoipa::path(post, path = "/v1/patients", tag = "patients", security(("bearer" = ["patients:create"])), request_body = CreatePatient,
    responses((status = 201, body = Patient, description = "created; `ETag` header"), (status = 400, description = "invalid_field / unknown_field naming the field"),
    (status = 409, description = "conflict: MRN taken (field `mrn`)")))]
pub async fn create(
    state: web::Data<AppState>,
    req: HttpRequest,
    who: Require<perm::PatientsCreate>,
    body: crate::http::Json<CreatePatient>,
) -> Result<HttpResponse, ApiError> {
    let body = body.parse()?;
    let now = state.clock.now();
    let p = Profile::from_create(body, now.date_naive())?;
    let id = Uuid::now_v7();
    let mut tx = state.stores.pg.begin().await?;
    let enc = p.stored(&state);
    sqlx::query!(
        "INSERT INTO patients (id, given_name, family_name, middle_name, name_prefix, name_suffix, birth_date, sex,
             gender_identity, preferred_language, phone, email, address, mrn, national_id_enc, notes_enc,
             organization_id, created_by, created_at, updated_at)
         VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12,$13,$14,$15,$16,$17,$18,$19,$19)",
        id,
        &p.given_name,
        &p.family_name,
        p.middle_name.as_deref(),
        p.prefix.as_deref(),
        p.suffix.as_deref(),
        p.birth_date,
        p.sex.as_str(),
        p.gender_identity.as_deref(),
        p.preferred_language.as_deref(),
        p.phone.as_deref(),
        p.email.as_deref(),
        enc.address,
        p.mrn.as_deref(),
        enc.national_id_enc,
        enc.notes_enc,
        DEFAULT_ORG,
        who.user_id.as_uuid(),
        now,
    )
    .execute(&mut *tx)
    .await
    .map_err(mrn_conflict)?;
    if who.role == Role::Clinician {
        sqlx::query!(
            "INSERT INTO care_team (patient_id, clinician_id, role, added_at) VALUES ($1,$2,'primary',$3)",
            id,
            who.user_id.as_uuid(),
            now,
        )
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    auth::audit(&state, &req, Some(&who), AuditEvent::new("patient.create", "success").target("patient", id)).await?;
    let patient = load(&state, id).await?.ok_or_else(ApiError::not_found)?;
    Ok(with_etag(HttpResponse::Created(), &patient))
}

/// `GET /v1/patients/{id}`
#[utoipa::path(get, path = "/v1/patients/{id}", tag = "patients", security(("bearer" = ["patients:read"])), params(("id" = Uuid, Path)),
    responses((status = 200, body = Patient, description = "`ETag` header"), (status = 404, description = "no such patient, or not yours to see")))]
pub async fn read(
    state: web::Data<AppState>,
    req: HttpRequest,
    who: Require<perm::PatientsRead>,
) -> Result<HttpResponse, ApiError> {
    let id = path_id(&req, "id")?;
    state.access.patient(&auth::caller_of(&req, &state, &who), PatientId::from_uuid(id), "patient.read").await?;
    let p = load(&state, id).await?.ok_or_else(ApiError::not_found)?;
    auth::audit(&state, &req, Some(&who), AuditEvent::new("patient.read", "success").target("patient", id)).await?;
    Ok(with_etag(HttpResponse::Ok(), &p))
}

/// `PATCH /v1/patients/{id}`: a merge patch guarded by `If-Match`. Patients may change
/// only their contact details and identity preferences.
#[utoipa::path(patch, path = "/v1/patients/{id}", tag = "patients", security(("bearer" = ["patients:write"])), params(("id" = Uuid, Path),
    ("If-Match" = inline(EntityTag), Header, description = "the ETag last read")), request_body = UpdatePatient,
    responses((status = 200, body = Patient), (status = 400, description = "invalid_field naming the field"),
    (status = 403, description = "forbidden: a field the role may not write (named in `field`)"), (status = 404),
    (status = 412, description = "precondition_failed: stale ETag"), (status = 428, description = "precondition_required: no If-Match")))]
pub async fn update(
    state: web::Data<AppState>,
    req: HttpRequest,
    who: Require<perm::PatientsWrite>,
    body: crate::http::Json<UpdatePatient>,
) -> Result<HttpResponse, ApiError> {
    let id = path_id(&req, "id")?;
    state.access.patient(&auth::caller_of(&req, &state, &who), PatientId::from_uuid(id), "patient.update").await?;
    let patch = body.parse()?;
    let fields = patch.fields();
    check_writable(&who, &fields)?;
    let expected = if_match(&req)?;
    let now = state.clock.now();
    let mut tx = state.stores.pg.begin().await?;
    let row = sqlx::query_as!(
        PatientRow,
        "SELECT id, user_id, active, organization_id, mrn, name_prefix, given_name, middle_name, family_name,
                name_suffix, birth_date, sex, gender_identity, preferred_language, phone, email, address,
                national_id_enc, notes_enc, version, created_at, updated_at, deactivated_at
         FROM patients WHERE id = $1 FOR UPDATE",
        id,
    )
    .fetch_optional(&mut *tx)
    .await?
    .ok_or_else(ApiError::not_found)?;
    let current = from_row(&state, row)?;
    if current.version != expected {
        return Err(stale());
    }
    let mut p = Profile::from_patient(&current);
    p.apply(patch, now.date_naive())?;
    let enc = p.stored(&state);
    sqlx::query!(
        "UPDATE patients SET given_name=$2, family_name=$3, middle_name=$4, name_prefix=$5, name_suffix=$6, birth_date=$7,
             sex=$8, gender_identity=$9, preferred_language=$10, phone=$11, email=$12, address=$13, mrn=$14,
             national_id_enc=$15, notes_enc=$16, version = version + 1, updated_at=$17
         WHERE id = $1",
        id,
        &p.given_name,
        &p.family_name,
        p.middle_name.as_deref(),
        p.prefix.as_deref(),
        p.suffix.as_deref(),
        p.birth_date,
        p.sex.as_str(),
        p.gender_identity.as_deref(),
        p.preferred_language.as_deref(),
        p.phone.as_deref(),
        p.email.as_deref(),
        enc.address,
        p.mrn.as_deref(),
        enc.national_id_enc,
        enc.notes_enc,
        now,
    )
    .execute(&mut *tx)
    .await
    .map_err(mrn_conflict)?;
    tx.commit().await?;
    auth::audit(
        &state,
        &req,
        Some(&who),
        AuditEvent::new("patient.update", "success")
            .target("patient", id)
            .details(serde_json::json!({"fields": fields})),
    )
    .await?;
    let patient = load(&state, id).await?.ok_or_else(ApiError::not_found)?;
    Ok(with_etag(HttpResponse::Ok(), &patient))
}

/// `POST /v1/patients/{id}/deactivate`: the record stays (retention) but leaves searches.
#[utoipa::path(post, path = "/v1/patients/{id}/deactivate", tag = "patients", security(("bearer" = ["patients:deactivate"])), params(("id" = Uuid, Path)),
    responses((status = 200, body = Patient), (status = 404)))]
pub async fn deactivate(
    state: web::Data<AppState>,
    req: HttpRequest,
    who: Require<perm::PatientsDeactivate>,
) -> Result<HttpResponse, ApiError> {
    let id = path_id(&req, "id")?;
    state.access.patient(&auth::caller_of(&req, &state, &who), PatientId::from_uuid(id), "patient.deactivate").await?;
    let now = state.clock.now();
    sqlx::query!(
        "UPDATE patients SET active = false, deactivated_at = $2, version = version + 1, updated_at = $2
         WHERE id = $1 AND active",
        id,
        now,
    )
    .execute(&state.stores.pg)
    .await?;
    auth::audit(&state, &req, Some(&who), AuditEvent::new("patient.deactivate", "success").target("patient", id))
        .await?;
    let patient = load(&state, id).await?.ok_or_else(ApiError::not_found)?;
    Ok(with_etag(HttpResponse::Ok(), &patient))
}

// ---------------------------------------------------------------------------------------------
// Search

/// Who a search may return.
#[derive(Debug, Clone, Copy)]
pub enum Scope {
    /// Every record (admins).
    All,
    /// Patients on this clinician's care team or under their unexpired emergency access.
    Clinician { id: Uuid, now: DateTime<Utc> },
}

impl Scope {
    pub fn of(who: &Principal, now: DateTime<Utc>) -> Self {
        match who.role {
            Role::Admin => Scope::All,
            _ => Scope::Clinician { id: who.user_id.as_uuid(), now },
        }
    }
}

/// Parsed search criteria.
#[derive(Debug, Clone, Default)]
pub struct SearchParams {
    /// Words matched against the unaccented name, each by substring or trigram similarity.
    pub name: Option<String>,
    pub birth_date: Option<NaiveDate>,
    pub mrn: Option<String>,
    pub include_inactive: bool,
    pub limit: i64,
    /// Keyset position: the last row of the previous page.
    pub after: Option<(String, Uuid)>,
}

/// Name words: lower-cased, without LIKE metacharacters, at most five.
fn name_words(q: &str) -> Vec<String> {
    q.split_whitespace()
        .map(|w| w.chars().filter(|c| !matches!(c, '%' | '_' | '\\')).collect::<String>().to_lowercase())
        .filter(|w| !w.is_empty())
        .take(5)
        .collect()
}

fn push_filters(qb: &mut QueryBuilder<'_, Postgres>, p: &SearchParams, scope: &Scope) {
    qb.push(" WHERE true");
    if !p.include_inactive {
        qb.push(" AND p.active");
    }
    for w in name_words(p.name.as_deref().unwrap_or_default()) {
        qb.push(" AND (p.search_name LIKE '%' || coh_unaccent(")
            .push_bind(w.clone())
            .push(") || '%' OR coh_unaccent(")
            .push_bind(w)
            .push(") <% p.search_name)");
    }
    if let Some(d) = p.birth_date {
        qb.push(" AND p.birth_date = ").push_bind(d);
    }
    if let Some(m) = &p.mrn {
        qb.push(" AND p.organization_id = ").push_bind(DEFAULT_ORG).push(" AND p.mrn = ").push_bind(m.clone());
    }
    if let Scope::Clinician { id, now } = scope {
        qb.push(" AND (EXISTS (SELECT 1 FROM care_team ct WHERE ct.patient_id = p.id AND ct.clinician_id = ")
            .push_bind(*id)
            .push(") OR EXISTS (SELECT 1 FROM emergency_access e WHERE e.patient_id = p.id AND e.clinician_id = ")
            .push_bind(*id)
            .push(" AND e.granted_at <= ")
            .push_bind(*now)
            .push(" AND e.expires_at > ")
            .push_bind(*now)
            .push("))");
    }
}

/// The search query (shared by the API, FHIR and the benchmark).
///
/// With a name, the matches are gathered first through the trigram index (a materialised CTE)
/// and then sorted: walking the name-order index and filtering, which the planner otherwise
/// prefers for an ordered `LIMIT`, reads most of the table when the match sorts late.
pub fn search_query<'a>(p: &SearchParams, scope: &Scope) -> QueryBuilder<'a, Postgres> {
    const SELECT: &str = "SELECT p.id, p.active, p.mrn, p.given_name, p.middle_name, p.family_name, p.birth_date, \
         p.sex, p.search_name FROM patients p";
    let by_name = !name_words(p.name.as_deref().unwrap_or_default()).is_empty();
    let mut qb = QueryBuilder::new(if by_name { "WITH m AS MATERIALIZED (" } else { "" });
    qb.push(SELECT);
    push_filters(&mut qb, p, scope);
    if let Some((name, id)) = &p.after {
        qb.push(" AND (p.search_name, p.id) > (").push_bind(name.clone()).push(", ").push_bind(*id).push(")");
    }
    if by_name {
        qb.push(") SELECT * FROM m ORDER BY search_name, id LIMIT ");
    } else {
        qb.push(" ORDER BY p.search_name, p.id LIMIT ");
    }
    qb.push_bind(p.limit + 1);
    qb
}

/// Runs a search: one page, and the keyset position of its last row when more follow.
pub async fn search(
    pg: &PgPool,
    p: &SearchParams,
    scope: &Scope,
) -> Result<(Vec<PatientSummary>, Option<(String, Uuid)>), sqlx::Error> {
    // One-letter typos in six-letter names score about 0.57; the default (0.6) misses them.
    let mut tx = pg.begin().await?;
    sqlx::query!("SET LOCAL pg_trgm.word_similarity_threshold = 0.5").execute(&mut *tx).await?;
    let rows = search_query(p, scope).build().fetch_all(&mut *tx).await?;
    tx.commit().await?;
    let more = rows.len() as i64 > p.limit;
    let rows = &rows[..rows.len().min(p.limit as usize)];
    let items: Vec<PatientSummary> = rows
        .iter()
        .map(|r| PatientSummary {
            id: r.get("id"),
            active: r.get("active"),
            mrn: r.get("mrn"),
            given_name: r.get("given_name"),
            middle_name: r.get("middle_name"),
            family_name: r.get("family_name"),
            birth_date: r.get("birth_date"),
            sex: Sex::parse(r.get::<&str, _>("sex")),
        })
        .collect();
    let next =
        if more { rows.last().map(|r| (r.get::<String, _>("search_name"), r.get::<Uuid, _>("id"))) } else { None };
    Ok((items, next))
}

/// How many records match (for FHIR `Bundle.total`).
pub async fn count(pg: &PgPool, p: &SearchParams, scope: &Scope) -> Result<i64, sqlx::Error> {
    let mut qb = QueryBuilder::new("SELECT count(*) FROM patients p");
    push_filters(&mut qb, p, scope);
    let mut tx = pg.begin().await?;
    sqlx::query!("SET LOCAL pg_trgm.word_similarity_threshold = 0.5").execute(&mut *tx).await?;
    let n = qb.build_query_scalar::<i64>().fetch_one(&mut *tx).await?;
    tx.commit().await?;
    Ok(n)
}

/// Encrypts a keyset position into an opaque cursor (names never travel in URLs in clear).
pub fn encode_cursor(state: &AppState, pos: &(String, Uuid)) -> String {
    B64URL.encode(state.field_key.encrypt(&serde_json::json!([pos.0, pos.1]).to_string()))
}

/// Reverses [`encode_cursor`]; anything else is a 400 naming `field`.
pub fn decode_cursor(state: &AppState, raw: &str, field: &str) -> Result<(String, Uuid), ApiError> {
    let bad = || ApiError::field(Code::InvalidField, field, format!("`{field}` is not a cursor this server issued"));
    let env = B64URL.decode(raw).map_err(|_| bad())?;
    let plain = state.field_key.decrypt(std::str::from_utf8(&env).map_err(|_| bad())?).map_err(|_| bad())?;
    serde_json::from_str::<(String, Uuid)>(&plain).map_err(|_| bad())
}

/// Query string of `GET /v1/patients`.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct SearchQuery {
    /// Name words (accent- and typo-tolerant).
    #[param(inline)]
    pub name: Option<NameQuery>,
    /// `YYYY-MM-DD`
    #[param(inline)]
    pub birth_date: Option<Day>,
    #[param(inline)]
    pub mrn: Option<Mrn>,
    /// Page size (default 20).
    #[param(inline)]
    pub limit: Option<PageSize>,
    /// `next_cursor` of the previous page.
    #[param(inline)]
    pub cursor: Option<Cursor>,
    /// Include deactivated records (default false).
    pub include_inactive: Option<bool>,
}

/// Parses a query string after authorisation, naming the offending parameter.
pub fn parse_query<T: serde::de::DeserializeOwned>(req: &HttpRequest) -> Result<T, ApiError> {
    crate::http::input::query(req)
}

/// Validates `GET /v1/patients` parameters.
pub fn search_params(state: &AppState, q: SearchQuery) -> Result<SearchParams, ApiError> {
    let name = q.name.and_then(NameQuery::non_empty);
    let mrn = q.mrn.map(Mrn::into_inner);
    let after = q.cursor.as_deref().map(|c| decode_cursor(state, c, "cursor")).transpose()?;
    Ok(SearchParams {
        name,
        birth_date: q.birth_date.map(Day::get),
        mrn,
        include_inactive: q.include_inactive.unwrap_or(false),
        limit: q.limit.map_or(DEFAULT_LIMIT, |l| l.get()),
        after,
    })
}

/// `GET /v1/patients`: search by name, birth date and MRN, ordered by name, keyset-paginated.
/// Clinicians see only the patients they may access.
#[utoipa::path(get, path = "/v1/patients", tag = "patients", security(("bearer" = ["patients:search"])), params(SearchQuery),
    responses((status = 200, body = PatientPage), (status = 400, description = "invalid_field / unknown_field naming the parameter")))]
pub async fn list(
    state: web::Data<AppState>,
    req: HttpRequest,
    who: Require<perm::PatientsSearch>,
) -> Result<HttpResponse, ApiError> {
    let q: SearchQuery = parse_query(&req)?;
    let params = search_params(&state, q)?;
    let scope = Scope::of(&who, state.clock.now());
    let (items, next) = search(&state.stores.pg, &params, &scope).await?;
    let ids: Vec<Uuid> = items.iter().map(|p| p.id).collect();
    auth::audit(
        &state,
        &req,
        Some(&who),
        AuditEvent::new("patient.search", "success").details(serde_json::json!({
            "ids": ids,
            "criteria": {"name": params.name.is_some(), "birth_date": params.birth_date.is_some(), "mrn": params.mrn.is_some()},
        })),
    )
    .await?;
    let next_cursor = next.map(|pos| encode_cursor(&state, &pos));
    Ok(HttpResponse::Ok().json(PatientPage { items, next_cursor }))
}

/// Registers the patient routes (each resource answers 405 to other methods).
pub fn configure(cfg: &mut web::ServiceConfig) {
    use crate::http::resource;
    cfg.service(resource("/v1/patients").route(web::get().to(list)).route(web::post().to(create)))
        .service(resource("/v1/patients/{id}").route(web::get().to(read)).route(web::patch().to(update)))
        .service(resource("/v1/patients/{id}/deactivate").route(web::post().to(deactivate)));
    entries::configure(cfg);
}
