//! JSON request bodies. The bytes are read (size and content type checked) by the
//! extractor, but parsed only when the handler asks — after authentication and
//! authorisation — so a caller without permission learns nothing from validation errors.
//!
//! Parsing is two passes over the bytes. The first ([`check`], from `crate::input::json`,
//! which the sockets' frames pass too) walks the document as it is, whatever the target type:
//! every string and key must obey the character rule (`coherency_protocol::text`: no
//! control characters but tab and line breaks, no bidirectional formatting characters; keys
//! are one line), no object may repeat a key, no
//! nesting may go deeper than [`MAX_DEPTH`], and nothing may follow the document (`{…}{…}`).
//! The second is the typed parse, whose field types carry the per-field bounds
//! (`crate::input`). Failures name the field (`serde_path_to_error`): `malformed_json`
//! for bytes that are not one JSON document, `unknown_field`, and `invalid_field` for the rest.

use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;

use actix_web::{web, FromRequest, HttpRequest};
use coherency_protocol::Code;
use serde::de::DeserializeOwned;

use crate::error::ApiError;
use crate::input::json::trailing;
pub use crate::input::json::{check, MAX_DEPTH};

/// A JSON body, not yet parsed.
pub struct Json<T> {
    bytes: web::Bytes,
    _t: PhantomData<T>,
}

impl<T: DeserializeOwned> Json<T> {
    /// Parses the body; errors name the offending field.
    pub fn parse(self) -> Result<T, ApiError> {
        parse(&self.bytes)
    }
}

/// Parses JSON into `T`, classifying failures onto the error catalogue.
pub fn parse<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    check(bytes)?;
    let de = &mut serde_json::Deserializer::from_slice(bytes);
    let v = match serde_path_to_error::deserialize::<_, T>(&mut *de) {
        Ok(v) => v,
        Err(e) => {
            let path = e.path().to_string();
            let inner = e.into_inner();
            let mut api = crate::error::json_deserialize_error(&inner);
            if api.code == Code::InvalidField && path != "." && !path.is_empty() {
                api.field = Some(path.clone());
                api.message = format!("`{path}`: {inner}");
            }
            return Err(api);
        }
    };
    de.end().map_err(|_| trailing())?;
    Ok(v)
}

fn is_json(req: &HttpRequest) -> bool {
    req.headers()
        .get(actix_web::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|ct| {
            let mime = ct.split(';').next().unwrap_or_default().trim().to_ascii_lowercase();
            mime == "application/json" || (mime.starts_with("application/") && mime.ends_with("+json"))
        })
        .unwrap_or(false)
}

impl<T: 'static> FromRequest for Json<T> {
    type Error = actix_web::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self, actix_web::Error>>>>;

    fn from_request(req: &HttpRequest, payload: &mut actix_web::dev::Payload) -> Self::Future {
        let ok_type = is_json(req);
        let bytes = web::Bytes::from_request(req, payload);
        Box::pin(async move {
            if !ok_type {
                return Err(ApiError::new(Code::UnsupportedMediaType, "expected Content-Type: application/json").into());
            }
            let bytes = bytes.await.map_err(|e| {
                let status = e.as_response_error().status_code();
                if status == actix_web::http::StatusCode::PAYLOAD_TOO_LARGE {
                    actix_web::Error::from(ApiError::new(Code::PayloadTooLarge, "request body too large"))
                } else {
                    e
                }
            })?;
            Ok(Json { bytes, _t: PhantomData })
        })
    }
}
