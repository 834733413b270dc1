//! Socket pumps. A socket task decodes, forwards to the owning actor and writes back; it
//! holds no domain state. The JSON text sockets (consult signalling, events, the board) run
//! one loop, [`pump`]; the scan stream runs its own over two transports with the same timing
//! constants. Shared here: authentication of the upgrade request, and the parse of
//! a client's JSON text frame ([`parse_text`]), which holds it to the character rule of every
//! other input before anything reads it.

pub mod consult;
pub mod dashboard;
pub mod events;
mod pump;
pub mod scan;
pub mod scan_rtc;

use actix_web::{web, HttpRequest};
use coherency_protocol::Code;
use serde::de::DeserializeOwned;
use serde::Deserialize;

use crate::auth::Principal;
use crate::error::ApiError;
use crate::state::AppState;

#[derive(Deserialize)]
struct TicketQuery {
    ticket: Option<String>,
}

/// Authenticates a socket upgrade. A request carrying `Origin` (every browser sends one) must
/// come from `public_url` or one of `allowed_origins`, compared exactly (scheme, host, port);
/// anything else — including an origin that merely equals the request's own `Host`, which the
/// client chooses — is `403 origin_not_allowed` before any credential is looked at. A request
/// without `Origin` (a native app) is not a browser and is judged on its credentials alone:
/// a single-use `?ticket=` or an `Authorization: Bearer` header. A capture session is refused
/// (403) on every socket but its scan's stream and RTC signalling (`crate::auth::confine`).
pub async fn authenticate(req: &HttpRequest, state: &AppState) -> Result<Principal, ApiError> {
    if let Some(origin) = req.headers().get("origin") {
        let allowed = origin.to_str().is_ok_and(|o| {
            let o = o.trim_end_matches('/');
            state.config.origins().iter().any(|a| a.eq_ignore_ascii_case(o))
        });
        if !allowed {
            return Err(ApiError::new(Code::OriginNotAllowed, "this origin may not open sockets"));
        }
    }
    let q = web::Query::<TicketQuery>::from_query(req.query_string()).map_err(|_| ApiError::unauthenticated())?;
    let who = if let Some(ticket) = q.ticket.as_deref() {
        state.identity.redeem_ticket(ticket).await?
    } else {
        let token = crate::auth::bearer(req).ok_or_else(ApiError::unauthenticated)?;
        state.identity.authenticate(token).await?
    };
    // A capture session opens its own scan's stream and nothing else.
    crate::auth::confine(state, req, &who).await?;
    Ok(who)
}

/// A client's text frame refused before it was used: what the socket's `error` frame says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    pub code: Code,
    pub message: String,
}

/// Parses a client's JSON text frame into a message of the socket's protocol. First the rule
/// every JSON body obeys (`crate::input::json::check`): one JSON object, every string free of control
/// characters (but tab and line breaks) and of bidirectional formatting characters, every key
/// one line and given once, nesting bounded; a frame breaking it is `invalid_field`, its
/// message naming the field (`` `text`: must not contain control characters (U+0000) ``).
/// Then the message type: anything else is `malformed_message`, worded `not_a_message`.
pub fn parse_text<T: DeserializeOwned>(text: &str, not_a_message: &str) -> Result<T, Refused> {
    let malformed = || Refused { code: Code::MalformedMessage, message: not_a_message.to_string() };
    if let Err(e) = crate::input::json::check(text.as_bytes()) {
        // A refusal that names a field is about the content; one that does not is about the
        // frame (not JSON, not an object, two documents).
        return Err(match e.field {
            Some(_) => Refused { code: Code::InvalidField, message: e.message },
            None => malformed(),
        });
    }
    serde_json::from_str(text).map_err(|_| malformed())
}

#[cfg(test)]
mod tests {
    use coherency_protocol::consult::ClientSignal;

    use super::*;

    #[test]
    fn text_frames_obey_the_character_rule_before_they_are_read() {
        let chat: ClientSignal = parse_text(r#"{"type":"chat","text":"hej\nnästa rad"}"#, "no").unwrap();
        assert_eq!(chat, ClientSignal::Chat { text: "hej\nnästa rad".into() });
        for (frame, code, says) in [
            (
                r#"{"type":"chat","text":"a\u0000b"}"#,
                Code::InvalidField,
                "`text`: must not contain control characters (U+0000)",
            ),
            (r#"{"type":"chat","text":"a\u202Eb"}"#, Code::InvalidField, "`text`: must not contain bidirectional"),
            (r#"{"type":"chat","text":"a","text":"b"}"#, Code::InvalidField, "`text`: appears twice"),
            (r#"{"type":"offer","sdp":"v=0\u0007"}"#, Code::InvalidField, "`sdp`: must not contain control characters"),
            (r#"{"type":"chat","text":"a"}{"type":"leave"}"#, Code::MalformedMessage, "not a signalling message"),
            (r#"["chat","a"]"#, Code::MalformedMessage, "not a signalling message"),
            (r#"{"type":"shout","text":"a"}"#, Code::MalformedMessage, "not a signalling message"),
        ] {
            let r = parse_text::<ClientSignal>(frame, "not a signalling message").unwrap_err();
            assert_eq!(r.code, code, "{frame}");
            assert!(r.message.starts_with(says), "{frame}: {}", r.message);
        }
    }
}
