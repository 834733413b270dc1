//! The boundary's input vocabulary: bounded text ([`Line`], [`Text`], [`Password`]), bounded
//! integers ([`Int`]), dates and instants ([`Day`], [`Instant`], [`ClockTime`]), strings of a
//! fixed shape (emails, phone numbers, codes, references: [`shaped!`]), time zones
//! ([`TimeZone`]) and lists ([`at_most`]) that request structs are made of, so a request that
//! parses is already inside its bounds; the query-string parser ([`query`]) and the rule a
//! request target obeys ([`check_target`]); the character rule of JSON documents, with
//! duplicate-key and trailing-data refusal ([`json`]). It sits below every way in — HTTP
//! (`crate::http::input` applies [`check_target`] before routing), the sockets and the CLI —
//! so none of them imports another's boundary.
//!
//! Every type here states its rule in the OpenAPI schema too (`maxLength`, `minimum`/`maximum`,
//! `maxItems`, `pattern`, `enum`), and the two are one: where the rule is a shape, the server
//! checks the very regular expression the schema states, so a generated client that obeys the
//! schema is never refused for a field's form (the unit tests below compare the two on the
//! edges, and `tests/api/contract.rs` fuzzes them). The bounds are in the table of
//! `docs/security.md` ("Input bounds"). A refusal is `400 invalid_field` naming the field; the
//! message says the rule, never the value.

use std::borrow::Cow;
use std::fmt;
use std::marker::PhantomData;
use std::sync::LazyLock;

use actix_web::HttpRequest;
use chrono::{DateTime, Datelike, FixedOffset, NaiveDate, NaiveTime};
use coherency_protocol::text::{self, Lines};
use coherency_protocol::Code;
use regex::Regex;
use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde::{Deserialize, Serialize, Serializer};
use utoipa::openapi::schema::{KnownFormat, ObjectBuilder, SchemaFormat, Type};
use utoipa::openapi::{RefOr, Schema};
use utoipa::{PartialSchema, ToSchema};
use uuid::Uuid;

use crate::error::ApiError;

pub mod json;

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

/// The pattern of text of this kind that keeps at least `min` characters once trimmed: what
/// [`bounded`] accepts, given `maxLength` (a blank `"  "` is not a name).
pub fn text_pattern(lines: Lines, min: usize) -> String {
    let (any, blank) = match lines {
        Lines::One => (text::ONE_LINE_CHAR, text::ONE_LINE_BLANK),
        Lines::Many => (text::MANY_LINES_CHAR, text::MANY_LINES_BLANK),
    };
    let seen = text::VISIBLE_CHAR;
    match min {
        0 => format!("^{any}*$"),
        1 => format!("^{any}*{seen}{any}*$"),
        // Blanks, then the trimmed text: a visible character, at least `min - 2` of any, a
        // visible one; then blanks.
        n => format!("^{blank}*{seen}{any}{{{},}}{seen}{blank}*$", n - 2),
    }
}

fn string_schema(lines: Lines, min: usize, max: usize, description: String) -> RefOr<Schema> {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .min_length((min > 0).then_some(min))
        .max_length(Some(max))
        .pattern(Some(text_pattern(lines, min)))
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

/// A field in a PATCH body: absent (unchanged), `null` (cleared) or a value.
#[derive(Debug, Clone, Default, PartialEq)]
pub enum Patch<T> {
    #[default]
    Absent,
    Null,
    Value(T),
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Patch<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(Option::<T>::deserialize(d)?.map_or(Patch::Null, Patch::Value))
    }
}

impl<T: Serialize> Serialize for Patch<T> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Patch::Value(v) => s.serialize_some(v),
            _ => s.serialize_none(),
        }
    }
}

impl<T> Patch<T> {
    /// Whether the patch names the field at all.
    pub fn is_set(&self) -> bool {
        !matches!(self, Patch::Absent)
    }

    /// A field that cannot be cleared: the new value, `None` when absent, and `null` refused
    /// with `cleared()`.
    pub fn required<E>(self, cleared: impl FnOnce() -> E) -> Result<Option<T>, E> {
        match self {
            Patch::Absent => Ok(None),
            Patch::Null => Err(cleared()),
            Patch::Value(v) => Ok(Some(v)),
        }
    }

    /// An optional field: absent keeps `slot`, `null` clears it, a value is turned by `f`
    /// into what `slot` holds.
    pub fn apply<U>(self, slot: &mut Option<U>, f: impl FnOnce(T) -> Option<U>) {
        let never: Result<(), std::convert::Infallible> = self.try_apply(slot, |v| Ok(f(v)));
        let Ok(()) = never;
    }

    /// [`Self::apply`] with a check that may refuse the value.
    pub fn try_apply<U, E>(self, slot: &mut Option<U>, f: impl FnOnce(T) -> Result<Option<U>, E>) -> Result<(), E> {
        match self {
            Patch::Absent => {}
            Patch::Null => *slot = None,
            Patch::Value(v) => *slot = f(v)?,
        }
        Ok(())
    }
}

/// A person's name part, a display name or a contact's name.
pub type PersonName = Line<1, 100>;
/// An email address as sent (stored lowercased by `auth::normalise_email`).
pub type Email = EmailAddress;
/// A phone number as sent (stored without separators by `patients::phone`).
pub type Phone = PhoneNumber;
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

