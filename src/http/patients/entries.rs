//! A patient's lists: allergies, medications, conditions, coverages, related persons
//! (emergency contacts), consents — each entry a validated document of a fixed shape per
//! kind, versioned for `If-Match` — and the care team (which clinicians may see the record).
//!
//! Patients may add and edit their own contacts, coverages and consents; clinical lists and
//! the care team are written by staff.

use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};
use chrono::{DateTime, NaiveDate, Utc};
use coherency_protocol::ids::PatientId;
use coherency_protocol::Code;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use sqlx::PgPool;
use utoipa::ToSchema;
use uuid::Uuid;

use super::{etag, if_match, not_future, path_id};
use crate::audit::AuditEvent;
use crate::auth::{self, perm, Principal, Require, Role};
use crate::error::ApiError;
use crate::http::input::{
    Day, Email, EmailAddress, EntityTag, Line, PersonName, Phone, PhoneNumber, SnomedCode, TermsVersion,
};
use crate::state::AppState;

/// The kinds of entry, with their table value and URL segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Allergy,
    Medication,
    Condition,
    Coverage,
    Contact,
    Consent,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Allergy => "allergy",
            Kind::Medication => "medication",
            Kind::Condition => "condition",
            Kind::Coverage => "coverage",
            Kind::Contact => "contact",
            Kind::Consent => "consent",
        }
    }

    /// Whether a patient may write entries of this kind on their own record.
    pub fn patient_writable(self) -> bool {
        matches!(self, Kind::Coverage | Kind::Contact | Kind::Consent)
    }
}

/// Implemented by each entry body: its kind and its normalisation.
pub trait Entry: DeserializeOwned + Serialize + utoipa::ToSchema {
    const KIND: Kind;
    fn validate(self, today: NaiveDate) -> Result<Self, ApiError>;
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Mild,
    Moderate,
    Severe,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum AllergyStatus {
    #[default]
    Active,
    Inactive,
    Resolved,
}

/// An allergy or intolerance.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Allergy {
    /// What the patient reacts to (`penicillin`, `latex`).
    pub substance: Line<1, 200>,
    /// The reaction observed (`hives`).
    pub reaction: Option<Line<0, 200>>,
    pub severity: Option<Severity>,
    #[serde(default)]
    pub status: AllergyStatus,
    /// Not in the future.
    pub onset_date: Option<Day>,
}

impl Entry for Allergy {
    const KIND: Kind = Kind::Allergy;
    fn validate(self, today: NaiveDate) -> Result<Self, ApiError> {
        Ok(Self {
            reaction: self.reaction.filter(|r| !r.is_empty()),
            onset_date: self.onset_date.map(|d| not_future(d, today, "onset_date")).transpose()?,
            ..self
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum MedicationStatus {
    #[default]
    Active,
    Completed,
    Stopped,
    OnHold,
    Intended,
}

impl MedicationStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            MedicationStatus::Active => "active",
            MedicationStatus::Completed => "completed",
            MedicationStatus::Stopped => "stopped",
            MedicationStatus::OnHold => "on-hold",
            MedicationStatus::Intended => "intended",
        }
    }
}

/// A medication the patient takes or took.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Medication {
    pub name: Line<1, 200>,
    /// Free-text dosage (`500 mg twice daily`).
    pub dosage: Option<Line<0, 200>>,
    #[serde(default)]
    pub status: MedicationStatus,
    pub start_date: Option<Day>,
    pub end_date: Option<Day>,
}

fn period(start: Option<Day>, end: Option<Day>) -> Result<(), ApiError> {
    if let (Some(s), Some(e)) = (start, end) {
        if e < s {
            return Err(ApiError::field(Code::InvalidField, "end_date", "`end_date` must not be before `start_date`"));
        }
    }
    Ok(())
}

