//! The character rule of a JSON document, whatever type it will be parsed into: one JSON
//! object, every string free of control characters (but tab and line breaks) and of
//! bidirectional formatting characters (`coherency_protocol::text`), every key one line and
//! given once, nesting at most [`MAX_DEPTH`], nothing after the document. HTTP bodies
//! (`crate::http::json`) and socket frames (`crate::ws`) both pass it before their typed parse.

use coherency_protocol::text::{self, Lines};
use coherency_protocol::Code;
use serde::de::DeserializeSeed;

use crate::error::ApiError;

/// Deepest nesting of objects and arrays a body may have (the top-level value is depth 1).
/// No request needs more than 4.
pub const MAX_DEPTH: usize = 32;

/// The refusal of bytes that hold more than one JSON document.
pub(crate) fn trailing() -> ApiError {
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