/// A password being set (registration, a new staff account): [`Password`]'s characters and
/// `auth::password`'s length, 8–128 characters. That it is not one of the 10,000 most common
/// passwords is checked by `auth::password::validate` (`weak_password`); no schema states a list.
#[derive(Clone)]
pub struct NewPassword(String);

impl NewPassword {
    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn into_inner(self) -> String {
        self.0
    }
}

impl fmt::Debug for NewPassword {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("NewPassword(..)")
    }
}

impl<'de> Deserialize<'de> for NewPassword {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use crate::auth::password::{MAX_LEN, MIN_LEN};
        let raw = String::deserialize(d)?;
        // Counted untrimmed, as `validate` counts.
        if raw.chars().count() < MIN_LEN {
            return Err(de::Error::custom(format!("must be at least {MIN_LEN} characters")));
        }
        bounded(raw, Lines::Many, 0, MAX_LEN, false).map(Self).map_err(de::Error::custom)
    }
}

impl PartialSchema for NewPassword {
    fn schema() -> RefOr<Schema> {
        use crate::auth::password::{MAX_LEN, MIN_LEN};
        ObjectBuilder::new()
            .schema_type(Type::String)
            .format(Some(SchemaFormat::KnownFormat(KnownFormat::Password)))
            .min_length(Some(MIN_LEN))
            .max_length(Some(MAX_LEN))
            .pattern(Some(text::MANY_LINES_PATTERN))
            .description(Some(
                "A new password, not trimmed: 8–128 characters, not one of the 10,000 most common (`weak_password`)",
            ))
            .into()
    }
}

impl ToSchema for NewPassword {}

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
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
                // JSON Schema's `integer` is any number without a fraction (`30.0` is 30), so
                // the server takes what a schema-following client may send.
                const TWO_63: f64 = 9_223_372_036_854_775_808.0;
                if v.fract() == 0.0 && (-TWO_63..TWO_63).contains(&v) {
                    self.visit_i64(v as i64)
                } else {
                    Err(E::custom(Int::<MIN, MAX>::rule()))
                }
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

// Patterns shared by the types below, as `concat!` pieces. Each reads the same in ECMA-262 (the
// schema), Rust `regex` (the server) and Python `re` (the fuzzer): no `\s`, `\d`, `\p{..}` or
// look-around, whose meaning or support differs between them.

/// A UUID in its hyphenated form (the only form the API writes).
macro_rules! uuid_re {
    () => {
        "[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
    };
}

/// A real calendar day `YYYY-MM-DD` from 1900-01-01 to 9999-12-31: month lengths and leap
/// years included, so every string it matches is a date.
macro_rules! date_re {
    () => {
        concat!(
            "(?:(?:19[0-9]{2}|[2-9][0-9]{3})-(?:(?:0[13578]|1[02])-(?:0[1-9]|[12][0-9]|3[01])",
            "|(?:0[469]|11)-(?:0[1-9]|[12][0-9]|30)|02-(?:0[1-9]|1[0-9]|2[0-8]))",
            "|(?:19(?:0[48]|[2468][048]|[13579][26])|[2-9][0-9](?:0[48]|[2468][048]|[13579][26])",
            "|(?:[2468][048]|[3579][26])00)-02-29)"
        )
    };
}

/// An RFC 3339 time of day with its offset: `HH:MM:SS`, up to nine fraction digits, `Z` or
/// `±HH:MM` (no leap second).
macro_rules! time_re {
    () => {
        r"(?:[01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](?:\.[0-9]{1,9})?(?:Z|[+-](?:[01][0-9]|2[0-3]):[0-5][0-9])"
    };
}

/// A compiled pattern; every one is a constant, checked by the unit tests.
fn compiled(pattern: &str) -> Regex {
    Regex::new(pattern).unwrap_or_else(|e| unreachable!("static pattern {pattern} does not compile: {e}"))
}

fn pattern_schema(pattern: &str, max: Option<usize>, format: Option<KnownFormat>, description: &str) -> RefOr<Schema> {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .format(format.map(SchemaFormat::KnownFormat))
        .max_length(max)
        .pattern(Some(pattern))
        .description(Some(description))
        .into()
}

/// A calendar day written `YYYY-MM-DD`, from 1900-01-01 to 9999-12-31 (so day arithmetic never
/// leaves chrono's or PostgreSQL's range). Not called `Date`: utoipa's derive takes a field type
/// of that name for chrono's and writes a bare `format: date`, dropping this schema.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Day(NaiveDate);

impl Day {
    pub const RULE: &'static str = "must be a real date, YYYY-MM-DD, from 1900-01-01 to 9999-12-31";
    pub const PATTERN: &'static str = concat!("^", date_re!(), "$");

    pub fn parse(s: &str) -> Result<Self, &'static str> {
        static RE: LazyLock<Regex> = LazyLock::new(|| compiled(Day::PATTERN));
        if !RE.is_match(s) {
            return Err(Self::RULE);
        }
        NaiveDate::parse_from_str(s, "%Y-%m-%d").map(Self).map_err(|_| Self::RULE)
    }

    pub fn get(self) -> NaiveDate {
        self.0
    }
}

impl TryFrom<NaiveDate> for Day {
    type Error = &'static str;
    fn try_from(d: NaiveDate) -> Result<Self, Self::Error> {
        Day::parse(&d.format("%Y-%m-%d").to_string())
    }
}

