//! The HTTP face of the error catalogue: [`ApiError`] carries a [`Code`], a message safe to
//! show and optionally the field it concerns; `crate::http::envelope` gives every error
//! response, including those actix produces itself (404, 405, 413, 415, bad JSON), the same
//! JSON envelope.
//!
//! Services and actors return their own `thiserror` errors; each implements the catalogue's
//! [`ErrorCode`] and this module's [`DomainError`], and one blanket conversion turns any of
//! them into an [`ApiError`] (the shape of Meilisearch's `ResponseError`). `ApiError` itself
//! implements neither trait: it is where errors end, not one more domain error.

use crate::store::pg::DbFailure;
use actix_web::http::header;
use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, ResponseError};
use coherency_protocol::error::{Code, ErrorBody, ErrorCode, ErrorDetail};

/// An error answered to a client.
#[derive(Debug, thiserror::Error)]
#[error("{code}: {message}")]
pub struct ApiError {
    pub code: Code,
    pub message: String,
    pub field: Option<String>,
    /// Seconds for a `Retry-After` header.
    pub retry_after: Option<u64>,
}

/// Marks a response whose body is already final (the JSON error envelope, or a FHIR
/// `OperationOutcome`), so the envelope middleware (`crate::http::envelope`) leaves it alone.
#[derive(Clone, Copy)]
pub struct Rendered;

impl ApiError {
    pub fn new(code: Code, message: impl Into<String>) -> Self {
        Self { code, message: message.into(), field: None, retry_after: None }
    }

    /// A validation failure about one field.
    pub fn field(code: Code, field: impl Into<String>, message: impl Into<String>) -> Self {
        Self { code, message: message.into(), field: Some(field.into()), retry_after: None }
    }

    pub fn with_retry_after(mut self, secs: u64) -> Self {
        self.retry_after = Some(secs);
        self
    }

    pub fn not_found() -> Self {
        Self::new(Code::NotFound, "not found")
    }

    pub fn forbidden() -> Self {
        Self::new(Code::Forbidden, "you do not have permission for this")
    }

    pub fn unauthenticated() -> Self {
        Self::new(Code::Unauthenticated, "authentication required")
    }

    /// Logs the cause (never sent to the client) and answers a bare 500.
    pub fn internal(cause: impl std::fmt::Display) -> Self {
        tracing::error!(error = %cause, "internal error");
        Self::new(Code::Internal, "internal error")
    }

    pub fn unavailable(what: impl Into<String>) -> Self {
        Self::new(Code::Unavailable, what)
    }
}

/// An error a client may see: its catalogue entry ([`ErrorCode`]), a message safe to show
/// (its `Display`, for client errors) and optionally the field it is about or when to retry.
/// Implemented by every service's and actor's error; [`ApiError`] converts from any of them.
pub trait DomainError: ErrorCode + std::error::Error {
    /// The request field the error is about, when there is one.
    fn field(&self) -> Option<&str> {
        None
    }

    /// Seconds for a `Retry-After` header.
    fn retry_after(&self) -> Option<u64> {
        None
    }
}

/// The one conversion from a domain error to the HTTP envelope: the code decides the status;
/// a client error shows its message; an internal error is logged with its cause and answers
/// the bare "internal error", as [`ApiError::internal`] does.
impl<E: DomainError> From<E> for ApiError {
    fn from(e: E) -> Self {
        let code = e.code();
        let mut out = if code == Code::Internal { ApiError::internal(&e) } else { ApiError::new(code, e.to_string()) };
        out.field = e.field().map(str::to_string);
        out.retry_after = e.retry_after();
        out
    }
}

impl DomainError for coherency_actors::room::RoomError {}
impl DomainError for coherency_actors::store::StoreError {}
impl DomainError for coherency_actors::CaptureError {}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        StatusCode::from_u16(self.code.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }

    fn error_response(&self) -> HttpResponse {
        let mut res = HttpResponse::build(self.status_code());
        if let Some(secs) = self.retry_after {
            res.insert_header((header::RETRY_AFTER, secs.to_string()));
        }
        let body = ErrorBody {
            error: ErrorDetail {
                code: self.code.as_str().into(),
                message: self.message.clone(),
                request_id: None,
                field: self.field.clone(),
            },
        };
        let mut resp = res.json(body);
        resp.extensions_mut().insert(self.code);
        resp
    }
}

