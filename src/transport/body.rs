//! The request-body deadline, for every route: a body must arrive within
//! `client_body_timeout_ms` of its headers, plus one second per `client_body_min_rate` bytes
//! received (a large upload at a reasonable pace earns its time; a trickle does not). The
//! payload every extractor reads is wrapped, so the route waiting for the body gets an error
//! when time is up, and whatever it answers is replaced by `408 request_timeout` with
//! `Connection: close` (the rest of the body is never read).
//!
//! Websocket upgrades are left alone: their "body" is the socket, which has its own
//! heartbeat and limits.

use std::cell::Cell;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};
use std::time::Duration;

use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{Payload, ServiceRequest, ServiceResponse};
use actix_web::error::PayloadError;
use actix_web::http::header;
use actix_web::middleware::Next;
use actix_web::{web, HttpMessage, ResponseError};
use bytes::Bytes;
use coherency_protocol::Code;
use futures_util::Stream;
use tokio::time::{Instant, Sleep};

use crate::error::ApiError;
use crate::state::AppState;

/// Whether the request announces a body.
fn has_body(req: &ServiceRequest) -> bool {
    let headers = req.headers();
    headers.contains_key(header::TRANSFER_ENCODING)
        || headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .is_some_and(|n| n > 0)
}

/// Middleware: see the module header.
pub async fn deadline(
    mut req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<EitherBody<impl MessageBody>>, actix_web::Error> {
    let limits =
        req.app_data::<web::Data<AppState>>().map(|s| (s.config.client_body_timeout_ms, s.config.client_body_min_rate));
    let Some((timeout_ms, min_rate)) = limits else { return Ok(next.call(req).await?.map_into_left_body()) };
    if req.head().upgrade() || !has_body(&req) {
        return Ok(next.call(req).await?.map_into_left_body());
    }
    let expired = Rc::new(Cell::new(false));
    let inner = req.take_payload();
    let timed: Pin<Box<dyn Stream<Item = Result<Bytes, PayloadError>>>> =
        Box::pin(Deadline::new(inner, Duration::from_millis(timeout_ms), min_rate, expired.clone()));
    req.set_payload(Payload::Stream { payload: timed });
    let res = next.call(req).await?;
    if !expired.get() {
        return Ok(res.map_into_left_body());
    }
    let mut answer = ApiError::new(Code::RequestTimeout, "the request body did not arrive in time").error_response();
    answer.head_mut().set_connection_type(actix_web::http::ConnectionType::Close);
    Ok(ServiceResponse::new(res.into_parts().0, answer).map_into_right_body())
}

/// A payload that fails once its deadline passes.
struct Deadline {
    inner: Payload,
    started: Instant,
    base: Duration,
    min_rate: u64,
    received: u64,
    timer: Pin<Box<Sleep>>,
    expired: Rc<Cell<bool>>,
}

impl Deadline {
    fn new(inner: Payload, base: Duration, min_rate: u64, expired: Rc<Cell<bool>>) -> Self {
        let started = Instant::now();
        Self {
            inner,
            started,
            base,
            min_rate,
            received: 0,
            timer: Box::pin(tokio::time::sleep_until(started + base)),
            expired,
        }
    }

    /// The deadline after `received` bytes.
    fn due(&self) -> Instant {
        let earned = match self.min_rate {
            0 => Duration::ZERO,
            rate => Duration::from_millis(self.received.saturating_mul(1000) / rate),
        };
        self.started + self.base + earned
    }
}

impl Stream for Deadline {
    type Item = Result<Bytes, PayloadError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        if this.expired.get() {
            return Poll::Ready(None);
        }
        match Pin::new(&mut this.inner).poll_next(cx) {
            Poll::Ready(Some(Ok(chunk))) => {
                this.received += chunk.len() as u64;
                let due = this.due();
                this.timer.as_mut().reset(due);
                Poll::Ready(Some(Ok(chunk)))
            }
            Poll::Ready(other) => Poll::Ready(other),
            Poll::Pending => {
                if this.timer.as_mut().poll(cx).is_ready() {
                    this.expired.set(true);
                    let err = std::io::Error::new(std::io::ErrorKind::TimedOut, "request body timed out");
                    return Poll::Ready(Some(Err(PayloadError::Io(err))));
                }
                Poll::Pending
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::StreamExt;

    fn trickle(chunks: Vec<(u64, &'static [u8])>) -> Payload {
        let s = futures_util::stream::iter(chunks).then(|(ms, b)| async move {
            tokio::time::sleep(Duration::from_millis(ms)).await;
            Ok::<_, PayloadError>(Bytes::from_static(b))
        });
        let boxed: Pin<Box<dyn Stream<Item = Result<Bytes, PayloadError>>>> =
            Box::pin(s.chain(futures_util::stream::pending()));
        Payload::Stream { payload: boxed }
    }

    #[tokio::test]
    async fn a_trickle_fails_at_its_deadline_and_a_steady_upload_earns_time() {
        let flag = Rc::new(Cell::new(false));
        let mut d = Deadline::new(trickle(vec![(0, b"a")]), Duration::from_millis(300), 1000, flag.clone());
        let started = Instant::now();
        assert!(d.next().await.unwrap().is_ok());
        assert!(d.next().await.unwrap().is_err(), "one byte, then nothing: the body times out");
        assert!(flag.get());
        let took = started.elapsed();
        assert!(took >= Duration::from_millis(301) && took < Duration::from_secs(3), "{took:?}");

        // 100 bytes every 300 ms at a minimum rate of 500 B/s: each chunk earns 200 ms, so a
        // 1 s allowance is never used up although the upload takes longer than 1 s.
        let flag = Rc::new(Cell::new(false));
        let chunk: &'static [u8] = &[0u8; 100];
        let mut d = Deadline::new(trickle(vec![(300, chunk); 4]), Duration::from_secs(1), 500, flag.clone());
        for _ in 0..4 {
            assert!(d.next().await.unwrap().is_ok());
        }
        assert!(!flag.get());
    }
}