impl fmt::Display for Day {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0.format("%Y-%m-%d"))
    }
}

impl Serialize for Day {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Day {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = Cow::<str>::deserialize(d)?;
        Day::parse(&s).map_err(de::Error::custom)
    }
}

impl PartialSchema for Day {
    fn schema() -> RefOr<Schema> {
        pattern_schema(Self::PATTERN, None, Some(KnownFormat::Date), "YYYY-MM-DD, from 1900-01-01 to 9999-12-31")
    }
}

impl ToSchema for Day {}

/// An instant written in RFC 3339 (`2027-01-05T10:00:00+01:00`), its date from year 1900 to
/// 9999 as written: inside what PostgreSQL's `timestamptz` holds, and far from where chrono's
/// arithmetic overflows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Instant(DateTime<FixedOffset>);

impl Instant {
    pub const RULE: &'static str =
        "must be an RFC 3339 date-time (YYYY-MM-DDTHH:MM:SS, Z or ±HH:MM) from year 1900 to 9999";
    pub const PATTERN: &'static str = concat!("^", date_re!(), "T", time_re!(), "$");

    pub fn new(t: DateTime<FixedOffset>) -> Result<Self, &'static str> {
        if (1900..=9999).contains(&t.year()) {
            Ok(Self(t))
        } else {
            Err(Self::RULE)
        }
    }

    pub fn parse(s: &str) -> Result<Self, &'static str> {
        static RE: LazyLock<Regex> = LazyLock::new(|| compiled(Instant::PATTERN));
        if !RE.is_match(s) {
            return Err(Self::RULE);
        }
        DateTime::parse_from_rfc3339(s).map_err(|_| Self::RULE).and_then(Self::new)
    }

    pub fn get(self) -> DateTime<FixedOffset> {
        self.0
    }
}

impl<'de> Deserialize<'de> for Instant {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = Cow::<str>::deserialize(d)?;
        Instant::parse(&s).map_err(de::Error::custom)
    }
}

impl PartialSchema for Instant {
    fn schema() -> RefOr<Schema> {
        pattern_schema(
            Self::PATTERN,
            None,
            Some(KnownFormat::DateTime),
            "RFC 3339 date-time (`T`, seconds, `Z` or ±HH:MM offset), from year 1900 to 9999",
        )
    }
}

impl ToSchema for Instant {}

/// A wall-clock time `HH:MM` (or `HH:MM:SS`), 00:00 to 23:59:59.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct ClockTime(NaiveTime);

impl ClockTime {
    pub const RULE: &'static str = "must be a time of day, HH:MM or HH:MM:SS";
    pub const PATTERN: &'static str = "^(?:[01][0-9]|2[0-3]):[0-5][0-9](?::[0-5][0-9])?$";

    pub fn parse(s: &str) -> Result<Self, &'static str> {
        static RE: LazyLock<Regex> = LazyLock::new(|| compiled(ClockTime::PATTERN));
        if !RE.is_match(s) {
            return Err(Self::RULE);
        }
        let format = if s.len() == 5 { "%H:%M" } else { "%H:%M:%S" };
        NaiveTime::parse_from_str(s, format).map(Self).map_err(|_| Self::RULE)
    }

    pub fn get(self) -> NaiveTime {
        self.0
    }
}

impl From<NaiveTime> for ClockTime {
    fn from(t: NaiveTime) -> Self {
        Self(t)
    }
}

impl Serialize for ClockTime {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(s)
    }
}

impl<'de> Deserialize<'de> for ClockTime {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = Cow::<str>::deserialize(d)?;
        ClockTime::parse(&s).map_err(de::Error::custom)
    }
}

impl PartialSchema for ClockTime {
    fn schema() -> RefOr<Schema> {
        pattern_schema(Self::PATTERN, None, None, "HH:MM or HH:MM:SS (24-hour clock)")
    }
}

impl ToSchema for ClockTime {}

/// An IANA time zone name (`Europe/London`), exactly as the tz database writes it; the schema
/// lists them all.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeZone(chrono_tz::Tz);

impl TimeZone {
    pub const RULE: &'static str = "not an IANA time zone";

    pub fn parse(s: &str) -> Result<Self, &'static str> {
        s.parse::<chrono_tz::Tz>().map(Self).map_err(|_| Self::RULE)
    }

    pub fn get(self) -> chrono_tz::Tz {
        self.0
    }

    /// Every name the server accepts, sorted.
    pub fn names() -> Vec<&'static str> {
        let mut names: Vec<&'static str> = chrono_tz::TZ_VARIANTS.iter().map(|tz| tz.name()).collect();
        names.sort_unstable();
        names
    }
}

impl<'de> Deserialize<'de> for TimeZone {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = Cow::<str>::deserialize(d)?;
        TimeZone::parse(&s).map_err(de::Error::custom)
    }
}

impl Serialize for TimeZone {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.0.name())
    }
}

impl PartialSchema for TimeZone {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .enum_values(Some(Self::names()))
            .description(Some("An IANA time zone name, e.g. `Europe/London`"))
            .into()
    }
}

impl ToSchema for TimeZone {}

// ---------------------------------------------------------------------------------------------
// Shapes