/// Transitional: handlers that still run SQL themselves answer its failures through this
/// conversion. Services wrap `sqlx::Error` in their own error (through [`StorageError`]) and
/// reach the client by the [`DomainError`] conversion instead.
impl From<sqlx::Error> for ApiError {
    fn from(e: sqlx::Error) -> Self {
        StorageError::from(e).into()
    }
}

/// Transitional, as `From<sqlx::Error>`: for handlers that append to the audit trail themselves.
impl From<crate::audit::AppendError> for ApiError {
    fn from(e: crate::audit::AppendError) -> Self {
        StorageError::from(e).into()
    }
}

/// Transitional, as `From<sqlx::Error>`.
impl From<redis::RedisError> for ApiError {
    fn from(e: redis::RedisError) -> Self {
        StorageError::from(e).into()
    }
}

/// A backing store failed: the database, the audit trail or Redis. Classified once, when it
/// happens, into what the client is told: try again (503), a value the database refused (400),
/// or an internal error whose cause is logged and never shown. Services wrap it in their own
/// errors (`#[error(transparent)] Storage(#[from] StorageError)`).
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("{}", DbFailure::Busy.message())]
    DatabaseBusy,
    #[error("{}", DbFailure::TimedOut.message())]
    DatabaseTimedOut,
    #[error("the audit trail is not answering; try again")]
    AuditTimedOut,
    #[error("a backing service is not answering; try again")]
    BackingService,
    #[error("{}", DbFailure::RefusedValue.message())]
    RefusedValue,
    #[error("{0}")]
    Database(sqlx::Error),
    #[error("{0}")]
    Audit(crate::audit::AppendError),
}

impl From<sqlx::Error> for StorageError {
    fn from(e: sqlx::Error) -> Self {
        match DbFailure::of(&e) {
            DbFailure::Busy => Self::DatabaseBusy,
            DbFailure::TimedOut => Self::DatabaseTimedOut,
            DbFailure::RefusedValue => Self::RefusedValue,
            DbFailure::Internal => Self::Database(e),
        }
    }
}

impl From<crate::audit::AppendError> for StorageError {
    fn from(e: crate::audit::AppendError) -> Self {
        use crate::audit::AppendError;
        match e {
            AppendError::Database(db) => {
                // A cancelled audit statement stays internal: the audit wait has its own
                // deadline (`AppendError::TimedOut`).
                match DbFailure::of(&db) {
                    DbFailure::Busy => Self::DatabaseBusy,
                    DbFailure::RefusedValue => Self::RefusedValue,
                    DbFailure::TimedOut | DbFailure::Internal => Self::Audit(AppendError::Database(db)),
                }
            }
            AppendError::TimedOut => Self::AuditTimedOut,
            e => Self::Audit(e),
        }
    }
}

impl From<redis::RedisError> for StorageError {
    fn from(e: redis::RedisError) -> Self {
        tracing::warn!(error = %e, "redis error");
        Self::BackingService
    }
}

impl ErrorCode for StorageError {
    fn code(&self) -> Code {
        match self {
            Self::DatabaseBusy | Self::DatabaseTimedOut | Self::AuditTimedOut | Self::BackingService => {
                Code::Unavailable
            }
            Self::RefusedValue => Code::BadRequest,
            Self::Database(_) | Self::Audit(_) => Code::Internal,
        }
    }
}

impl DomainError for StorageError {}

impl From<actix_web::error::BlockingError> for ApiError {
    fn from(e: actix_web::error::BlockingError) -> Self {
        Self::internal(e)
    }
}

/// Maps actix's JSON extractor failures onto the catalogue.
pub fn json_error(err: actix_web::error::JsonPayloadError, _req: &HttpRequest) -> actix_web::Error {
    use actix_web::error::JsonPayloadError as E;
    let api = match &err {
        E::OverflowKnownLength { .. } | E::Overflow { .. } => {
            ApiError::new(Code::PayloadTooLarge, "request body too large")
        }
        E::ContentType => ApiError::new(Code::UnsupportedMediaType, "expected Content-Type: application/json"),
        E::Deserialize(de) => json_deserialize_error(de),
        _ => ApiError::new(Code::MalformedJson, "could not read the request body"),
    };
    api.into()
}

