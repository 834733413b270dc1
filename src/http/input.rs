//! The boundary's input types: bounded text ([`Line`], [`Text`], [`Password`]), bounded
//! integers ([`Int`]), dates ([`Date`]) and lists ([`at_most`]) that request structs are made
//! of, so a request that parses is already inside its bounds; the query-string parser
//! ([`query`]); and the middleware that refuses a path or query string holding a forbidden
//! character before routing ([`clean_target`]). JSON bodies get the same character rule, plus
//! duplicate-key and trailing-data refusal, in `crate::http::json`.
//!
//! Every bound here is also in the OpenAPI schema (`maxLength`, `minimum`/`maximum`,
//! `maxItems`, `pattern`) and in the table of `docs/security.md` ("Input bounds"). A refusal is
//! `400 invalid_field` naming the field; the message says the rule, never the value.

use std::borrow::Cow;
use std::fmt;
use std::marker::PhantomData;

use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::middleware::Next;
use actix_web::HttpRequest;
use chrono::{DateTime, Datelike, FixedOffset, NaiveDate};
use coherency_protocol::text::{self, Lines};
use coherency_protocol::Code;
use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde::{Deserialize, Serialize, Serializer};
use utoipa::openapi::schema::{KnownFormat, ObjectBuilder, SchemaFormat, Type};
use utoipa::openapi::{RefOr, Schema};
use utoipa::{PartialSchema, ToSchema};

use crate::error::ApiError;

/// Longest query string (bytes, still percent-encoded). The longest legitimate one, a FHIR
/// `next` link with its cursor, is under 1.5 KiB.
pub const MAX_QUERY_BYTES: usize = 4096;

/// A refusal of `field` for breaking `rule` (the wording of the input types' errors).
pub fn invalid(field: &str, rule: impl fmt::Display) -> ApiError {
    ApiError::field(Code::InvalidField, field, format!("`{field}`: {rule}"))
}

// ---------------------------------------------------------------------------------------------
// Text

/// Checks raw text against the character rule and `MIN..=MAX` characters, and trims it.
/// The length bound applies to the text as sent (so it matches the schema's `maxLength`);
/// the minimum to the trimmed text (so blanks do not count as content).
fn bounded(raw: String, lines: Lines, min: usize, max: usize, trim: bool) -> Result<String, String> {
    // Cheap bound first: a huge string is refused before it is scanned.
    if raw.len() > max * 4 || raw.chars().count() > max {
        return Err(format!("must be at most {max} characters"));
    }
    text::check(&raw, lines).map_err(|r| r.to_string())?;
    let kept = if trim { raw.trim() } else { raw.as_str() };
    if kept.chars().count() < min {
        return Err(if min == 1 { "must not be empty".into() } else { format!("must be at least {min} characters") });
    }
    Ok(if kept.len() == raw.len() { raw } else { kept.to_string() })
}

fn string_schema(lines: Lines, min: usize, max: usize, description: String) -> RefOr<Schema> {
    let pattern = match lines {
        Lines::One => text::ONE_LINE_PATTERN,
        Lines::Many => text::MANY_LINES_PATTERN,
    };
    ObjectBuilder::new()
        .schema_type(Type::String)
        .min_length((min > 0).then_some(min))
        .max_length(Some(max))
        .pattern(Some(pattern))
        .description(Some(description))
        .into()
}

macro_rules! text_type {
    ($(#[$doc:meta])* $name:ident, $lines:expr, $what:literal) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, Hash)]
        pub struct $name<const MIN: usize, const MAX: usize>(String);

        impl<const MIN: usize, const MAX: usize> $name<MIN, MAX> {
            /// Checks and trims `raw`; the error is the rule it breaks.
            pub fn new(raw: impl Into<String>) -> Result<Self, String> {
                bounded(raw.into(), $lines, MIN, MAX, true).map(Self)
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }

            pub fn into_inner(self) -> String {
                self.0
            }

            /// The text, or `None` when it is blank (optional fields where `""` means absent).
            pub fn non_empty(self) -> Option<String> {
                (!self.0.is_empty()).then_some(self.0)
            }
        }

        impl<const MIN: usize, const MAX: usize> std::ops::Deref for $name<MIN, MAX> {
            type Target = str;
            fn deref(&self) -> &str {
                &self.0
            }
        }

        impl<const MIN: usize, const MAX: usize> fmt::Debug for $name<MIN, MAX> {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                // Text may be PHI: debug output shows its size only.
                write!(f, "{}({} chars)", stringify!($name), self.0.chars().count())
            }
        }

        impl<'de, const MIN: usize, const MAX: usize> Deserialize<'de> for $name<MIN, MAX> {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                Self::new(String::deserialize(d)?).map_err(de::Error::custom)
            }
        }

        impl<const MIN: usize, const MAX: usize> Serialize for $name<MIN, MAX> {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(&self.0)
            }
        }

        impl<const MIN: usize, const MAX: usize> PartialSchema for $name<MIN, MAX> {
            fn schema() -> RefOr<Schema> {
                let size = if MIN > 0 { format!("{MIN}–{MAX}") } else { format!("at most {MAX}") };
                string_schema($lines, MIN, MAX, format!(concat!($what, ", {} characters"), size))
            }
        }

        impl<const MIN: usize, const MAX: usize> ToSchema for $name<MIN, MAX> {
            fn name() -> Cow<'static, str> {
                Cow::Owned(format!(concat!(stringify!($name), "_{}_{}"), MIN, MAX))
            }
        }
    };
}