impl Entry for Medication {
    const KIND: Kind = Kind::Medication;
    fn validate(self, _today: NaiveDate) -> Result<Self, ApiError> {
        period(self.start_date, self.end_date)?;
        Ok(Self { dosage: self.dosage.filter(|d| !d.is_empty()), ..self })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ConditionStatus {
    #[default]
    Active,
    Recurrence,
    Relapse,
    Inactive,
    Remission,
    Resolved,
}

/// A problem or diagnosis.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Condition {
    /// Human description (`Type 2 diabetes mellitus`).
    pub description: Line<1, 200>,
    /// Optional SNOMED CT concept id (6–18 digits).
    pub snomed_code: Option<SnomedCode>,
    #[serde(default)]
    pub clinical_status: ConditionStatus,
    /// Not in the future.
    pub onset_date: Option<Day>,
}

impl Entry for Condition {
    const KIND: Kind = Kind::Condition;
    fn validate(self, today: NaiveDate) -> Result<Self, ApiError> {
        Ok(Self { onset_date: self.onset_date.map(|d| not_future(d, today, "onset_date")).transpose()?, ..self })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum CoverageStatus {
    #[default]
    Active,
    Cancelled,
}

/// An insurance coverage.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Coverage {
    /// The insurer.
    pub payer: Line<1, 200>,
    pub member_id: Line<1, 64>,
    pub group_number: Option<Line<0, 64>>,
    pub plan_name: Option<Line<0, 200>>,
    #[serde(default)]
    pub status: CoverageStatus,
    pub start_date: Option<Day>,
    pub end_date: Option<Day>,
}

impl Entry for Coverage {
    const KIND: Kind = Kind::Coverage;
    fn validate(self, _today: NaiveDate) -> Result<Self, ApiError> {
        period(self.start_date, self.end_date)?;
        Ok(Self {
            group_number: self.group_number.filter(|g| !g.is_empty()),
            plan_name: self.plan_name.filter(|p| !p.is_empty()),
            ..self
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Relationship {
    Spouse,
    Partner,
    Parent,
    Child,
    Sibling,
    Guardian,
    Friend,
    Other,
}

/// A related person; `emergency` marks an emergency contact.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Contact {
    pub name: PersonName,
    pub relationship: Relationship,
    #[serde(default)]
    pub emergency: bool,
    pub phone: Option<Phone>,
    pub email: Option<Email>,
}

impl Entry for Contact {
    const KIND: Kind = Kind::Contact;
    fn validate(self, _today: NaiveDate) -> Result<Self, ApiError> {
        if self.phone.is_none() && self.email.is_none() {
            return Err(ApiError::field(Code::InvalidField, "phone", "a contact needs a `phone` or an `email`"));
        }
        Ok(Self {
            phone: self.phone.map(PhoneNumber::normalise),
            email: self.email.map(EmailAddress::normalise),
            ..self
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ConsentScope {
    Telehealth,
    ScanCapture,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ConsentStatus {
    Granted,
    Withdrawn,
}

/// A consent decision. The newest decision per scope is the one in force.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Consent {
    pub scope: ConsentScope,
    pub status: ConsentStatus,
    /// The version of the consent text agreed to (`2026-01`): letters, digits, `.`, `_`, `-`.
    /// Not the record's `version`, which counts its edits (`If-Match`) like every other entry's.
    pub terms_version: TermsVersion,
    /// When it was given or withdrawn (default today; not in the future).
    pub date: Option<Day>,
}

impl Entry for Consent {
    const KIND: Kind = Kind::Consent;
    fn validate(self, today: NaiveDate) -> Result<Self, ApiError> {
        let date = match self.date {
            Some(d) => not_future(d, today, "date")?,
            None => Day::try_from(today).map_err(ApiError::internal)?,
        };
        Ok(Self { date: Some(date), ..self })
    }
}

/// A stored entry.
#[derive(Debug, Clone)]
pub struct Stored {
    pub id: Uuid,
    pub patient_id: Uuid,
    pub version: i64,
    pub data: serde_json::Value,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl Stored {
    /// The API form: the entry's fields plus `id`, `version` and timestamps.
    pub fn to_json(&self) -> serde_json::Value {
        let mut v = self.data.clone();
        if let Some(o) = v.as_object_mut() {
            o.insert("id".into(), serde_json::json!(self.id));
            o.insert("patient_id".into(), serde_json::json!(self.patient_id));
            o.insert("version".into(), serde_json::json!(self.version));
            o.insert("created_at".into(), serde_json::json!(self.created_at));
            o.insert("updated_at".into(), serde_json::json!(self.updated_at));
        }
        v
    }
}

/// The OpenAPI schema of an entry as the API returns it: the fields of the entry's body
/// schema `T` plus the record's own (`id`, `patient_id`, `version`, `created_at`,
/// `updated_at`), all required, nothing else — derived from `T`, so the two never drift.
fn record_schema<T: utoipa::PartialSchema>() -> utoipa::openapi::RefOr<utoipa::openapi::Schema> {
    use utoipa::openapi::schema::{KnownFormat, ObjectBuilder, SchemaFormat, Type};
    let mut s = T::schema();
    if let utoipa::openapi::RefOr::T(utoipa::openapi::Schema::Object(o)) = &mut s {
        let string =
            |f: KnownFormat| ObjectBuilder::new().schema_type(Type::String).format(Some(SchemaFormat::KnownFormat(f)));
        for (name, schema, description) in [
            ("id", string(KnownFormat::Uuid), "the entry's id"),
            ("patient_id", string(KnownFormat::Uuid), "the patient the entry belongs to"),
            (
                "version",
                ObjectBuilder::new()
                    .schema_type(Type::Integer)
                    .format(Some(SchemaFormat::KnownFormat(KnownFormat::Int64)))
                    .minimum(Some(1)),
                "the record's version: 1 on creation, +1 on each change; the `ETag` and `If-Match` value",
            ),
            ("created_at", string(KnownFormat::DateTime), "when the entry was created"),
            ("updated_at", string(KnownFormat::DateTime), "when the entry last changed"),
        ] {
            o.properties.insert(name.into(), schema.description(Some(description)).build().into());
            o.required.push(name.into());
        }
    }
    s
}

/// The OpenAPI schema of a merge patch of an entry (RFC 7386): any of `T`'s fields, none
/// required; the merged entry must then be a valid `T`.
fn patch_schema<T: utoipa::PartialSchema>() -> utoipa::openapi::RefOr<utoipa::openapi::Schema> {
    let mut s = T::schema();
    if let utoipa::openapi::RefOr::T(utoipa::openapi::Schema::Object(o)) = &mut s {
        o.required.clear();
    }
    s
}

/// Response and patch schema types of each entry kind (documentation only).
macro_rules! entry_schemas {
    ($($ty:ty => $record:ident, $patch:ident;)*) => {$(
        #[doc = concat!("A stored `", stringify!($ty), "` as the API returns it.")]
        pub struct $record;
        impl utoipa::PartialSchema for $record {
            fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::Schema> {
                record_schema::<$ty>()
            }
        }
        impl utoipa::ToSchema for $record {
            fn schemas(schemas: &mut Vec<(String, utoipa::openapi::RefOr<utoipa::openapi::Schema>)>) {
                <$ty as utoipa::ToSchema>::schemas(schemas);
            }
        }
        #[doc = concat!("A merge patch of a `", stringify!($ty), "`.")]
        pub struct $patch;
        impl utoipa::PartialSchema for $patch {
            fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::Schema> {
                patch_schema::<$ty>()
            }
        }
        impl utoipa::ToSchema for $patch {
            fn schemas(schemas: &mut Vec<(String, utoipa::openapi::RefOr<utoipa::openapi::Schema>)>) {
                <$ty as utoipa::ToSchema>::schemas(schemas);
            }
        }
    )*};
}

entry_schemas! {
    Allergy => AllergyRecord, AllergyPatch;
    Medication => MedicationRecord, MedicationPatch;
    Condition => ConditionRecord, ConditionPatch;
    Coverage => CoverageRecord, CoveragePatch;
    Contact => ContactRecord, ContactPatch;
    Consent => ConsentRecord, ConsentPatch;
}

/// Every entry of a kind for a patient, oldest first.
pub async fn list_of(pg: &PgPool, patient_id: Uuid, kind: Kind) -> Result<Vec<Stored>, sqlx::Error> {
    sqlx::query_as!(
        Stored,
        "SELECT id, patient_id, version, data, created_at, updated_at FROM patient_entries
         WHERE patient_id = $1 AND kind = $2 ORDER BY created_at, id",
        patient_id,
        kind.as_str()
    )
    .fetch_all(pg)
    .await
}

/// Inserts a validated entry (also used by the demo seed).
pub async fn insert<T: Entry>(
    pg: &PgPool,
    patient_id: Uuid,
    body: &T,
    by: Option<Uuid>,
    now: DateTime<Utc>,
) -> Result<Stored, ApiError> {
    let data = serde_json::to_value(body).map_err(ApiError::internal)?;
    Ok(sqlx::query_as!(
        Stored,
        "INSERT INTO patient_entries (id, patient_id, kind, data, created_by, created_at, updated_at)
         VALUES ($1,$2,$3,$4,$5,$6,$6) RETURNING id, patient_id, version, data, created_at, updated_at",
        Uuid::now_v7(),
        patient_id,
        T::KIND.as_str(),
        data,
        by,
        now
    )
    .fetch_one(pg)
    .await?)
}

fn may_write(who: &Principal, kind: Kind) -> Result<(), ApiError> {
    if who.role == Role::Patient && !kind.patient_writable() {
        return Err(ApiError::new(Code::Forbidden, format!("your care team keeps your {} list", kind.as_str())));
    }
    Ok(())
}

fn action(kind: Kind, verb: &str) -> String {
    format!("patient.{}.{verb}", kind.as_str())
}

async fn list_entries<T: Entry>(
    state: &AppState,
    req: &HttpRequest,
    who: &Principal,
) -> Result<HttpResponse, ApiError> {
    let pid = path_id(req, "id")?;
    let act = action(T::KIND, "read");
    state.access.patient(&auth::caller_of(req, state, who), PatientId::from_uuid(pid), &act).await?;
    let items = list_of(&state.stores.pg, pid, T::KIND).await?;
    let ids: Vec<Uuid> = items.iter().map(|e| e.id).collect();
    auth::audit(
        state,
        req,
        Some(who),
        AuditEvent::new(&act, "success").target("patient", pid).details(serde_json::json!({"ids": ids})),
    )
    .await?;
    Ok(HttpResponse::Ok().json(items.iter().map(Stored::to_json).collect::<Vec<_>>()))
}

async fn create_entry<T: Entry>(
    state: &AppState,
    req: &HttpRequest,
    who: &Principal,
    body: crate::http::Json<T>,
) -> Result<HttpResponse, ApiError> {
    let pid = path_id(req, "id")?;
    let act = action(T::KIND, "create");
    state.access.patient(&auth::caller_of(req, state, who), PatientId::from_uuid(pid), &act).await?;
    may_write(who, T::KIND)?;
    let now = state.clock.now();
    let body = body.parse()?.validate(now.date_naive())?;
    let e = insert(&state.stores.pg, pid, &body, Some(who.user_id.as_uuid()), now).await?;
    auth::audit(
        state,
        req,
        Some(who),
        AuditEvent::new(&act, "success").target("patient", pid).details(serde_json::json!({"entry_id": e.id})),
    )
    .await?;
    Ok(HttpResponse::Created().insert_header((header::ETAG, etag(e.version))).json(e.to_json()))
}

/// RFC 7386 merge of `patch` into `target`.
fn merge(target: &mut serde_json::Value, patch: serde_json::Value) {
    match (target.as_object_mut(), patch) {
        (Some(t), serde_json::Value::Object(p)) => {
            for (k, v) in p {
                if v.is_null() {
                    t.remove(&k);
                } else {
                    merge(t.entry(k).or_insert(serde_json::Value::Null), v);
                }
            }
        }
        (_, p) => *target = p,
    }
}

/// Refuses a merge patch naming a field `T` does not have: `null` on it would otherwise vanish
/// in the merge and be answered as a successful edit. The fields are those of `T`'s schema,
/// which the patch schema lists.
fn known_fields<T: Entry>(patch: &serde_json::Map<String, serde_json::Value>) -> Result<(), ApiError> {
    let schema = serde_json::to_value(T::schema()).map_err(ApiError::internal)?;
    match patch.keys().find(|k| schema["properties"].get(k.as_str()).is_none()) {
        Some(k) => Err(ApiError::field(Code::UnknownField, k.as_str(), format!("unknown field `{k}`"))),
        None => Ok(()),
    }
}

async fn update_entry<T: Entry>(
    state: &AppState,
    req: &HttpRequest,
    who: &Principal,
    body: crate::http::Json<serde_json::Map<String, serde_json::Value>>,
) -> Result<HttpResponse, ApiError> {
    let pid = path_id(req, "id")?;
    let act = action(T::KIND, "update");
    state.access.patient(&auth::caller_of(req, state, who), PatientId::from_uuid(pid), &act).await?;
    let eid = path_id(req, "entry_id")?;
    may_write(who, T::KIND)?;
    let patch = body.parse()?;
    known_fields::<T>(&patch)?;
    let expected = if_match(req)?;
    let now = state.clock.now();
    let mut tx = state.stores.pg.begin().await?;
    let current = sqlx::query_as!(
        Stored,
        "SELECT id, patient_id, version, data, created_at, updated_at FROM patient_entries
         WHERE id = $1 AND patient_id = $2 AND kind = $3 FOR UPDATE",
        eid,
        pid,
        T::KIND.as_str()
    )
    .fetch_optional(&mut *tx)
    .await?
    .ok_or_else(ApiError::not_found)?;
    if current.version != expected {
        return Err(ApiError::new(Code::PreconditionFailed, "the entry changed since you read it; read it again"));
    }
    let mut merged = current.data.clone();
    merge(&mut merged, serde_json::Value::Object(patch));
    let body: T = crate::http::json::parse(merged.to_string().as_bytes())?;
    let body = body.validate(now.date_naive())?;
    let data = serde_json::to_value(&body).map_err(ApiError::internal)?;
    let e = sqlx::query_as!(
        Stored,
        "UPDATE patient_entries SET data = $2, version = version + 1, updated_at = $3 WHERE id = $1
         RETURNING id, patient_id, version, data, created_at, updated_at",
        eid,
        data,
        now
    )
    .fetch_one(&mut *tx)
    .await?;
    tx.commit().await?;
    auth::audit(
        state,
        req,
        Some(who),
        AuditEvent::new(&act, "success").target("patient", pid).details(serde_json::json!({"entry_id": e.id})),
    )
    .await?;
    Ok(HttpResponse::Ok().insert_header((header::ETAG, etag(e.version))).json(e.to_json()))
}

async fn delete_entry<T: Entry>(
    state: &AppState,
    req: &HttpRequest,
    who: &Principal,
) -> Result<HttpResponse, ApiError> {
    let pid = path_id(req, "id")?;
    let act = action(T::KIND, "delete");
    state.access.patient(&auth::caller_of(req, state, who), PatientId::from_uuid(pid), &act).await?;
    let eid = path_id(req, "entry_id")?;
    may_write(who, T::KIND)?;
    let n = sqlx::query!(
        "DELETE FROM patient_entries WHERE id = $1 AND patient_id = $2 AND kind = $3",
        eid,
        pid,
        T::KIND.as_str()
    )
    .execute(&state.stores.pg)
    .await?
    .rows_affected();
    if n == 0 {
        return Err(ApiError::not_found());
    }
    auth::audit(
        state,
        req,
        Some(who),
        AuditEvent::new(&act, "success").target("patient", pid).details(serde_json::json!({"entry_id": eid})),
    )
    .await?;
    Ok(HttpResponse::NoContent().finish())
}

/// The four handlers of one entry kind, with their OpenAPI annotations.
macro_rules! entry_routes {
    ($ty:ty, $record:ty, $patch:ty, $list:ident, $create:ident, $update:ident, $delete:ident, $path:tt, $item:tt, $what:tt) => {
        #[doc = concat!("`GET ", $path, "`: every ", $what, " on the record.")]
        #[utoipa::path(get, path = $path, tag = "patients", security(("bearer" = ["patients:read"])), params(("id" = Uuid, Path)),
            responses((status = 200, body = Vec<$record>, description = "oldest first"), (status = 404)))]
        pub async fn $list(
            state: web::Data<AppState>,
            req: HttpRequest,
            who: Require<perm::PatientsRead>,
        ) -> Result<HttpResponse, ApiError> {
            list_entries::<$ty>(&state, &req, &who).await
        }

        #[doc = concat!("`POST ", $path, "`: adds a ", $what, ".")]
        #[utoipa::path(post, path = $path, tag = "patients", security(("bearer" = ["patients:write"])), params(("id" = Uuid, Path)),
            request_body = $ty, responses((status = 201, body = $record, headers(("ETag" = String, description = "the new entry's version"))),
            (status = 400, description = "invalid_field naming the field"),
            (status = 403, description = "patients may not write this list"), (status = 404)))]
        pub async fn $create(
            state: web::Data<AppState>,
            req: HttpRequest,
            who: Require<perm::PatientsWrite>,
            body: crate::http::Json<$ty>,
        ) -> Result<HttpResponse, ApiError> {
            create_entry::<$ty>(&state, &req, &who, body).await
        }

        #[doc = concat!("`PATCH ", $item, "`: merge-patches a ", $what, " (`If-Match` required).")]
        #[utoipa::path(patch, path = $item, tag = "patients", security(("bearer" = ["patients:write"])),
            params(("id" = Uuid, Path), ("entry_id" = Uuid, Path), ("If-Match" = inline(EntityTag), Header, description = "the ETag last read")),
            request_body = $patch, responses((status = 200, body = $record, headers(("ETag" = String, description = "the entry's new version"))),
            (status = 400, description = "invalid_field: the patched entry is not valid"), (status = 404),
            (status = 412, description = "precondition_failed: `If-Match` is not the current version"),
            (status = 428, description = "precondition_required: no `If-Match`")))]
        pub async fn $update(
            state: web::Data<AppState>,
            req: HttpRequest,
            who: Require<perm::PatientsWrite>,
            body: crate::http::Json<serde_json::Map<String, serde_json::Value>>,
        ) -> Result<HttpResponse, ApiError> {
            update_entry::<$ty>(&state, &req, &who, body).await
        }

        #[doc = concat!("`DELETE ", $item, "`: removes a ", $what, ".")]
        #[utoipa::path(delete, path = $item, tag = "patients", security(("bearer" = ["patients:write"])),
            params(("id" = Uuid, Path), ("entry_id" = Uuid, Path)), responses((status = 204), (status = 404)))]
        pub async fn $delete(
            state: web::Data<AppState>,
            req: HttpRequest,
            who: Require<perm::PatientsWrite>,
        ) -> Result<HttpResponse, ApiError> {
            delete_entry::<$ty>(&state, &req, &who).await
        }
    };
}

entry_routes!(
    Allergy,
    AllergyRecord,
    AllergyPatch,
    list_allergies,
    create_allergy,
    update_allergy,
    delete_allergy,
    "/v1/patients/{id}/allergies",
    "/v1/patients/{id}/allergies/{entry_id}",
    "allergy"
);
entry_routes!(
    Medication,
    MedicationRecord,
    MedicationPatch,
    list_medications,
    create_medication,
    update_medication,
    delete_medication,
    "/v1/patients/{id}/medications",
    "/v1/patients/{id}/medications/{entry_id}",
    "medication"
);
entry_routes!(
    Condition,
    ConditionRecord,
    ConditionPatch,
    list_conditions,
    create_condition,
    update_condition,
    delete_condition,
    "/v1/patients/{id}/conditions",
    "/v1/patients/{id}/conditions/{entry_id}",
    "condition"
);
entry_routes!(
    Coverage,
    CoverageRecord,
    CoveragePatch,
    list_coverages,
    create_coverage,
    update_coverage,
    delete_coverage,
    "/v1/patients/{id}/coverages",
    "/v1/patients/{id}/coverages/{entry_id}",
    "coverage"
);
entry_routes!(
    Contact,
    ContactRecord,
    ContactPatch,
    list_contacts,
    create_contact,
    update_contact,
    delete_contact,
    "/v1/patients/{id}/contacts",
    "/v1/patients/{id}/contacts/{entry_id}",
    "contact"
);
entry_routes!(
    Consent,
    ConsentRecord,
    ConsentPatch,
    list_consents,
    create_consent,
    update_consent,
    delete_consent,
    "/v1/patients/{id}/consents",
    "/v1/patients/{id}/consents/{entry_id}",
    "consent decision"
);

/// Registers the entry routes (each resource answers 405 to other methods).
pub fn configure(cfg: &mut web::ServiceConfig) {
    use crate::http::resource;
    macro_rules! reg {
        ($path:literal, $item:literal, $list:ident, $create:ident, $update:ident, $delete:ident) => {
            cfg.service(resource($path).route(web::get().to($list)).route(web::post().to($create)));
            cfg.service(resource($item).route(web::patch().to($update)).route(web::delete().to($delete)));
        };
    }
    reg!(
        "/v1/patients/{id}/allergies",
        "/v1/patients/{id}/allergies/{entry_id}",
        list_allergies,
        create_allergy,
        update_allergy,
        delete_allergy
    );
    reg!(
        "/v1/patients/{id}/medications",
        "/v1/patients/{id}/medications/{entry_id}",
        list_medications,
        create_medication,
        update_medication,
        delete_medication
    );
    reg!(
        "/v1/patients/{id}/conditions",
        "/v1/patients/{id}/conditions/{entry_id}",
        list_conditions,
        create_condition,
        update_condition,
        delete_condition
    );
    reg!(
        "/v1/patients/{id}/coverages",
        "/v1/patients/{id}/coverages/{entry_id}",
        list_coverages,
        create_coverage,
        update_coverage,
        delete_coverage
    );
    reg!(
        "/v1/patients/{id}/contacts",
        "/v1/patients/{id}/contacts/{entry_id}",
        list_contacts,
        create_contact,
        update_contact,
        delete_contact
    );
    reg!(
        "/v1/patients/{id}/consents",
        "/v1/patients/{id}/consents/{entry_id}",
        list_consents,
        create_consent,
        update_consent,
        delete_consent
    );
    cfg.service(
        resource("/v1/patients/{id}/care-team").route(web::get().to(care_team)).route(web::post().to(add_care_team)),
    );
    cfg.service(resource("/v1/patients/{id}/care-team/{clinician_id}").route(web::delete().to(remove_care_team)));
}

// ---------------------------------------------------------------------------------------------
// Care team

/// A clinician on a patient's care team.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct CareTeamMember {
    pub clinician_id: Uuid,
    pub display_name: String,
    /// `primary`, `clinician`, `nurse`, … (free text, 1-50 characters).
    pub role: String,
    pub added_at: DateTime<Utc>,
}

/// `POST /v1/patients/{id}/care-team` body.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AddCareTeam {
    pub clinician_id: Uuid,
    /// `primary`, `clinician`, `nurse`, … (default `clinician`).
    pub role: Option<Line<0, 50>>,
}

