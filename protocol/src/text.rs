//! The character rule every text a client sends must obey, on every transport: which code
//! points a string may hold. The server applies it to every JSON string, query parameter and
//! path segment (`docs/security.md`, "Input bounds"); clients can use it to refuse bad input
//! before sending.
//!
//! Refused everywhere: the C0 controls (U+0000–U+001F) other than tab, line feed and carriage
//! return, DEL (U+007F), the C1 controls (U+0080–U+009F) and the Unicode bidirectional
//! embeddings, overrides and isolates (U+202A–U+202E, U+2066–U+2069). Text that is one line
//! (names, emails, codes, titles, every query parameter and path segment) also refuses tab,
//! line feed, carriage return and the Unicode line and paragraph separators (U+2028, U+2029).
//!
//! Why the bidirectional controls go everywhere and not only in names: they reorder how a
//! string is drawn, so a note, a reason or an address can read differently on screen from what
//! is stored and audited (the "Trojan Source" problem), and anything a clinician reads may sit
//! next to a name. Right-to-left scripts do not need them: Arabic and Hebrew letters carry their
//! own direction. The implicit marks (U+200E, U+200F, U+061C) and the joiners (U+200C, U+200D),
//! which some scripts and emoji need, stay allowed.

/// Whether a text may span lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lines {
    /// One line: no tab, line feed, carriage return, line or paragraph separator.
    One,
    /// Several lines: tab, line feed and carriage return allowed.
    Many,
}

/// Why a character is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// A control character (C0, DEL, C1).
    Control(char),
    /// A bidirectional embedding, override or isolate.
    Bidi(char),
    /// A tab or a line break in one-line text.
    LineBreak(char),
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refusal::Control(c) => write!(f, "must not contain control characters (U+{:04X})", u32::from(*c)),
            Refusal::Bidi(c) => {
                write!(f, "must not contain bidirectional formatting characters (U+{:04X})", u32::from(*c))
            }
            Refusal::LineBreak(c) => write!(f, "must be one line, without tabs (U+{:04X})", u32::from(*c)),
        }
    }
}

/// Why `c` may not appear in text of this kind, if it may not.
pub fn refusal(c: char, lines: Lines) -> Option<Refusal> {
    match c {
        '\t' | '\n' | '\r' => (lines == Lines::One).then_some(Refusal::LineBreak(c)),
        '\u{2028}' | '\u{2029}' => (lines == Lines::One).then_some(Refusal::LineBreak(c)),
        // `is_control` is exactly C0, DEL and C1 (general category Cc).
        c if c.is_control() => Some(Refusal::Control(c)),
        '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}' => Some(Refusal::Bidi(c)),
        _ => None,
    }
}

/// The first character of `s` that text of this kind may not hold.
pub fn check(s: &str, lines: Lines) -> Result<(), Refusal> {
    match s.chars().find_map(|c| refusal(c, lines)) {
        Some(r) => Err(r),
        None => Ok(()),
    }
}

/// One character one-line text may hold, as a regular-expression class (ECMA-262, Rust `regex`
/// and Python `re` read it alike).
pub const ONE_LINE_CHAR: &str = r"[^\u0000-\u001F\u007F-\u009F\u2028\u2029\u202A-\u202E\u2066-\u2069]";
/// One character multi-line text may hold, as a regular-expression class.
pub const MANY_LINES_CHAR: &str = r"[^\u0000-\u0008\u000B\u000C\u000E-\u001F\u007F-\u009F\u202A-\u202E\u2066-\u2069]";
/// A character any text may hold that is not white space (Unicode `White_Space`, what
/// `str::trim` removes): what is left of a text once trimmed starts and ends with one.
pub const VISIBLE_CHAR: &str =
    r"[^\u0000-\u0020\u007F-\u00A0\u1680\u2000-\u200A\u2028-\u202F\u205F\u2066-\u2069\u3000]";
/// White space one-line text may hold (trimmed at either end).
pub const ONE_LINE_BLANK: &str = r"[\u0020\u00A0\u1680\u2000-\u200A\u202F\u205F\u3000]";
/// White space multi-line text may hold (trimmed at either end).
pub const MANY_LINES_BLANK: &str = r"[\u0009\u000A\u000D\u0020\u00A0\u1680\u2000-\u200A\u2028\u2029\u202F\u205F\u3000]";

/// The rule as an ECMA-262 regular expression (the OpenAPI `pattern` of one-line text).
pub const ONE_LINE_PATTERN: &str = r"^[^\u0000-\u001F\u007F-\u009F\u2028\u2029\u202A-\u202E\u2066-\u2069]*$";
/// The rule as an ECMA-262 regular expression (the OpenAPI `pattern` of multi-line text).
pub const MANY_LINES_PATTERN: &str =
    r"^[^\u0000-\u0008\u000B\u000C\u000E-\u001F\u007F-\u009F\u202A-\u202E\u2066-\u2069]*$";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn letters_of_every_script_pass() {
        for s in ["Zoë Ñúñez", "محمد عبد الله", "שרה כהן", "王小明", "O'Brien-Smith", "👩‍⚕️", "a\u{200F}b"]
        {
            assert_eq!(check(s, Lines::One), Ok(()), "{s}");
        }
    }

    #[test]
    fn controls_are_refused_everywhere() {
        for c in ['\0', '\u{1}', '\u{1B}', '\u{7F}', '\u{80}', '\u{9F}'] {
            let s = format!("a{c}b");
            assert_eq!(check(&s, Lines::Many), Err(Refusal::Control(c)), "{c:?}");
            assert_eq!(check(&s, Lines::One), Err(Refusal::Control(c)), "{c:?}");
        }
    }

    #[test]
    fn bidi_controls_are_refused_everywhere() {
        for c in ['\u{202A}', '\u{202E}', '\u{2066}', '\u{2069}'] {
            assert_eq!(check(&format!("a{c}b"), Lines::Many), Err(Refusal::Bidi(c)));
        }
        assert_eq!(check("a\u{2029}b", Lines::Many), Ok(()));
    }

    #[test]
    fn the_patterns_are_their_character_classes_repeated() {
        assert_eq!(ONE_LINE_PATTERN, format!("^{ONE_LINE_CHAR}*$"));
        assert_eq!(MANY_LINES_PATTERN, format!("^{MANY_LINES_CHAR}*$"));
    }

    #[test]
    fn line_breaks_only_in_multi_line_text() {
        for c in ['\t', '\n', '\r', '\u{2028}', '\u{2029}'] {
            let s = format!("a{c}b");
            assert_eq!(check(&s, Lines::Many), Ok(()), "{c:?}");
            assert_eq!(check(&s, Lines::One), Err(Refusal::LineBreak(c)), "{c:?}");
        }
    }
}
