//! The connection guard: the socket as the HTTP/1 dispatcher sees it. Every byte the client
//! sends is first decoded by a second copy of actix-http's own request codec (the "shadow"),
//! so the guard knows exactly where each request head starts and ends, and what the
//! dispatcher would make of it, before the dispatcher reads it:
//!
//! - a head that does not parse, or is larger than `max_header_bytes`, or is not complete
//!   within `client_header_timeout_ms` (from the connection's opening for the first request,
//!   from its first byte for later ones — the dispatcher itself times only the first) is never
//!   shown to the dispatcher. It sees the requests before it, then the end of the input;
//! - so it answers those earlier requests as usual and then closes the connection, and the
//!   guard writes its own answer — `400 bad_request`, `431 headers_too_large` or
//!   `408 request_timeout` in the JSON envelope — in front of the close, then keeps reading
//!   (and discarding) for the disconnect timeout so a client still sending gets the answer
//!   instead of a reset.
//!
//! Responses are not inspected: the guard only ever writes after the dispatcher is done.
//! After a request that switches protocols (a websocket upgrade; everything after its head
//! belongs to the socket) the shadow stops and bytes pass straight through.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use actix_codec::Decoder;
use actix_http::error::ParseError;
use actix_http::h1::{Codec, Message, MessageType};
use actix_http::ServiceConfig;
use bytes::{Bytes, BytesMut};
use coherency_protocol::error::Code;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{sleep, Instant, Sleep};

use super::peers::PeerSlot;
use super::Limits;

/// Most bytes read and discarded from a connection being closed.
pub(super) const DRAIN_CAP: usize = 256 * 1024;

/// Why the guard ends a connection.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Refusal {
    /// A request head did not arrive in time.
    HeadTimeout,
    /// A request head is larger than allowed.
    HeadTooLarge,
    /// A request head does not parse (the reason is the parser's, safe to show).
    Malformed(String),
    /// A chunked body's framing is broken: the route reading it already gets an error and
    /// answers, so the guard only closes.
    BrokenBody,
}

impl Refusal {
    /// The answer written before closing, if any.
    fn answer(&self) -> Option<Bytes> {
        let (code, message) = match self {
            Refusal::HeadTimeout => {
                (Code::RequestTimeout, "the request line and headers did not arrive in time".into())
            }
            Refusal::HeadTooLarge => (Code::HeadersTooLarge, "the request line and headers are too large".into()),
            Refusal::Malformed(why) => (Code::BadRequest, format!("the request could not be parsed: {why}")),
            Refusal::BrokenBody => return None,
        };
        let (bytes, request_id) = super::error_response(code, &message, None);
        tracing::info!(request_id, code = code.as_str(), "request refused by the connection guard");
        Some(bytes)
    }
}

/// What feeding new bytes to the shadow decided.
#[derive(Debug, PartialEq, Eq)]
enum Fed {
    /// Everything is fine; `in_head` when an incomplete request head is waiting for more.
    Fine { in_head: bool },
    /// The connection switched protocols: stop decoding.
    Upgraded,
    /// Refuse; the first `keep` of the new bytes (complete requests before the bad head)
    /// still go to the dispatcher.
    Refused { refusal: Refusal, keep: usize },
}

/// The second request decoder, fed the same bytes as the dispatcher's.
struct Shadow {
    codec: Codec,
    buf: BytesMut,
    /// Inside a request body (not at a head).
    in_body: bool,
    /// Stream offset of `buf[0]`.
    decoded: u64,
    /// Bytes handed to the dispatcher so far.
    released: u64,
}

impl Shadow {
    /// `config` is shared by a worker's connections (each one made spawns a clock task).
    fn new(config: ServiceConfig) -> Self {
        Self { codec: Codec::new(config), buf: BytesMut::new(), in_body: false, decoded: 0, released: 0 }
    }

    fn feed(&mut self, fresh: &[u8], max_head: usize) -> Fed {
        let start = self.released;
        self.buf.extend_from_slice(fresh);
        self.released += fresh.len() as u64;
        let refused = |refusal, at: u64| Fed::Refused { refusal, keep: at.saturating_sub(start) as usize };
        loop {
            let at = self.decoded;
            let before = self.buf.len();
            let decoded = self.codec.decode(&mut self.buf);
            let used = (before - self.buf.len()) as u64;
            self.decoded += used;
            match decoded {
                Ok(Some(Message::Item(_request))) => {
                    if used > max_head as u64 {
                        return refused(Refusal::HeadTooLarge, at);
                    }
                    match self.codec.message_type() {
                        MessageType::Stream => return Fed::Upgraded,
                        MessageType::Payload => self.in_body = true,
                        MessageType::None => self.in_body = false,
                    }
                }
                Ok(Some(Message::Chunk(Some(_)))) => {}
                Ok(Some(Message::Chunk(None))) => self.in_body = false,
                Ok(None) => break,
                Err(_) if self.in_body => return refused(Refusal::BrokenBody, at),
                Err(ParseError::TooLarge) => return refused(Refusal::HeadTooLarge, at),
                Err(e) => return refused(Refusal::Malformed(e.to_string()), at),
            }
        }
        let in_head = !self.in_body && !self.buf.is_empty();
        if in_head && self.buf.len() > max_head {
            return refused(Refusal::HeadTooLarge, self.decoded);
        }
        Fed::Fine { in_head }
    }
}

