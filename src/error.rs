//! The HTTP face of the error catalogue: [`ApiError`] carries a [`Code`], a message safe to
//! show and optionally the field it concerns; every error response, including those actix
//! produces itself (404, 405, 413, 415, bad JSON), leaves as the same JSON envelope.

use actix_web::body::{BoxBody, EitherBody, MessageBody};
use actix_web::dev::ServiceResponse;
use actix_web::http::header::{self, HeaderValue};
use actix_web::http::StatusCode;
use actix_web::{HttpMessage, HttpRequest, HttpResponse, ResponseError};
use coherency_protocol::error::{Code, ErrorBody, ErrorCode, ErrorDetail};
use tracing_actix_web::RequestId;

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

/// Marks a response whose body is already the JSON error envelope.
#[derive(Clone, Copy)]
struct Rendered;

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

impl ErrorCode for ApiError {
    fn code(&self) -> Code {
        self.code
    }
}

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

impl From<sqlx::Error> for ApiError {
    fn from(e: sqlx::Error) -> Self {
        if let sqlx::Error::PoolTimedOut = e {
            return Self::unavailable("the database is not answering; try again");
        }
        if let sqlx::Error::Database(d) = &e {
            if d.code().as_deref() == Some(crate::store::pg::QUERY_CANCELED) {
                return Self::unavailable("the database did not answer in time; try again");
            }
        }
        if let Some(refused) = refused_value(&e) {
            return refused;
        }
        Self::internal(e)
    }
}

/// SQLSTATEs by which PostgreSQL refuses a value a statement was given (rather than failing
/// itself): bad characters or encoding (22021, 22P05), text too long for its column (22001), a
/// number or date out of range (22003, 22008), text that does not parse as its type (22P02,
/// 22007), a bad LIKE escape (22025, 22019), and a value too large to index (54000).
const REFUSED_VALUE_STATES: &[&str] =
    &["22021", "22P05", "22001", "22003", "22008", "22P02", "22007", "22025", "22019", "54000"];

/// The backstop for input the boundary should have refused but did not: PostgreSQL refusing a
/// value answers 400, not 500. It is logged as a warning, by SQLSTATE only (the database's
/// message may quote the value), because each one is a missing bound to add at the boundary.
fn refused_value(e: &sqlx::Error) -> Option<ApiError> {
    let sqlx::Error::Database(db) = e else { return None };
    let state = db.code()?;
    if !REFUSED_VALUE_STATES.contains(&state.as_ref()) {
        return None;
    }
    tracing::warn!(sqlstate = %state, "the database refused a value from a request; a bound is missing at the boundary");
    Some(ApiError::new(Code::BadRequest, "the request holds a value that cannot be stored"))
}

impl From<crate::audit::AppendError> for ApiError {
    fn from(e: crate::audit::AppendError) -> Self {
        match e {
            crate::audit::AppendError::Database(db) => {
                if matches!(*db, sqlx::Error::PoolTimedOut) {
                    return Self::unavailable("the database is not answering; try again");
                }
                refused_value(&db).unwrap_or_else(|| Self::internal(crate::audit::AppendError::Database(db)))
            }
            crate::audit::AppendError::TimedOut => Self::unavailable("the audit trail is not answering; try again"),
            e => Self::internal(e),
        }
    }
}

impl From<redis::RedisError> for ApiError {
    fn from(e: redis::RedisError) -> Self {
        tracing::warn!(error = %e, "redis error");
        Self::unavailable("a backing service is not answering; try again")
    }
}

impl From<actix_web::error::BlockingError> for ApiError {
    fn from(e: actix_web::error::BlockingError) -> Self {
        Self::internal(e)
    }
}

/// The code for a status actix produced without our help.
fn code_for_status(status: StatusCode) -> Code {
    match status.as_u16() {
        400 => Code::BadRequest,
        401 => Code::Unauthenticated,
        403 => Code::Forbidden,
        404 => Code::NotFound,
        405 => Code::MethodNotAllowed,
        409 => Code::Conflict,
        412 => Code::PreconditionFailed,
        413 => Code::PayloadTooLarge,
        415 => Code::UnsupportedMediaType,
        428 => Code::PreconditionRequired,
        429 => Code::RateLimited,
        503 => Code::Unavailable,
        _ => Code::Internal,
    }
}

fn default_message(code: Code) -> &'static str {
    match code {
        Code::NotFound => "no such resource",
        Code::MethodNotAllowed => "method not allowed for this resource",
        Code::PayloadTooLarge => "request body too large",
        Code::UnsupportedMediaType => "unsupported content type",
        Code::Unauthenticated => "authentication required",
        Code::Forbidden => "forbidden",
        Code::Unavailable => "service unavailable",
        Code::Internal => "internal error",
        _ => "bad request",
    }
}

/// Middleware body: gives every error response the JSON envelope with the request id, and a
/// request id header to every response.
pub async fn envelope<B: MessageBody + 'static>(
    res: ServiceResponse<B>,
) -> Result<ServiceResponse<EitherBody<B, BoxBody>>, actix_web::Error> {
    let request_id = res.request().extensions().get::<RequestId>().map(|r| r.to_string());
    let status = res.status();
    let mut res = if status.is_client_error() || status.is_server_error() {
        if res.response().extensions().get::<Rendered>().is_some() {
            res.map_into_left_body()
        } else {
            rewrite(res, request_id.as_deref()).await?
        }
    } else {
        res.map_into_left_body()
    };
    if let Some(id) = request_id {
        if let Ok(v) = HeaderValue::from_str(&id) {
            res.headers_mut().insert(header::HeaderName::from_static("x-request-id"), v);
        }
    }
    Ok(res)
}

async fn rewrite<B: MessageBody + 'static>(
    res: ServiceResponse<B>,
    request_id: Option<&str>,
) -> Result<ServiceResponse<EitherBody<B, BoxBody>>, actix_web::Error> {
    let status = res.status();
    let known = res.response().extensions().get::<Code>().copied();
    let (req, resp) = res.into_parts();
    let headers = resp.headers().clone();
    let body_bytes = actix_web::body::to_bytes(resp.into_body()).await.unwrap_or_default();
    let mut detail = serde_json::from_slice::<ErrorBody>(&body_bytes).ok().map(|b| b.error).unwrap_or_else(|| {
        let code = known.unwrap_or_else(|| code_for_status(status));
        ErrorDetail { code: code.as_str().into(), message: default_message(code).into(), request_id: None, field: None }
    });
    if status.is_server_error() && detail.code != Code::Unavailable.as_str() {
        detail.message = "internal error".into();
        detail.code = Code::Internal.as_str().into();
        detail.field = None;
    }
    detail.request_id = request_id.map(str::to_string);
    let mut out = HttpResponse::build(status);
    for (name, value) in headers.iter() {
        if name != header::CONTENT_LENGTH && name != header::CONTENT_TYPE {
            out.append_header((name.clone(), value.clone()));
        }
    }
    // FHIR clients get FHIR errors, also from the middleware in front of the FHIR handlers
    // (rate limit, body size, unknown method): the OpenAPI contract promises it.
    let mut resp = if req.path().starts_with("/fhir/") {
        let code = Code::ALL.iter().copied().find(|c| c.as_str() == detail.code).unwrap_or(Code::Internal);
        let body = crate::http::fhir::outcome_json(code, &detail.message, detail.field.as_deref());
        out.content_type(crate::http::fhir::FHIR_JSON).body(body.to_string())
    } else {
        out.json(ErrorBody { error: detail })
    };
    resp.extensions_mut().insert(Rendered);
    Ok(ServiceResponse::new(req, resp).map_into_right_body())
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