/// The care team of a patient.
pub async fn care_team_of(pg: &PgPool, patient_id: Uuid) -> Result<Vec<CareTeamMember>, sqlx::Error> {
    sqlx::query_as!(
        CareTeamMember,
        "SELECT c.clinician_id, u.display_name, c.role, c.added_at FROM care_team c JOIN users u ON u.id = c.clinician_id
         WHERE c.patient_id = $1 ORDER BY c.added_at, c.clinician_id",
        patient_id
    )
    .fetch_all(pg)
    .await
}

/// `GET /v1/patients/{id}/care-team`
#[utoipa::path(get, path = "/v1/patients/{id}/care-team", tag = "patients", security(("bearer" = ["patients:read"])), params(("id" = Uuid, Path)),
    responses((status = 200, body = Vec<CareTeamMember>), (status = 404)))]
pub async fn care_team(
    state: web::Data<AppState>,
    req: HttpRequest,
    who: Require<perm::PatientsRead>,
) -> Result<HttpResponse, ApiError> {
    let pid = path_id(&req, "id")?;
    state
        .access
        .patient(&auth::caller_of(&req, &state, &who), PatientId::from_uuid(pid), "patient.care_team.read")
        .await?;
    let team = care_team_of(&state.stores.pg, pid).await?;
    auth::audit(&state, &req, Some(&who), AuditEvent::new("patient.care_team.read", "success").target("patient", pid))
        .await?;
    Ok(HttpResponse::Ok().json(team))
}