text_type!(
    /// One line of text: `MIN..=MAX` characters, no control characters, no tab or line break,
    /// no bidirectional formatting characters; surrounding whitespace is trimmed.
    Line,
    Lines::One,
    "One line of text (no control, tab, line-break or bidirectional formatting characters)"
);

text_type!(
    /// Text that may span lines: `MIN..=MAX` characters; tab, line feed and carriage return
    /// allowed, other control characters and bidirectional formatting characters refused;
    /// surrounding whitespace is trimmed.
    Text,
    Lines::Many,
    "Text (tabs and line breaks allowed; no other control or bidirectional formatting characters)"
);

/// A person's name part, a display name or a contact's name.
pub type PersonName = Line<1, 100>;
/// An email address as sent (its shape is checked by `auth::normalise_email`).
pub type Email = Line<1, 254>;
/// A phone number as sent (its shape is checked by `patients::phone`).
pub type Phone = Line<1, 32>;
/// A page size.
pub type PageSize = Int<1, 100>;
/// A sequence number or offset: 0 up to `i64::MAX`.
pub type NonNegative = Int<0, { i64::MAX }>;

/// A password as sent: never trimmed; at most [`Password::MAX`] characters here (new passwords
/// must also pass `auth::password::validate`, 8–128 characters); line breaks allowed, other
/// control characters and bidirectional formatting characters refused.
#[derive(Clone)]
pub struct Password(String);

impl Password {
    pub const MAX: usize = 1024;

    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn into_inner(self) -> String {
        self.0
    }
}

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Password(..)")
    }
}

impl<'de> Deserialize<'de> for Password {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        bounded(String::deserialize(d)?, Lines::Many, 0, Self::MAX, false).map(Self).map_err(de::Error::custom)
    }
}

impl PartialSchema for Password {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .format(Some(SchemaFormat::KnownFormat(KnownFormat::Password)))
            .max_length(Some(Self::MAX))
            .pattern(Some(text::MANY_LINES_PATTERN))
            .description(Some("A password, not trimmed; a new one must be 8–128 characters (`weak_password`)"))
            .into()
    }
}

impl ToSchema for Password {}

// ---------------------------------------------------------------------------------------------
// Numbers and dates

/// An integer in `MIN..=MAX`; anything else (negative where not allowed, too large, not a
/// whole number, not a number) is refused naming the field.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Int<const MIN: i64, const MAX: i64>(i64);

impl<const MIN: i64, const MAX: i64> Int<MIN, MAX> {
    pub fn new(v: i64) -> Result<Self, String> {
        if (MIN..=MAX).contains(&v) {
            Ok(Self(v))
        } else {
            Err(Self::rule())
        }
    }

    fn rule() -> String {
        if MAX == i64::MAX {
            format!("must be a whole number, at least {MIN}")
        } else {
            format!("must be a whole number from {MIN} to {MAX}")
        }
    }

    pub fn get(self) -> i64 {
        self.0
    }

    /// The value as an `i32` (for `int4` columns); saturates, though every bound used with it
    /// fits.
    pub fn get_i32(self) -> i32 {
        i32::try_from(self.0).unwrap_or(if self.0 < 0 { i32::MIN } else { i32::MAX })
    }
}

impl<'de, const MIN: i64, const MAX: i64> Deserialize<'de> for Int<MIN, MAX> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<const MIN: i64, const MAX: i64>;
        impl<const MIN: i64, const MAX: i64> Visitor<'_> for V<MIN, MAX> {
            type Value = Int<MIN, MAX>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&Int::<MIN, MAX>::rule())
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
                Int::new(v).map_err(E::custom)
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
                i64::try_from(v).map_err(|_| E::custom(Int::<MIN, MAX>::rule())).and_then(|v| self.visit_i64(v))
            }
            fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
                Err(E::custom(Int::<MIN, MAX>::rule()))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                // Query strings carry numbers as text.
                v.parse::<i64>().map_err(|_| E::custom(Int::<MIN, MAX>::rule())).and_then(|v| self.visit_i64(v))
            }
        }
        d.deserialize_i64(V::<MIN, MAX>)
    }
}