/// A one-line string of a fixed shape: at most `max` characters matching `pattern`, which the
/// server checks and the schema states, unchanged. No trimming: a shape says where spaces go.
/// The value may be PHI (a phone number, an email), so `Debug` shows its size only.
macro_rules! shaped {
    ($(#[$doc:meta])* $name:ident, max = $max:expr, pattern = $pattern:expr, rule = $rule:expr, describe = $describe:expr) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, Hash)]
        pub struct $name(String);

        impl $name {
            pub const MAX: usize = $max;
            pub const PATTERN: &'static str = $pattern;
            pub const RULE: &'static str = $rule;

            /// Checks `raw` against the shape; the error is the rule it breaks.
            pub fn new(raw: impl Into<String>) -> Result<Self, &'static str> {
                static RE: LazyLock<Regex> = LazyLock::new(|| compiled($name::PATTERN));
                let raw = raw.into();
                // Cheap bound first: a huge string is refused before it is matched.
                if raw.len() > Self::MAX * 4 || raw.chars().count() > Self::MAX || !RE.is_match(&raw) {
                    return Err(Self::RULE);
                }
                Ok(Self(raw))
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }

            pub fn into_inner(self) -> String {
                self.0
            }
        }

        impl std::ops::Deref for $name {
            type Target = str;
            fn deref(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({} chars)", stringify!($name), self.0.chars().count())
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                Self::new(String::deserialize(d)?).map_err(de::Error::custom)
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(&self.0)
            }
        }

        impl PartialSchema for $name {
            fn schema() -> RefOr<Schema> {
                pattern_schema(Self::PATTERN, Some(Self::MAX), None, $describe)
            }
        }

        impl ToSchema for $name {}
    };
}

/// A character an email address may hold outside its `@`: visible (no white space, control
/// or bidirectional formatting character); and the same but `.`, which may not end a domain.
macro_rules! email_char {
    () => {
        r"[^@\u0000-\u0020\u007F-\u00A0\u1680\u2000-\u200A\u2028-\u202F\u205F\u2066-\u2069\u3000]"
    };
    (not_dot) => {
        r"[^.@\u0000-\u0020\u007F-\u00A0\u1680\u2000-\u200A\u2028-\u202F\u205F\u2066-\u2069\u3000]"
    };
}

shaped!(
    /// An email address: one `@`, something before it, and a domain with a dot neither first
    /// nor last; no white space. Stored lowercased (`auth::normalise_email`).
    EmailAddress,
    max = 254,
    pattern = concat!("^", email_char!(), "+@", email_char!(not_dot), email_char!(), r"*\.", email_char!(), "*", email_char!(not_dot), "$"),
    rule = "must be an email address (one @, a domain with a dot, no spaces)",
    describe = "An email address (one `@`, a domain with a dot, no spaces); stored lowercased"
);

impl EmailAddress {
    /// The address as stored: lowercased (which moves no `@`, dot or white space, so the
    /// shape holds).
    pub fn normalise(self) -> Self {
        Self(self.0.to_lowercase())
    }
}

shaped!(
    /// A phone number: `+` (optional) and 7–15 digits, with spaces, dots, dashes or
    /// parentheses anywhere as separators (stored without them).
    PhoneNumber,
    max = 32,
    pattern = r"^[-. ()]*(?:\+[-. ()]*)?(?:[0-9][-. ()]*){7,15}$",
    rule = "must be a phone number (an optional +, 7-15 digits; spaces, dots, dashes, parentheses between)",
    describe = "An optional `+` and 7–15 digits; spaces, dots, dashes and parentheses may separate them"
);

impl PhoneNumber {
    /// The number as stored: without separators (`+46701234567`), still of the shape.
    pub fn normalise(self) -> Self {
        Self(self.0.chars().filter(|c| !matches!(c, ' ' | '-' | '.' | '(' | ')')).collect())
    }
}

shaped!(
    /// A BCP 47 language tag, simplified: a 2–3 letter language and up to four subtags of 1–8
    /// letters or digits (`en`, `pt-BR`, `zh-Hant-TW`).
    LanguageTag,
    max = 64,
    pattern = "^[A-Za-z]{2,3}(?:-[A-Za-z0-9]{1,8}){0,4}$",
    rule = "must be a BCP 47 language tag (en, pt-BR)",
    describe = "A BCP 47 language tag: 2–3 letters, then up to four `-` subtags of 1–8 letters or digits"
);

shaped!(
    /// A medical record number: 1–32 letters, digits or `-`.
    Mrn,
    max = 32,
    pattern = "^[A-Za-z0-9-]{1,32}$",
    rule = "must be 1-32 letters, digits or -",
    describe = "1–32 letters, digits or `-`"
);

shaped!(
    /// A national id: 1–32 letters, digits, spaces or `-`, not only spaces (stored trimmed).
    NationalId,
    max = 32,
    pattern = "^[A-Za-z0-9 -]*[A-Za-z0-9-][A-Za-z0-9 -]*$",
    rule = "must be 1-32 letters, digits, spaces or -",
    describe = "1–32 letters, digits, spaces or `-`, not only spaces; stored trimmed"
);

shaped!(
    /// An ISO 3166-1 alpha-2 country code (`GB`, `se`: stored uppercase), or `""` for none.
    CountryCode,
    max = 2,
    pattern = "^(?:[A-Za-z]{2})?$",
    rule = "must be an ISO 3166-1 alpha-2 code",
    describe = "ISO 3166-1 alpha-2 (`GB`, `US`; stored uppercase), or empty for none"
);