/// How far closing a refused connection has got.
enum Closing {
    Open,
    Answering { answer: Bytes, written: usize },
    ShuttingDown,
    Draining { until: Pin<Box<Sleep>>, left: usize },
    Closed,
}

/// A client connection as the dispatcher sees it (see the module header).
pub(super) struct Guarded<T> {
    io: T,
    limits: Arc<Limits>,
    /// `None` once the connection switched protocols or was refused.
    shadow: Option<Shadow>,
    /// While a request head is incomplete: when it must be complete.
    head_deadline: Option<Pin<Box<Sleep>>>,
    refusal: Option<Refusal>,
    closing: Closing,
    /// This connection's place under the per-address cap.
    _slot: Option<PeerSlot>,
}

impl<T> Guarded<T> {
    pub(super) fn new(io: T, limits: Arc<Limits>, codec: ServiceConfig, slot: Option<PeerSlot>) -> Self {
        // The first request's head is timed from the connection's opening: a client that
        // connects and sends nothing holds a connection no longer than one that dawdles.
        let head_deadline = Some(Box::pin(sleep(limits.header_timeout)));
        Self {
            io,
            limits,
            shadow: Some(Shadow::new(codec)),
            head_deadline,
            refusal: None,
            closing: Closing::Open,
            _slot: slot,
        }
    }

    fn refuse(&mut self, refusal: Refusal) {
        self.shadow = None;
        self.head_deadline = None;
        self.refusal = Some(refusal);
    }
}

impl<T: AsyncRead + AsyncWrite + Unpin> AsyncRead for Guarded<T> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.refusal.is_some() {
            // The dispatcher has every request before the refused head; for it the input ends.
            return Poll::Ready(Ok(()));
        }
        if let Some(deadline) = this.head_deadline.as_mut() {
            if deadline.as_mut().poll(cx).is_ready() {
                this.refuse(Refusal::HeadTimeout);
                return Poll::Ready(Ok(()));
            }
        }
        let before = buf.filled().len();
        ready!(Pin::new(&mut this.io).poll_read(cx, buf))?;
        let Some(shadow) = this.shadow.as_mut() else { return Poll::Ready(Ok(())) };
        let fresh = &buf.filled()[before..];
        if fresh.is_empty() {
            return Poll::Ready(Ok(()));
        }
        match shadow.feed(fresh, this.limits.max_header_bytes) {
            Fed::Fine { in_head: true } => {
                if this.head_deadline.is_none() {
                    this.head_deadline = Some(Box::pin(sleep(this.limits.header_timeout)));
                }
            }
            Fed::Fine { in_head: false } => this.head_deadline = None,
            Fed::Upgraded => {
                this.shadow = None;
                this.head_deadline = None;
            }
            Fed::Refused { refusal, keep } => {
                buf.set_filled(before + keep);
                this.refuse(refusal);
            }
        }
        Poll::Ready(Ok(()))
    }
}