impl<const MIN: i64, const MAX: i64> Serialize for Int<MIN, MAX> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_i64(self.0)
    }
}

impl<const MIN: i64, const MAX: i64> PartialSchema for Int<MIN, MAX> {
    fn schema() -> RefOr<Schema> {
        let fits32 = MIN >= i64::from(i32::MIN) && MAX <= i64::from(i32::MAX);
        ObjectBuilder::new()
            .schema_type(Type::Integer)
            .format(Some(SchemaFormat::KnownFormat(if fits32 { KnownFormat::Int32 } else { KnownFormat::Int64 })))
            .minimum(Some(MIN as f64))
            .maximum(Some(MAX as f64))
            .into()
    }
}

impl<const MIN: i64, const MAX: i64> ToSchema for Int<MIN, MAX> {
    fn name() -> Cow<'static, str> {
        Cow::Owned(if MAX == i64::MAX { format!("Int_{MIN}_max") } else { format!("Int_{MIN}_{MAX}") })
    }
}

/// A calendar day written `YYYY-MM-DD`, from 1900-01-01 to 9999-12-31 (so day arithmetic never
/// leaves chrono's or PostgreSQL's range).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Date(NaiveDate);

impl Date {
    pub const RULE: &'static str = "must be a real date, YYYY-MM-DD, from 1900-01-01 to 9999-12-31";

    pub fn parse(s: &str) -> Result<Self, &'static str> {
        let ok = s.len() == 10 && s.as_bytes()[4] == b'-' && s.as_bytes()[7] == b'-';
        let d = NaiveDate::parse_from_str(s, "%Y-%m-%d").ok().filter(|_| ok).ok_or(Self::RULE)?;
        let min = NaiveDate::from_ymd_opt(1900, 1, 1).ok_or(Self::RULE)?;
        if d < min {
            return Err(Self::RULE);
        }
        Ok(Self(d))
    }

    pub fn get(self) -> NaiveDate {
        self.0
    }
}

impl TryFrom<NaiveDate> for Date {
    type Error = &'static str;
    fn try_from(d: NaiveDate) -> Result<Self, Self::Error> {
        Date::parse(&d.format("%Y-%m-%d").to_string())
    }
}

impl fmt::Display for Date {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0.format("%Y-%m-%d"))
    }
}

impl Serialize for Date {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Date {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = Cow::<str>::deserialize(d)?;
        Date::parse(&s).map_err(de::Error::custom)
    }
}

impl PartialSchema for Date {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .format(Some(SchemaFormat::KnownFormat(KnownFormat::Date)))
            .description(Some("YYYY-MM-DD, from 1900-01-01 to 9999-12-31"))
            .into()
    }
}

impl ToSchema for Date {}

/// An instant written in RFC 3339, from year 1900 to 9999 (UTC): inside what PostgreSQL's
/// `timestamptz` holds, and far from where chrono's arithmetic overflows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Instant(DateTime<FixedOffset>);

impl Instant {
    pub const RULE: &'static str = "must be an RFC 3339 date-time from year 1900 to 9999";

    pub fn new(t: DateTime<FixedOffset>) -> Result<Self, &'static str> {
        if (1900..=9999).contains(&t.naive_utc().year()) {
            Ok(Self(t))
        } else {
            Err(Self::RULE)
        }
    }

    pub fn get(self) -> DateTime<FixedOffset> {
        self.0
    }
}

impl<'de> Deserialize<'de> for Instant {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Instant::new(DateTime::<FixedOffset>::deserialize(d)?).map_err(de::Error::custom)
    }
}

impl PartialSchema for Instant {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .format(Some(SchemaFormat::KnownFormat(KnownFormat::DateTime)))
            .description(Some("RFC 3339 date-time, from year 1900 to 9999"))
            .into()
    }
}

impl ToSchema for Instant {}

// ---------------------------------------------------------------------------------------------
// Lists

