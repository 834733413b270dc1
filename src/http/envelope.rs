//! The envelope middleware: every error response leaves as the JSON error envelope with the
//! request id (or, under `/fhir/`, a FHIR `OperationOutcome`), also those actix produces
//! itself (404, 405, 413, 415, bad JSON); every response gets an `x-request-id` header. It
//! lives with HTTP, not with [`ApiError`], because it knows the FHIR routes.

use actix_web::body::{BoxBody, EitherBody, MessageBody};
use actix_web::dev::ServiceResponse;
use actix_web::http::header::{self, HeaderValue};
use actix_web::http::StatusCode;
use actix_web::{HttpMessage, HttpResponse};
use coherency_protocol::error::{Code, ErrorBody, ErrorDetail};
use tracing_actix_web::RequestId;

use crate::error::Rendered;

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