impl<T: AsyncRead + AsyncWrite + Unpin> AsyncWrite for Guarded<T> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    /// The dispatcher closes the connection: a refused one first gets the guard's answer
    /// (after everything the dispatcher wrote), then is read out for the disconnect timeout.
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            match &mut this.closing {
                Closing::Open => match this.refusal.as_ref().and_then(Refusal::answer) {
                    Some(answer) => this.closing = Closing::Answering { answer, written: 0 },
                    None if this.refusal.is_some() => this.closing = Closing::ShuttingDown,
                    None => return Pin::new(&mut this.io).poll_shutdown(cx),
                },
                Closing::Answering { answer, written } => {
                    while *written < answer.len() {
                        let n = ready!(Pin::new(&mut this.io).poll_write(cx, &answer[*written..]))?;
                        if n == 0 {
                            return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
                        }
                        *written += n;
                    }
                    ready!(Pin::new(&mut this.io).poll_flush(cx))?;
                    this.closing = Closing::ShuttingDown;
                }
                Closing::ShuttingDown => {
                    ready!(Pin::new(&mut this.io).poll_shutdown(cx))?;
                    let until = Box::pin(tokio::time::sleep_until(Instant::now() + this.limits.disconnect_timeout));
                    this.closing = Closing::Draining { until, left: DRAIN_CAP };
                }
                Closing::Draining { until, left } => {
                    if until.as_mut().poll(cx).is_ready() || *left == 0 {
                        this.closing = Closing::Closed;
                        continue;
                    }
                    let mut sink = [0u8; 4096];
                    let mut rb = ReadBuf::new(&mut sink);
                    match Pin::new(&mut this.io).poll_read(cx, &mut rb) {
                        Poll::Ready(Ok(())) if !rb.filled().is_empty() => {
                            *left = left.saturating_sub(rb.filled().len());
                        }
                        Poll::Ready(_) => this.closing = Closing::Closed,
                        Poll::Pending => return Poll::Pending,
                    }
                }
                Closing::Closed => return Poll::Ready(Ok(())),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAX: usize = 1024;

    fn shadow() -> Shadow {
        Shadow::new(ServiceConfig::default())
    }

    fn fed(shadow: &mut Shadow, bytes: &[u8]) -> Fed {
        shadow.feed(bytes, MAX)
    }

    #[actix_web::test]
    async fn complete_requests_pass_and_a_partial_head_is_waiting() {
        let mut s = shadow();
        assert_eq!(fed(&mut s, b"GET / HTTP/1.1\r\nHost: a\r\n\r\nGET /x HTT"), Fed::Fine { in_head: true });
        assert_eq!(fed(&mut s, b"P/1.1\r\nHost: a\r\n\r\n"), Fed::Fine { in_head: false });
    }

    #[actix_web::test]
    async fn a_body_is_not_a_head_and_the_next_head_starts_after_it() {
        let mut s = shadow();
        assert_eq!(
            fed(&mut s, b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nab"),
            Fed::Fine { in_head: false }
        );
        assert_eq!(fed(&mut s, b"cde"), Fed::Fine { in_head: false });
        assert_eq!(fed(&mut s, b"GET"), Fed::Fine { in_head: true });
    }

    #[actix_web::test]
    async fn a_chunked_body_is_followed_to_its_end() {
        let mut s = shadow();
        let req = b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n";
        assert_eq!(fed(&mut s, req), Fed::Fine { in_head: false });
        assert_eq!(fed(&mut s, b"GET / HTTP/1.1\r\n"), Fed::Fine { in_head: true });
        assert!(matches!(fed(&mut s, b"3\r\nxyz\r\n\r\n"), Fed::Refused { refusal: Refusal::Malformed(_), keep: 0 }));
    }

    #[actix_web::test]
    async fn broken_chunk_framing_closes_without_an_answer_of_the_guard() {
        let mut s = shadow();
        let head = b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n";
        assert_eq!(fed(&mut s, head), Fed::Fine { in_head: false });
        assert!(matches!(fed(&mut s, b"zz\r\nabc"), Fed::Refused { refusal: Refusal::BrokenBody, .. }));
        assert_eq!(Refusal::BrokenBody.answer(), None);
    }

    #[actix_web::test]
    async fn a_bad_head_after_good_requests_keeps_the_good_ones() {
        let mut s = shadow();
        let good = b"GET / HTTP/1.1\r\nHost: a\r\n\r\n";
        let mut bytes = good.to_vec();
        bytes.extend_from_slice(b"GET / HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer cha_\x7f\r\n\r\n");
        match fed(&mut s, &bytes) {
            Fed::Refused { refusal: Refusal::Malformed(_), keep } => assert_eq!(keep, good.len()),
            other => panic!("{other:?}"),
        }
    }

    #[actix_web::test]
    async fn a_bad_head_split_over_reads_is_refused_without_the_new_bytes() {
        let mut s = shadow();
        assert_eq!(fed(&mut s, b"GET / HTTP/1.1\r\nHost: a\r\nX: cha_"), Fed::Fine { in_head: true });
        assert!(matches!(fed(&mut s, b"\x7f\r\n\r\n"), Fed::Refused { refusal: Refusal::Malformed(_), keep: 0 }));
    }

    #[actix_web::test]
    async fn obs_text_in_a_header_value_is_accepted_by_the_parser() {
        // Bytes 0x80-0xFF are legal (obs-text); routes that read such a header must cope.
        let mut s = shadow();
        assert_eq!(
            fed(&mut s, b"GET / HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer cha_\xe9\r\n\r\n"),
            Fed::Fine { in_head: false }
        );
    }

    #[actix_web::test]
    async fn a_head_over_the_limit_is_refused_whole_or_partial() {
        let mut s = shadow();
        let mut big = b"GET / HTTP/1.1\r\nHost: a\r\nX-Big: ".to_vec();
        big.extend(std::iter::repeat_n(b'a', MAX));
        assert_eq!(fed(&mut s, &big), Fed::Refused { refusal: Refusal::HeadTooLarge, keep: 0 });
        let mut s = shadow();
        big.extend_from_slice(b"\r\n\r\n");
        assert_eq!(fed(&mut s, &big), Fed::Refused { refusal: Refusal::HeadTooLarge, keep: 0 });
    }

    #[actix_web::test]
    async fn a_websocket_upgrade_stops_the_shadow() {
        let mut s = shadow();
        let req = b"GET /v1/ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n";
        assert_eq!(fed(&mut s, req), Fed::Upgraded);
    }
}