/// `deserialize_with` for a list of at most `MAX` items: refused as soon as item `MAX + 1`
/// arrives, before it is kept. Pair it with `#[schema(max_items = MAX)]`.
pub fn at_most<'de, const MAX: usize, D, T>(d: D) -> Result<Vec<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    struct V<const MAX: usize, T>(PhantomData<T>);
    impl<'de, const MAX: usize, T: Deserialize<'de>> Visitor<'de> for V<MAX, T> {
        type Value = Vec<T>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            write!(f, "a list of at most {MAX} items")
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<T>, A::Error> {
            let mut out = Vec::new();
            while let Some(item) = seq.next_element()? {
                if out.len() == MAX {
                    return Err(de::Error::custom(format!("must have at most {MAX} items")));
                }
                out.push(item);
            }
            Ok(out)
        }
    }
    d.deserialize_seq(V::<MAX, T>(PhantomData))
}

// ---------------------------------------------------------------------------------------------
// Query strings and paths

/// Parses the query string into `T` (call it after authorisation). A refusal names the
/// parameter: `unknown_field` for a parameter `T` does not take, `invalid_field` for a bad
/// value (including a repeated parameter).
pub fn query<T: serde::de::DeserializeOwned>(req: &HttpRequest) -> Result<T, ApiError> {
    parse_query(req.query_string())
}

/// [`query`] on a raw query string.
pub fn parse_query<T: serde::de::DeserializeOwned>(qs: &str) -> Result<T, ApiError> {
    let de = serde_urlencoded::Deserializer::new(url::form_urlencoded::parse(qs.as_bytes()));
    serde_path_to_error::deserialize::<_, T>(de).map_err(|e| {
        let path = e.path().to_string();
        let msg = e.into_inner().to_string();
        if let Some(f) = between(&msg, "unknown field `", "`") {
            return ApiError::field(Code::UnknownField, f, format!("unknown query parameter `{f}`"));
        }
        let field = match between(&msg, "field `", "`") {
            Some(f) => f.to_string(),
            None if path != "." && !path.is_empty() => path,
            None => return ApiError::new(Code::InvalidField, format!("bad query string: {msg}")),
        };
        ApiError::field(Code::InvalidField, field.clone(), format!("`{field}`: {msg}"))
    })
}

pub(crate) fn between<'a>(s: &'a str, start: &str, end: &str) -> Option<&'a str> {
    let i = s.find(start)? + start.len();
    let j = s[i..].find(end)? + i;
    Some(&s[i..j])
}

/// Percent-decodes `s` (and `+` as space for query strings); `None` when the bytes are not UTF-8.
fn decode(s: &str, plus_is_space: bool) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
        match b[i] {
            b'%' if i + 2 < b.len() => match (hex(b[i + 1]), hex(b[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push(h * 16 + l);
                    i += 3;
                    continue;
                }
                _ => out.push(b'%'),
            },
            b'+' if plus_is_space => out.push(b' '),
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8(out).ok()
}

/// What is wrong with the request target, if anything: a path segment or query parameter
/// that is not UTF-8 once decoded or holds a character one-line text may not (every path
/// segment and query value is one line), or a query string over [`MAX_QUERY_BYTES`].
pub fn check_target(path: &str, query: &str) -> Result<(), ApiError> {
    let bad =
        |field: String, why: String| ApiError::field(Code::InvalidField, field.clone(), format!("`{field}` {why}"));
    for seg in path.split('/') {
        let Some(s) = decode(seg, false) else { return Err(bad("path".into(), "must be UTF-8".into())) };
        text::check(&s, Lines::One).map_err(|r| bad("path".into(), r.to_string()))?;
    }
    if query.len() > MAX_QUERY_BYTES {
        return Err(bad("query".into(), format!("must be at most {MAX_QUERY_BYTES} bytes")));
    }
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let key = decode(k, true);
        // A key that is itself bad is named by what can be shown of it.
        let name = match &key {
            Some(k) if text::check(k, Lines::One).is_ok() => k.clone(),
            _ => "query".into(),
        };
        let Some(key) = key else { return Err(bad(name, "must be UTF-8".into())) };
        text::check(&key, Lines::One).map_err(|r| bad(name.clone(), r.to_string()))?;
        let Some(value) = decode(v, true) else { return Err(bad(name, "must be UTF-8".into())) };
        text::check(&value, Lines::One).map_err(|r| bad(name, r.to_string()))?;
    }
    Ok(())
}