/// Classifies a serde_json error: syntax → `malformed_json`; unknown field → `unknown_field`
/// naming it; anything else → `invalid_field`, naming the field when serde says which.
pub fn json_deserialize_error(de: &serde_json::Error) -> ApiError {
    use serde_json::error::Category;
    let msg = de.to_string();
    match de.classify() {
        Category::Syntax | Category::Eof | Category::Io => {
            ApiError::new(Code::MalformedJson, format!("malformed JSON: {msg}"))
        }
        Category::Data => {
            if let Some(field) = between(&msg, "unknown field `", "`") {
                ApiError::field(Code::UnknownField, field, format!("unknown field `{field}`"))
            } else if let Some(field) = between(&msg, "missing field `", "`") {
                ApiError::field(Code::InvalidField, field, format!("missing field `{field}`"))
            } else if let Some(field) = between(&msg, "field `", "`") {
                ApiError::field(Code::InvalidField, field, msg.clone())
            } else {
                ApiError::new(Code::InvalidField, msg)
            }
        }
    }
}

fn between<'a>(s: &'a str, start: &str, end: &str) -> Option<&'a str> {
    let i = s.find(start)? + start.len();
    let j = s[i..].find(end)? + i;
    Some(&s[i..j])
}

/// Query-string extractor failures.
pub fn query_error(err: actix_web::error::QueryPayloadError, _req: &HttpRequest) -> actix_web::Error {
    let msg = err.to_string();
    let api = if let Some(field) = between(&msg, "unknown field `", "`") {
        ApiError::field(Code::UnknownField, field, format!("unknown query parameter `{field}`"))
    } else if let Some(field) = between(&msg, "field `", "`") {
        ApiError::field(Code::InvalidField, field, msg.clone())
    } else {
        ApiError::new(Code::BadRequest, msg)
    };
    api.into()
}

/// Path extractor failures: a malformed id is a resource that does not exist.
pub fn path_error(_err: actix_web::error::PathError, _req: &HttpRequest) -> actix_web::Error {
    ApiError::not_found().into()
}

/// Marks a response whose body is final (e.g. a FHIR `OperationOutcome`), so the envelope
/// middleware leaves it alone.
pub fn mark_rendered(resp: &mut HttpResponse) {
    resp.extensions_mut().insert(Rendered);
}

#[cfg(test)]
mod tests {
    use super::*;
    use coherency_actors::room::RoomError;

    /// A service error as services write them: a field for validation, a hidden cause for
    /// an internal failure.
    #[derive(Debug, thiserror::Error)]
    enum Probe {
        #[error("{why}")]
        Weak { why: &'static str },
        #[error("the pool closed at {0}")]
        Broken(&'static str),
    }

    impl ErrorCode for Probe {
        fn code(&self) -> Code {
            match self {
                Probe::Weak { .. } => Code::WeakPassword,
                Probe::Broken(_) => Code::Internal,
            }
        }
    }

    impl DomainError for Probe {
        fn field(&self) -> Option<&str> {
            matches!(self, Probe::Weak { .. }).then_some("password")
        }
        fn retry_after(&self) -> Option<u64> {
            matches!(self, Probe::Weak { .. }).then_some(7)
        }
    }

    #[test]
    fn a_domain_error_reaches_the_client_with_its_code_message_and_field() {
        let e = ApiError::from(RoomError::Full);
        assert_eq!((e.code, e.message.as_str(), e.field.as_deref()), (Code::RoomFull, "the room is full", None));
        assert_eq!(e.status_code(), StatusCode::CONFLICT);

        let e = ApiError::from(Probe::Weak { why: "too short" });
        assert_eq!(
            (e.code, e.message.as_str(), e.field.as_deref()),
            (Code::WeakPassword, "too short", Some("password"))
        );
        assert_eq!((e.status_code(), e.retry_after), (StatusCode::BAD_REQUEST, Some(7)));
    }

    #[test]
    fn an_internal_domain_error_tells_the_client_nothing_of_its_cause() {
        let e = ApiError::from(Probe::Broken("0x7f"));
        assert_eq!((e.code, e.message.as_str(), e.field.as_deref()), (Code::Internal, "internal error", None));
        assert_eq!(e.status_code(), StatusCode::INTERNAL_SERVER_ERROR);
    }

    #[test]
    fn storage_failures_answer_as_before() {
        let e = ApiError::from(sqlx::Error::PoolTimedOut);
        assert_eq!((e.code, e.message.as_str()), (Code::Unavailable, "the database is not answering; try again"));
        let e = ApiError::from(crate::audit::AppendError::TimedOut);
        assert_eq!((e.code, e.message.as_str()), (Code::Unavailable, "the audit trail is not answering; try again"));
        let e = ApiError::from(sqlx::Error::RowNotFound);
        assert_eq!((e.code, e.message.as_str()), (Code::Internal, "internal error"));
    }
}