shaped!(
    /// A SNOMED CT concept id: 6–18 digits.
    SnomedCode,
    max = 18,
    pattern = "^[0-9]{6,18}$",
    rule = "must be 6-18 digits",
    describe = "A SNOMED CT concept id: 6–18 digits"
);

shaped!(
    /// The version of a consent text (`2026-01`): 1–32 letters, digits, `.`, `_` or `-`.
    TermsVersion,
    max = 32,
    pattern = "^[A-Za-z0-9._-]{1,32}$",
    rule = "must be 1-32 letters, digits, . _ or -",
    describe = "1–32 letters, digits, `.`, `_` or `-`"
);

shaped!(
    /// An `Idempotency-Key`: 1–100 visible ASCII characters, spaces only between them.
    IdempotencyKey,
    max = 100,
    pattern = "^[!-~](?:[ -~]*[!-~])?$",
    rule = "must be 1-100 visible ASCII characters",
    describe = "1–100 visible ASCII characters (spaces only between them); the same key answers the same appointment"
);

shaped!(
    /// An opaque page cursor as the server writes it (unpadded base64url). Only a cursor this
    /// server issued is accepted (`invalid_field` otherwise): the schema can state its
    /// alphabet, not its origin.
    Cursor,
    max = 1024,
    pattern = "^[A-Za-z0-9_-]{1,1024}$",
    rule = "is not a cursor this server issued",
    describe = "`next_cursor` (or the `_cursor` of a `next` link) of the previous page, as given"
);

shaped!(
    /// A capture code as the server writes it in a capture link (`chc_` and 43 base64url
    /// characters: 256 random bits). Only a code the server issued, unused and unexpired, is
    /// redeemed (`401 invalid_capture_code` otherwise): the schema can state its shape only.
    /// `Debug` shows its size, never the code.
    CaptureCode,
    max = 47,
    pattern = "^chc_[A-Za-z0-9_-]{43}$",
    rule = "is not a capture code (chc_ and 43 letters, digits, - or _)",
    describe = "The `code` of a capture link (`…/capture#code=…`), as given"
);

shaped!(
    /// A FHIR `date` search value: a prefix (`eq` by default, `ge`, `gt`, `le`, `lt`) and a year,
    /// month, day or RFC 3339 date-time, from year 1900.
    FhirDateParam,
    max = 45,
    pattern = concat!(
        "^(?:eq|ge|gt|le|lt)?(?:(?:19[0-9]{2}|[2-9][0-9]{3})(?:-(?:0[1-9]|1[0-2]))?|",
        date_re!(),
        "(?:T",
        time_re!(),
        ")?)$"
    ),
    rule = "must be [eq|ge|gt|le|lt]YYYY[-MM[-DD]] or a date-time",
    describe = "`[eq|ge|gt|le|lt]` + `YYYY`, `YYYY-MM`, `YYYY-MM-DD` or an RFC 3339 date-time (from 1900)"
);

shaped!(
    /// A FHIR `birthdate` search value: a day, optionally prefixed `eq`.
    FhirBirthdate,
    max = 12,
    pattern = concat!("^(?:eq)?", date_re!(), "$"),
    rule = "must be YYYY-MM-DD (or eqYYYY-MM-DD), from 1900-01-01",
    describe = "`YYYY-MM-DD` or `eqYYYY-MM-DD`, from 1900-01-01"
);

impl FhirBirthdate {
    pub fn date(&self) -> Day {
        Day::parse(self.0.strip_prefix("eq").unwrap_or(&self.0))
            .unwrap_or_else(|_| unreachable!("the pattern admits only real dates"))
    }
}

shaped!(
    /// A FHIR `identifier` search value: an MRN, bare or behind its system
    /// (`urn:coherency:default:mrn|` or `|`).
    MrnIdentifier,
    max = 60,
    pattern = r"^(?:(?:urn:coherency:default:mrn)?\|)?[A-Za-z0-9-]{1,32}$",
    rule = "must be an MRN (1-32 letters, digits or -), bare or as urn:coherency:default:mrn|MRN",
    describe = "`system|value` or `value`: an MRN (1–32 letters, digits or `-`), system `urn:coherency:default:mrn` or empty"
);

impl MrnIdentifier {
    /// The MRN.
    pub fn mrn(&self) -> &str {
        self.0.rsplit('|').next().unwrap_or(&self.0)
    }
}

shaped!(
    /// An entity tag as the server writes it in `ETag` (`"3"` or `W/"3"`: the record's
    /// version), sent back in `If-Match`.
    EntityTag,
    max = 23,
    pattern = r#"^(?:W/)?"[0-9]{1,19}"$"#,
    rule = "must be an ETag this server wrote (\"3\" or W/\"3\")",
    describe = "The `ETag` last read (`\"3\"` or `W/\"3\"`)"
);

impl EntityTag {
    /// The version it names (`None` past `i64::MAX`, which no record reaches).
    pub fn version(&self) -> Option<i64> {
        self.0.trim_start_matches("W/").trim_matches('"').parse().ok()
    }
}