/// `POST /v1/patients/{id}/care-team`: staff with access add a clinician (idempotent).
#[utoipa::path(post, path = "/v1/patients/{id}/care-team", tag = "patients", security(("bearer" = ["patients:write"])), params(("id" = Uuid, Path)),
    request_body = AddCareTeam, responses((status = 200, body = Vec<CareTeamMember>), (status = 400, description = "`clinician_id` is not an active clinician"),
    (status = 403, description = "patients cannot change their care team"), (status = 404)))]
pub async fn add_care_team(
    state: web::Data<AppState>,
    req: HttpRequest,
    who: Require<perm::PatientsWrite>,
    body: crate::http::Json<AddCareTeam>,
) -> Result<HttpResponse, ApiError> {
    let pid = path_id(&req, "id")?;
    state
        .access
        .patient(&auth::caller_of(&req, &state, &who), PatientId::from_uuid(pid), "patient.care_team.add")
        .await?;
    if who.role == Role::Patient {
        return Err(ApiError::new(Code::Forbidden, "your care team is managed by the clinic"));
    }
    let body = body.parse()?;
    let role = body.role.and_then(Line::non_empty).unwrap_or_else(|| "clinician".into());
    let ok: bool = sqlx::query_scalar!(
        r#"SELECT EXISTS (SELECT 1 FROM users WHERE id = $1 AND role = 'clinician' AND disabled_at IS NULL) AS "ok!""#,
        body.clinician_id
    )
    .fetch_one(&state.stores.pg)
    .await?;
    if !ok {
        return Err(ApiError::field(Code::InvalidField, "clinician_id", "`clinician_id` is not an active clinician"));
    }
    sqlx::query!(
        "INSERT INTO care_team (patient_id, clinician_id, role, added_at) VALUES ($1,$2,$3,$4)
         ON CONFLICT (patient_id, clinician_id) DO UPDATE SET role = EXCLUDED.role",
        pid,
        body.clinician_id,
        &role,
        state.clock.now()
    )
    .execute(&state.stores.pg)
    .await?;
    auth::audit(
        &state,
        &req,
        Some(&who),
        AuditEvent::new("patient.care_team.add", "success")
            .target("patient", pid)
            .details(serde_json::json!({"clinician_id": body.clinician_id})),
    )
    .await?;
    Ok(HttpResponse::Ok().json(care_team_of(&state.stores.pg, pid).await?))
}

