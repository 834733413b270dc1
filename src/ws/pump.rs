//! The loop every JSON text socket runs (consult signalling, the event socket, the live
//! board): one `select!` over the client's messages, the owning actor's outbox, the heartbeat
//! tick, the session re-check, revocation and shutdown, with the timing and close rules they
//! share. What differs between sockets (how a client frame is read, what the actor's messages
//! become, how the socket says goodbye) is the socket's [`TextSocket`]. However the loop ends,
//! it deregisters: the socket's own [`TextSocket::leave`], the open-sockets gauge, the socket
//! registry. The scan stream has its own loop (`super::scan`: binary, two transports,
//! backpressure) on the same timing constants.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use actix_ws::{AggregatedMessage, AggregatedMessageStream, CloseCode, CloseReason, Session};
use coherency_protocol::ids::SessionId;
use coherency_protocol::{limits, Code};
use tokio::sync::watch;
use tokio::time::Instant;

use crate::auth::sockets::CLOSE_SESSION_ENDED;
use crate::auth::Principal;
use crate::state::AppState;

/// How often the server pings: the protocol's heartbeat interval, the same on every socket.
pub(crate) const HEARTBEAT: Duration = limits::HEARTBEAT_INTERVAL;
/// A client silent this long (no message, ping or pong) is closed with 1001; three missed
/// heartbeats, as on the scan stream.
pub(crate) const CLIENT_TIMEOUT: Duration = limits::HEARTBEAT_TIMEOUT;
/// Time a socket that opens with a `hello` (the board, the scan stream) allows for it.
pub(crate) const HELLO_TIMEOUT: Duration = limits::HELLO_TIMEOUT;
// How often the session behind a socket is re-checked in the database (a backstop to the
// revocation bus, which closes sockets at once but misses what is published while a node's
// subscription is reconnecting) is the `socket_recheck_secs` setting, 30 s by default.
/// Close code for "going away": the node drains, the client fell silent, the actor left.
pub(crate) const CLOSE_GOING_AWAY: u16 = 1001;

/// How a text socket ends: an optional last text frame (an `error`, `session_ended`), then
/// the close frame (none when the transport is already gone).
pub(crate) struct End {
    last: Option<String>,
    close: Option<CloseReason>,
}

impl End {
    /// Closes with `code` and a short reason.
    pub(crate) fn close(code: u16, reason: impl Into<String>) -> Self {
        Self { last: None, close: Some(CloseReason { code: CloseCode::from(code), description: Some(reason.into()) }) }
    }

    /// Closes as the client asked (its own close frame echoed), or without a reason when it
    /// just went.
    pub(crate) fn echo(reason: Option<CloseReason>) -> Self {
        Self { last: None, close: reason }
    }

    /// The transport is gone: nothing more can be written.
    pub(crate) fn gone() -> Self {
        Self { last: None, close: None }
    }

    /// Sends `text` just before the close.
    pub(crate) fn after(mut self, text: String) -> Self {
        self.last = Some(text);
        self
    }
}

/// One step of the loop: `Err` ends the socket.
pub(crate) type Step = Result<(), End>;

/// What a text socket does with its traffic; the loop around it is [`spawn`]'s.
pub(crate) trait TextSocket {
    /// Label for the open-sockets gauge.
    const KIND: &'static str;
    /// What the owning actor sends this socket.
    type Out;

    /// A first frame, sent when the socket opens.
    fn greeting(&self) -> Option<String> {
        None
    }

    /// Whether the socket is past its opening handshake. Until it is, there is no heartbeat
    /// and no re-check, and the handshake must complete within [`HELLO_TIMEOUT`]; both timers
    /// start when it does.
    fn is_open(&self) -> bool {
        true
    }

    /// Whether a client that keeps answering on this socket is at work, so that its session
    /// must not go idle while the socket is open (a call in a consult: the media flows
    /// elsewhere, and the page may make no request for the whole call). Listening sockets
    /// (the event socket, the board) say no: an unattended tab still times out.
    fn keeps_session_alive(&self) -> bool {
        false
    }

    /// The handshake did not complete in time.
    fn late(&mut self) -> End {
        End::close(1008, "no hello in time")
    }

    /// The next message of the owning actor; `None` when the actor let the socket go. Must be
    /// cancel-safe (it is raced in the `select!`); pending while there is no actor yet.
    async fn outbound(&mut self) -> Option<Self::Out>;

    /// Writes one message of the actor (or handles its end).
    async fn forward(&mut self, session: &mut Session, out: Option<Self::Out>) -> Step;

    /// A client's text message: decode, forward to the actor, answer a refusal.
    async fn text(&mut self, session: &mut Session, text: &str) -> Step;

    /// A client's binary message: ignored unless the socket refuses them.
    fn binary(&mut self) -> Step {
        Ok(())
    }

    /// A broken or oversized websocket message.
    fn broken(&mut self) -> End {
        End::close(1009, "frame too large")
    }