/// A reference to a resource of one kind: `Kind/{id}` or the bare id (a hyphenated UUID).
macro_rules! reference {
    ($(#[$doc:meta])* $name:ident, $kind:literal) => {
        shaped!(
            $(#[$doc])*
            $name,
            max = 36 + $kind.len() + 1,
            pattern = concat!("^(?:", $kind, "/)?", uuid_re!(), "$"),
            rule = concat!("must be ", $kind, "/{id} or the id"),
            describe = concat!("`", $kind, "/{id}` or the id (a UUID)")
        );

        impl $name {
            /// The id referred to.
            pub fn id(&self) -> Uuid {
                let id = self.0.strip_prefix(concat!($kind, "/")).unwrap_or(&self.0);
                id.parse().unwrap_or_else(|_| unreachable!("the pattern admits only hyphenated UUIDs"))
            }
        }
    };
}

reference!(
    /// A FHIR reference to a patient: `Patient/{id}` or the id.
    PatientRef,
    "Patient"
);
reference!(
    /// A FHIR reference to a practitioner (a clinician's user id): `Practitioner/{id}` or the id.
    PractitionerRef,
    "Practitioner"
);
reference!(
    /// A FHIR reference to a clinician's schedule: `Schedule/{id}` or the id.
    ScheduleRef,
    "Schedule"
);
reference!(
    /// A FHIR reference to a wound's `Condition`: `Condition/{id}` or the id.
    ConditionRef,
    "Condition"
);

/// A patient-name search: up to 100 characters, blank for no filter, otherwise holding at
/// least one character that is neither white space nor `%`, `_`, `\` (which the search ignores).
#[derive(Clone, PartialEq, Eq)]
pub struct NameQuery(Line<0, 100>);

impl NameQuery {
    pub const RULE: &'static str = "needs at least one letter or digit";

    pub fn new(raw: impl Into<String>) -> Result<Self, String> {
        let line = Line::<0, 100>::new(raw)?;
        if !line.is_empty() && line.chars().all(|c| c.is_whitespace() || matches!(c, '%' | '_' | '\\')) {
            return Err(Self::RULE.into());
        }
        Ok(Self(line))
    }

    /// The trimmed words, or `None` when blank.
    pub fn non_empty(self) -> Option<String> {
        self.0.non_empty()
    }

    /// The rule as a pattern: blank, or some character the search can use.
    fn pattern() -> String {
        let (any, blank) = (text::ONE_LINE_CHAR, text::ONE_LINE_BLANK);
        let word = r"[^%_\\\u0000-\u0020\u007F-\u00A0\u1680\u2000-\u200A\u2028-\u202F\u205F\u2066-\u2069\u3000]";
        format!("^(?:{blank}*|{any}*{word}{any}*)$")
    }
}

impl fmt::Debug for NameQuery {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NameQuery({} chars)", self.0.chars().count())
    }
}

impl<'de> Deserialize<'de> for NameQuery {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Self::new(String::deserialize(d)?).map_err(de::Error::custom)
    }
}

impl PartialSchema for NameQuery {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .max_length(Some(100))
            .pattern(Some(Self::pattern()))
            .description(Some("Name words, accent- and typo-tolerant; blank for none (`%`, `_`, `\\` are ignored)"))
            .into()
    }
}

impl ToSchema for NameQuery {}

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