/// Middleware: refuses a request whose path or query string breaks [`check_target`] before it
/// is routed, so no handler, extractor or store ever sees such a string. It depends on nothing
/// but the request line, so it tells an unauthenticated caller nothing. FHIR routes answer an
/// `OperationOutcome`, the others the error envelope.
pub async fn clean_target(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<EitherBody<impl MessageBody>>, actix_web::Error> {
    if let Err(e) = check_target(req.path(), req.query_string()) {
        let resp = if req.path().starts_with("/fhir/") {
            crate::http::fhir::outcome(&e)
        } else {
            actix_web::ResponseError::error_response(&e)
        };
        return Ok(req.into_response(resp).map_into_right_body());
    }
    next.call(req).await.map(ServiceResponse::map_into_left_body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_trimmed_and_bounded_by_the_text_as_sent() {
        assert_eq!(Line::<1, 5>::new("  ab ").unwrap().as_str(), "ab");
        assert!(Line::<1, 5>::new("abcdef").is_err());
        assert!(Line::<1, 5>::new("   ").is_err());
        assert_eq!(Line::<0, 5>::new("   ").unwrap().non_empty(), None);
        assert_eq!(Line::<1, 4>::new("ÿÿÿÿ").unwrap().as_str(), "ÿÿÿÿ");
    }

    #[test]
    fn lines_refuse_line_breaks_and_text_keeps_them() {
        assert!(Line::<1, 50>::new("a\nb").is_err());
        assert!(Line::<1, 50>::new("a\tb").is_err());
        assert_eq!(Text::<1, 50>::new("a\r\nb\tc").unwrap().as_str(), "a\r\nb\tc");
        for bad in ["a\0b", "a\u{7f}", "\u{85}x", "x\u{202e}y"] {
            assert!(Text::<1, 50>::new(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn integers_are_bounded_whatever_their_form() {
        type After = Int<0, { i64::MAX }>;
        let json = |s: &str| serde_json::from_str::<After>(s);
        assert!(json("0").is_ok());
        for bad in ["-1", "1.5", "1e400", "18446744073709551616", "\"3\""] {
            assert!(json(bad).is_err(), "{bad}");
        }
        #[derive(Debug, Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Q {
            #[allow(dead_code)]
            after: After,
        }
        assert!(parse_query::<Q>("after=5").is_ok());
        for bad in ["after=-1", "after=abc", "after=99999999999999999999", "after=", "after=1&after=2"] {
            let e = parse_query::<Q>(bad).unwrap_err();
            assert_eq!((e.code, e.field.as_deref()), (Code::InvalidField, Some("after")), "{bad}: {}", e.message);
        }
        let e = parse_query::<Q>("after=1&other=2").unwrap_err();
        assert_eq!((e.code, e.field.as_deref()), (Code::UnknownField, Some("other")));
    }

    #[test]
    fn dates_stay_in_range() {
        assert!(Date::parse("2024-02-29").is_ok());
        for bad in ["0000-01-01", "+262143-12-31", "2023-02-29", "2024-1-01", "1899-12-31"] {
            assert!(Date::parse(bad).is_err(), "{bad}");
        }
        let instant = |s: &str| serde_json::from_value::<Instant>(s.into());
        assert!(instant("9999-12-31T23:59:59Z").is_ok());
        assert!(instant("2027-01-05T10:00:00+01:00").is_ok());
        for bad in ["+262143-12-31T00:00:00Z", "10000-01-01T00:00:00Z", "-0001-01-01T00:00:00Z", "1899-12-31T23:00:00Z"]
        {
            assert!(instant(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn lists_stop_at_their_bound() {
        #[derive(Deserialize)]
        struct L {
            #[serde(deserialize_with = "at_most::<2, _, _>")]
            xs: Vec<u8>,
        }
        assert_eq!(serde_json::from_str::<L>(r#"{"xs":[1,2]}"#).unwrap().xs, [1, 2]);
        assert!(serde_json::from_str::<L>(r#"{"xs":[1,2,3]}"#).is_err());
    }

    #[test]
    fn targets_with_forbidden_characters_are_refused_naming_the_parameter() {
        assert!(check_target("/v1/patients/abc", "name=Zo%C3%AB+%C3%91%C3%BA%C3%B1ez&limit=5").is_ok());
        assert!(check_target("/fhir/Patient", "name=%D7%A9%D7%A8%D7%94").is_ok());
        for (path, q, field) in [
            ("/v1/patients/%00", "", "path"),
            ("/v1/patients/a%0Ab", "", "path"),
            ("/v1/patients/%FF", "", "path"),
            ("/v1/patients", "name=%00", "name"),
            ("/v1/patients", "name=a%0Db", "name"),
            ("/v1/patients", "limit=5&name=%E2%80%AEevil", "name"),
            ("/v1/patients", "na%00me=x", "query"),
            ("/v1/patients", "name=%C0%80", "name"),
        ] {
            let e = check_target(path, q).unwrap_err();
            assert_eq!((e.code, e.field.as_deref()), (Code::InvalidField, Some(field)), "{path}?{q}");
        }
        assert!(check_target("/v1/patients", &"a=b&".repeat(2000)).is_err());
    }
}
