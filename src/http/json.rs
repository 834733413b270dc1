//! JSON request bodies. The bytes are read (size and content type checked) by the
//! extractor, but parsed only when the handler asks — after authentication and
//! authorisation — so a caller without permission learns nothing from validation errors.
//!
//! Parsing is two passes over the bytes. The first ([`check`]) walks the document as it is,
//! whatever the target type: every string and key must obey the character rule
//! (`coherency_protocol::text`: no control characters but tab and line breaks, no
//! bidirectional formatting characters; keys are one line), no object may repeat a key, no
//! nesting may go deeper than [`MAX_DEPTH`], and nothing may follow the document (`{…}{…}`).
//! The second is the typed parse, whose field types carry the per-field bounds
//! (`crate::http::input`). Failures name the field (`serde_path_to_error`): `malformed_json`
//! for bytes that are not one JSON document, `unknown_field`, and `invalid_field` for the rest.

use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;

use actix_web::{web, FromRequest, HttpRequest};
use coherency_protocol::text::{self, Lines};
use coherency_protocol::Code;
use serde::de::{DeserializeOwned, DeserializeSeed};

use crate::error::ApiError;

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

/// Deepest nesting of objects and arrays a body may have (the top-level value is depth 1).
/// No request needs more than 4.
pub const MAX_DEPTH: usize = 32;

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

fn trailing() -> ApiError {
    ApiError::new(Code::MalformedJson, "malformed JSON: the body holds more than one JSON document")
}

/// The first pass: the body is one JSON document whose strings and keys obey the character
/// rule, whose objects hold each key once and whose nesting is at most [`MAX_DEPTH`].
/// Every request body is an object: serde would otherwise build a struct from an array of
/// its fields in order (`[null, null]`), a form no schema of ours describes.
pub fn check(bytes: &[u8]) -> Result<(), ApiError> {
    let first = bytes.iter().find(|b| !b.is_ascii_whitespace());
    if first.is_some_and(|b| *b != b'{') && serde_json::from_slice::<serde::de::IgnoredAny>(bytes).is_ok() {
        return Err(ApiError::new(Code::InvalidField, "the body must be a JSON object"));
    }
    let mut refused = None;
    let mut path = Vec::new();
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let walked = Node { path: &mut path, refused: &mut refused, depth: 0 }.deserialize(&mut de);
    if let Some(e) = refused {
        return Err(e);
    }
    match walked {
        Err(e) => Err(crate::error::json_deserialize_error(&e)),
        Ok(()) => de.end().map_err(|_| trailing()),
    }
}

/// One step of a path into a document.
enum Seg {
    Key(String),
    Index(usize),
}

/// Writes a path the way `serde_path_to_error` does (`address.lines[1]`).
fn path_string(path: &[Seg]) -> Option<String> {
    if path.is_empty() {
        return None;
    }
    let mut out = String::new();
    for seg in path {
        match seg {
            Seg::Key(k) => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(k);
            }
            Seg::Index(i) => out.push_str(&format!("[{i}]")),
        }
    }
    Some(out)
}

/// A value being walked: where it is, how deep, and where to leave a refusal.
struct Node<'a> {
    path: &'a mut Vec<Seg>,
    refused: &'a mut Option<ApiError>,
    depth: usize,
}

impl Node<'_> {
    /// Records why the walk stops (the visitor's own error only unwinds the parser).
    fn refuse<E: serde::de::Error>(self, why: impl std::fmt::Display) -> E {
        let field = path_string(self.path);
        let message = match &field {
            Some(f) => format!("`{f}`: {why}"),
            None => format!("the body {why}"),
        };
        *self.refused = Some(ApiError { code: Code::InvalidField, message, field, retry_after: None });
        E::custom("refused")
    }

    fn child(&mut self) -> Node<'_> {
        Node { path: &mut *self.path, refused: &mut *self.refused, depth: self.depth + 1 }
    }

    fn deeper<E: serde::de::Error>(self) -> Result<Self, E> {
        if self.depth + 1 > MAX_DEPTH {
            return Err(self.refuse(format_args!("nests deeper than {MAX_DEPTH} levels")));
        }
        Ok(self)
    }
}

impl<'de> serde::de::DeserializeSeed<'de> for Node<'_> {
    type Value = ();
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> serde::de::Visitor<'de> for Node<'_> {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, _: bool) -> Result<(), E> {
        Ok(())
    }
    fn visit_i64<E>(self, _: i64) -> Result<(), E> {
        Ok(())
    }
    fn visit_u64<E>(self, _: u64) -> Result<(), E> {
        Ok(())
    }
    fn visit_f64<E>(self, _: f64) -> Result<(), E> {
        Ok(())
    }
    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<(), E> {
        match text::check(v, Lines::Many) {
            Ok(()) => Ok(()),
            Err(r) => Err(self.refuse(r)),
        }
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let mut me = self.deeper()?;
        let mut i = 0;
        loop {
            me.path.push(Seg::Index(i));
            let more = seq.next_element_seed(me.child())?;
            me.path.pop();
            if more.is_none() {
                return Ok(());
            }
            i += 1;
        }
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let mut me = self.deeper()?;
        let mut seen = std::collections::HashSet::new();
        while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
            if let Err(r) = text::check(&key, Lines::One) {
                me.path.push(Seg::Key(key.escape_default().to_string()));
                return Err(me.refuse(format_args!("(a key) {r}")));
            }
            let key = key.into_owned();
            if !seen.insert(key.clone()) {
                me.path.push(Seg::Key(key));
                return Err(me.refuse("appears twice in its object"));
            }
            me.path.push(Seg::Key(key));
            map.next_value_seed(me.child())?;
            me.path.pop();
        }
        Ok(())
    }
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