    /// The client closed (`Some` with its close frame) or the transport ended.
    fn closed(&mut self, reason: Option<CloseReason>) -> End {
        End::echo(reason)
    }

    /// The heartbeat; `false` when the transport is gone. A websocket ping unless the socket
    /// carries its own.
    async fn ping(&mut self, session: &mut Session) -> bool {
        session.ping(b"").await.is_ok()
    }

    /// The session behind the socket ended (`code` says how: revoked, expired).
    fn session_ended(&mut self, code: Code) -> End;

    /// Whatever else the socket re-checks with the session (the board: the viewer's scope).
    async fn recheck(&mut self) -> Step {
        Ok(())
    }

    /// Deregisters from the owning actor. Runs once, however the socket ended.
    async fn leave(&mut self);
}

/// Registers the socket (so a revocation reaches it from now on) and runs its loop on the
/// current arbiter until it ends.
pub(crate) fn spawn<S: TextSocket + 'static>(
    state: Arc<AppState>,
    who: &Principal,
    mut session: Session,
    mut messages: AggregatedMessageStream,
    mut socket: S,
) {
    let mut guard = state.sockets.register(who.user_id, who.session_id);
    let mut shutdown = state.lifecycle.subscribe();
    let session_id = who.session_id;
    let gauge = state.metrics.websockets_open.with_label_values(&[S::KIND]);
    gauge.inc();
    actix_web::rt::spawn(async move {
        let end =
            match run(&state, session_id, &mut session, &mut messages, &mut socket, &mut guard.closed, &mut shutdown)
                .await
            {
                Ok(never) => match never {},
                Err(end) => end,
            };
        socket.leave().await;
        if let Some(text) = end.last {
            let _ = session.text(text).await;
        }
        let _ = session.close(end.close).await;
        gauge.dec();
        drop(guard);
    });
}

async fn run<S: TextSocket>(
    state: &AppState,
    session_id: SessionId,
    session: &mut Session,
    messages: &mut AggregatedMessageStream,
    socket: &mut S,
    revoked: &mut watch::Receiver<Option<u16>>,
    shutdown: &mut watch::Receiver<bool>,
) -> Result<Infallible, End> {
    if let Some(text) = socket.greeting() {
        if session.text(text).await.is_err() {
            return Err(End::gone());
        }
    }
    let mut last_heard = Instant::now();
    let hello_by = last_heard + HELLO_TIMEOUT;
    // An open socket pings at once (a client sees the heartbeat from the start); a socket in
    // its handshake starts both timers when the handshake completes.
    let mut beat = tokio::time::interval(HEARTBEAT);
    let mut recheck = tokio::time::interval(Duration::from_secs(state.config.socket_recheck_secs));
    // The client was heard since the last re-check.
    let mut heard = false;
    recheck.reset();
    let mut open = socket.is_open();
    loop {
        tokio::select! {
            out = socket.outbound() => socket.forward(session, out).await?,
            m = messages.recv() => {
                last_heard = Instant::now();
                heard = true;
                match m {
                    Some(Ok(AggregatedMessage::Text(t))) => socket.text(session, &t).await?,
                    Some(Ok(AggregatedMessage::Binary(_))) => socket.binary()?,
                    Some(Ok(AggregatedMessage::Ping(b))) => {
                        if session.pong(&b).await.is_err() {
                            return Err(End::gone());
                        }
                    }
                    Some(Ok(AggregatedMessage::Pong(_))) => {}
                    Some(Ok(AggregatedMessage::Close(r))) => return Err(socket.closed(r)),
                    Some(Err(_)) => return Err(socket.broken()),
                    None => return Err(socket.closed(None)),
                }
            }
            _ = tokio::time::sleep_until(hello_by), if !open => return Err(socket.late()),
            _ = beat.tick(), if open => {
                if last_heard.elapsed() > CLIENT_TIMEOUT {
                    return Err(End::close(CLOSE_GOING_AWAY, "heartbeat timeout"));
                }
                if !socket.ping(session).await {
                    return Err(End::gone());
                }
            }
            _ = recheck.tick(), if open => {
                let active = std::mem::take(&mut heard) && socket.keeps_session_alive();
                if let Err(e) = crate::auth::session_principal(state, session_id, active).await {
                    // A database hiccup is not a reason to drop the client; a dead session is.
                    if matches!(e.code, Code::TokenRevoked | Code::TokenExpired | Code::Unauthenticated) {
                        return Err(socket.session_ended(e.code));
                    }
                }
                socket.recheck().await?;
            }
            _ = revoked.changed() => return Err(socket.session_ended(Code::TokenRevoked)),
            _ = shutdown.changed() => return Err(End::close(CLOSE_GOING_AWAY, "server going away")),
        }
        if !open && socket.is_open() {
            open = true;
            beat.reset();
            recheck.reset();
        }
    }
}

/// The close every socket sends when its session ends.
pub(crate) fn session_ended() -> End {
    End::close(CLOSE_SESSION_ENDED, "session ended")
}