#[cfg(test)]
pub(crate) mod tests {
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
        // JSON Schema's `integer` includes numbers written with a zero fraction.
        assert_eq!(json("30.0").unwrap().get(), 30);
        assert_eq!(json("1e2").unwrap().get(), 100);
        for bad in ["-1", "1.5", "1e400", "18446744073709551616", "9223372036854775808.0", "\"3\""] {
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
        assert!(Day::parse("2024-02-29").is_ok());
        for bad in ["0000-01-01", "+262143-12-31", "2023-02-29", "2024-1-01", "1899-12-31"] {
            assert!(Day::parse(bad).is_err(), "{bad}");
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

    fn matches(pattern: &str, s: &str) -> bool {
        compiled(pattern).is_match(s)
    }
    #[test]
    fn the_character_classes_are_the_character_rule() {
        let classes = [
            (text::ONE_LINE_CHAR, text::ONE_LINE_BLANK, Lines::One),
            (text::MANY_LINES_CHAR, text::MANY_LINES_BLANK, Lines::Many),
        ];
        let (visible, any) = (
            compiled(&format!("^{}$", text::VISIBLE_CHAR)),
            classes.map(|(a, b, l)| (compiled(&format!("^{a}$")), compiled(&format!("^{b}$")), l)),
        );
        // The classes name nothing above U+3000; a few samples stand for the rest.
        let chars = (0..=0x3100u32).chain([0xFEFF, 0xFFFD, 0x1F600, 0x10FFFF]).filter_map(char::from_u32);
        for c in chars {
            let s = c.to_string();
            for (allowed, blank, lines) in &any {
                let ok = text::refusal(c, *lines).is_none();
                assert_eq!(allowed.is_match(&s), ok, "{c:?} {lines:?}");
                assert_eq!(blank.is_match(&s), ok && c.is_whitespace(), "{c:?} {lines:?} blank");
            }
            let seen = text::refusal(c, Lines::Many).is_none() && !c.is_whitespace();
            assert_eq!(visible.is_match(&s), seen, "{c:?} visible");
        }
    }

    /// Every string of up to `len` characters from `alphabet`.
    fn strings(alphabet: &[char], len: usize) -> Vec<String> {
        let mut out = vec![String::new()];
        let mut last = vec![String::new()];
        for _ in 0..len {
            last = last.iter().flat_map(|s| alphabet.iter().map(move |c| format!("{s}{c}"))).collect();
            out.extend(last.iter().cloned());
        }
        out
    }

    #[test]
    fn text_patterns_accept_exactly_what_lines_and_texts_accept() {
        let alphabet = ['a', ' ', '\u{A0}', '\t', '\n', '\u{2028}', '\u{202E}', '\0', '%'];
        let patterns: Vec<(Lines, usize, Regex)> = [Lines::One, Lines::Many]
            .into_iter()
            .flat_map(|l| (0..=4).map(move |min| (l, min, compiled(&text_pattern(l, min)))))
            .collect();
        let name_pattern = compiled(&NameQuery::pattern());
        for s in strings(&alphabet, 4) {
            for (lines, min, pattern) in &patterns {
                let server = bounded(s.clone(), *lines, *min, 100, true).is_ok();
                assert_eq!(pattern.is_match(&s), server, "{s:?} min {min} {lines:?}");
            }
            assert_eq!(name_pattern.is_match(&s), NameQuery::new(s.clone()).is_ok(), "name {s:?}");
        }
        assert!(Line::<1, 100>::new("  ").is_err() && !matches(&text_pattern(Lines::One, 1), "  "));
        assert!(Text::<10, 500>::new(" I need to see the record ").is_ok());
        assert!(Text::<10, 500>::new("   short   ").is_err());
    }

    /// Strings drawn from `pattern` (as a client following the schema writes them) are
    /// accepted; those over a shape's `maxLength` are not drawn.
    pub(crate) fn accepts_what_it_states(pattern: &str, accepts: impl Fn(&str) -> bool) {
        accepts_what_it_states_up_to(pattern, usize::MAX, accepts)
    }

    fn accepts_what_it_states_up_to(pattern: &str, max: usize, accepts: impl Fn(&str) -> bool) {
        use proptest::strategy::{Strategy, ValueTree};
        // The generator takes the pattern without its anchors (it writes whole strings).
        let inner = pattern.strip_prefix('^').and_then(|p| p.strip_suffix('$')).expect("anchored pattern");
        let strategy = proptest::string::string_regex(inner).unwrap_or_else(|e| panic!("{pattern}: {e}"));
        let mut runner = proptest::test_runner::TestRunner::deterministic();
        for _ in 0..2000 {
            let s = strategy.new_tree(&mut runner).unwrap().current();
            if s.chars().count() <= max {
                assert!(accepts(&s), "{s:?} matches {pattern} but is refused");
            }
        }
    }

    #[test]
    fn every_string_a_shape_admits_is_accepted() {
        accepts_what_it_states(Day::PATTERN, |s| Day::parse(s).is_ok());
        accepts_what_it_states(Instant::PATTERN, |s| Instant::parse(s).is_ok());
        accepts_what_it_states(ClockTime::PATTERN, |s| ClockTime::parse(s).is_ok());
        accepts_what_it_states(FhirBirthdate::PATTERN, |s| {
            FhirBirthdate::new(s).is_ok_and(|b| b.date().get().year() >= 1900)
        });
        accepts_what_it_states(MrnIdentifier::PATTERN, |s| {
            MrnIdentifier::new(s).is_ok_and(|i| Mrn::new(i.mrn()).is_ok())
        });
        accepts_what_it_states(EntityTag::PATTERN, |s| EntityTag::new(s).is_ok());
        for (pattern, max, accepts) in [
            (EmailAddress::PATTERN, EmailAddress::MAX, (|s: &str| EmailAddress::new(s).is_ok()) as fn(&str) -> bool),
            (PhoneNumber::PATTERN, PhoneNumber::MAX, |s| PhoneNumber::new(s).is_ok()),
            (LanguageTag::PATTERN, LanguageTag::MAX, |s| LanguageTag::new(s).is_ok()),
            (Mrn::PATTERN, Mrn::MAX, |s| Mrn::new(s).is_ok()),
            (NationalId::PATTERN, NationalId::MAX, |s| NationalId::new(s).is_ok()),
            (CountryCode::PATTERN, CountryCode::MAX, |s| CountryCode::new(s).is_ok()),
            (SnomedCode::PATTERN, SnomedCode::MAX, |s| SnomedCode::new(s).is_ok()),
            (TermsVersion::PATTERN, TermsVersion::MAX, |s| TermsVersion::new(s).is_ok()),
            (IdempotencyKey::PATTERN, IdempotencyKey::MAX, |s| IdempotencyKey::new(s).is_ok()),
            (Cursor::PATTERN, Cursor::MAX, |s| Cursor::new(s).is_ok()),
            (CaptureCode::PATTERN, CaptureCode::MAX, |s| CaptureCode::new(s).is_ok()),
            (PatientRef::PATTERN, PatientRef::MAX, |s| {
                PatientRef::new(s).is_ok_and(|r| r.id().to_string() == s.trim_start_matches("Patient/").to_lowercase())
            }),
            (ScheduleRef::PATTERN, ScheduleRef::MAX, |s| ScheduleRef::new(s).is_ok()),
            (ConditionRef::PATTERN, ConditionRef::MAX, |s| ConditionRef::new(s).is_ok()),
        ] {
            accepts_what_it_states_up_to(pattern, max, accepts);
        }
    }

    #[test]
    fn shapes_keep_the_rules_they_replace() {
        // The checks these types replaced, on the values they accepted and refused.
        for ok in ["a@b.co", "Zoë.Ångström@example.se", "x+tag@sub.example.org", "a@b..c"] {
            assert!(EmailAddress::new(ok).is_ok(), "{ok}");
        }
        for bad in ["", "a", "a@b", "@b.co", "a@.b", "a@b.", "a@@b.co", "a b@c.co", "a@b.co\u{202E}", " a@b.co"] {
            assert!(EmailAddress::new(bad).is_err(), "{bad:?}");
        }
        assert_eq!(EmailAddress::new("Ann@Example.COM").unwrap().normalise().as_str(), "ann@example.com");
        for ok in ["+46701234567", "(+46) 70-123 45.67", "0701234", "123456789012345"] {
            assert!(PhoneNumber::new(ok).is_ok(), "{ok}");
        }
        for bad in ["123456", "1234567890123456", "+4670+1234567", "46 70 abc 4567", "++46701234567"] {
            assert!(PhoneNumber::new(bad).is_err(), "{bad}");
        }
        assert_eq!(PhoneNumber::new("(+46) 70-123 45.67").unwrap().normalise().as_str(), "+46701234567");
        for ok in ["en", "pt-BR", "zh-Hant-TW", "sgn-BE-FR", "de-CH-1901-x-a"] {
            assert!(LanguageTag::new(ok).is_ok(), "{ok}");
        }
        for bad in ["e", "engl", "en-", "en_GB", "en-123456789", "a-b-c-d-e-f", "1a"] {
            assert!(LanguageTag::new(bad).is_err(), "{bad}");
        }
        assert!(NationalId::new(" 12 34 ").is_ok() && NationalId::new("   ").is_err());
        assert!(CountryCode::new("").is_ok() && CountryCode::new("se").is_ok() && CountryCode::new("S1").is_err());
        assert!(SnomedCode::new("402863005").is_ok() && SnomedCode::new("12345").is_err());
        assert!(TermsVersion::new("2026-01").is_ok() && TermsVersion::new("2026 01").is_err());
        assert!(IdempotencyKey::new("k-1 x").is_ok() && IdempotencyKey::new(" k").is_err());
        assert!(IdempotencyKey::new("a\tb").is_err() && IdempotencyKey::new("x".repeat(101)).is_err());
        let id = "01a24c43-8a6c-777f-951a-f77169c80cd3";
        assert_eq!(PatientRef::new(format!("Patient/{id}")).unwrap().id().to_string(), id);
        assert_eq!(PatientRef::new(id).unwrap().id().to_string(), id);
        for bad in [format!("Patient/Patient/{id}"), format!("Practitioner/{id}"), id.replace('-', "")] {
            assert!(PatientRef::new(bad.clone()).is_err(), "{bad}");
        }
        assert_eq!(EntityTag::new("W/\"3\"").unwrap().version(), Some(3));
        assert!(EntityTag::new("3").is_err() && EntityTag::new("*").is_err());
        assert_eq!(MrnIdentifier::new("urn:coherency:default:mrn|MRN-1").unwrap().mrn(), "MRN-1");
        assert!(MrnIdentifier::new("|MRN-1").is_ok() && MrnIdentifier::new("http://other|MRN-1").is_err());
        for ok in ["2024", "ge2024-02", "lt2024-02-29", "2027-01-05T10:00:00+01:00", "eq2027-01-05T10:00:00.5Z"] {
            assert!(FhirDateParam::new(ok).is_ok(), "{ok}");
        }
        for bad in ["1899", "2023-02-29", "2024-13", "ne2024", "2024-01-01T24:00:00Z", "2024-01-01t10:00:00Z"] {
            assert!(FhirDateParam::new(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn instants_and_times_are_bounded_as_written() {
        assert!(Instant::parse("1900-01-01T00:30:00+01:00").is_ok(), "the year as written");
        assert!(Instant::parse("9999-12-31T23:59:59-12:00").is_ok(), "the year as written");
        assert!(Instant::parse("1899-12-31T23:30:00-01:00").is_err(), "the year as written");
        for bad in
            ["2024-01-01 10:00:00Z", "2024-01-01T10:00Z", "2024-01-01T23:59:60Z", "2024-01-01T10:00:00.1234567890Z"]
        {
            assert!(Instant::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(ClockTime::parse("09:30").unwrap().get(), NaiveTime::from_hms_opt(9, 30, 0).unwrap());
        for bad in ["9:30", "24:00", "09:60", "09:30:00.5"] {
            assert!(ClockTime::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn every_time_zone_the_schema_lists_parses_and_no_other() {
        for name in TimeZone::names() {
            assert!(TimeZone::parse(name).is_ok(), "{name}");
        }
        for bad in ["europe/london", "Europe/Londinium", "UTC ", ""] {
            assert!(TimeZone::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn new_passwords_are_8_to_128_characters_counted_as_sent() {
        let parse = |s: &str| serde_json::from_value::<NewPassword>(s.into());
        assert!(parse("  12345 ").is_ok() && parse("1234567").is_err());
        assert!(parse(&"é".repeat(128)).is_ok() && parse(&"é".repeat(129)).is_err());
    }
}