/// `DELETE /v1/patients/{id}/care-team/{clinician_id}`
#[utoipa::path(delete, path = "/v1/patients/{id}/care-team/{clinician_id}", tag = "patients", security(("bearer" = ["patients:write"])),
    params(("id" = Uuid, Path), ("clinician_id" = Uuid, Path)), responses((status = 204), (status = 403), (status = 404)))]
pub async fn remove_care_team(
    state: web::Data<AppState>,
    req: HttpRequest,
    who: Require<perm::PatientsWrite>,
) -> Result<HttpResponse, ApiError> {
    let pid = path_id(&req, "id")?;
    state
        .access
        .patient(&auth::caller_of(&req, &state, &who), PatientId::from_uuid(pid), "patient.care_team.remove")
        .await?;
    if who.role == Role::Patient {
        return Err(ApiError::new(Code::Forbidden, "your care team is managed by the clinic"));
    }
    let cid = path_id(&req, "clinician_id")?;
    let n = sqlx::query!("DELETE FROM care_team WHERE patient_id = $1 AND clinician_id = $2", pid, cid)
        .execute(&state.stores.pg)
        .await?
        .rows_affected();
    if n == 0 {
        return Err(ApiError::not_found());
    }
    auth::audit(
        &state,
        &req,
        Some(&who),
        AuditEvent::new("patient.care_team.remove", "success")
            .target("patient", pid)
            .details(serde_json::json!({"clinician_id": cid})),
    )
    .await?;
    Ok(HttpResponse::NoContent().finish())
}
