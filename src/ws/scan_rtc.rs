//! `GET /v1/scans/{id}/rtc`: the scan stream over a WebRTC data channel
//! (`docs/protocol.md`, "WebRTC data channel transport").
//!
//! The socket itself is only signalling (JSON text): the same checks (and the same claim of
//! the scan's lease) as the websocket stream run before the upgrade, the server sends
//! `welcome` with its ICE servers, the phone sends one SDP offer carrying a data channel
//! labelled `scan`, the server answers, and both trickle candidates. Each such socket gets
//! its own peer connection (webrtc-rs 0.17, data channels detached so that this module reads
//! them itself). Once the channel opens, the same pump as the websocket's
//! (`super::scan::run_pump`) drives it: same `CaptureSession`, same v1 messages, acks,
//! resume, limits and error codes. Only the framing differs: every v1 message travels in
//! fragments (`coherency_protocol::datachannel`), and the close code goes in a `CLOSE`
//! fragment — and, while the signalling socket is still open, as its websocket close code
//! too.
//!
//! Backpressure: the channel's reader hands one whole message at a time to the pump; while
//! the pump holds a frame back (the session is congested) the reader stops reading, the SCTP
//! receive window fills and the phone's `bufferedAmount` grows — the data-channel twin of TCP
//! pushing back on the websocket.

use std::sync::Arc;
use std::time::Duration;

use actix_web::{web, HttpRequest, HttpResponse};
use actix_ws::{CloseCode, CloseReason, Message, Session};
use bytes::Bytes;
use coherency_actors::room::sfu::{is_loopback_candidate, restrict_to_loopback, rtc_ice_servers};
use coherency_protocol::consult::{IceCandidate, MAX_SIGNAL_FRAME};
use coherency_protocol::datachannel::{self as dcp, Assembled, Reassembler, SignalIn, SignalOut};
use coherency_protocol::ids::ScanId;
use coherency_protocol::scan::close;
use coherency_protocol::Code;
use futures_util::StreamExt;
use tokio::sync::mpsc;
use tokio::time::Instant;
use webrtc::api::media_engine::MediaEngine;
use webrtc::api::setting_engine::SettingEngine;
use webrtc::api::APIBuilder;
use webrtc::data::data_channel::DataChannel;
use webrtc::data_channel::RTCDataChannel;
use webrtc::ice_transport::ice_candidate::{RTCIceCandidate, RTCIceCandidateInit};
use webrtc::peer_connection::configuration::RTCConfiguration;
use webrtc::peer_connection::peer_connection_state::RTCPeerConnectionState;
use webrtc::peer_connection::sdp::session_description::RTCSessionDescription;
use webrtc::peer_connection::RTCPeerConnection;

// The signalling socket keeps the heartbeat of every socket; a silent one is closed (an open
// data channel lives on).
use super::pump::{CLIENT_TIMEOUT, HEARTBEAT};
use super::scan::{Wire, WireIn};
use crate::audit::AuditEvent;
use crate::auth::{self, Principal};
use crate::error::ApiError;
use crate::state::AppState;

/// How long the phone has, from the upgrade, to get its data channel open.
const SETUP_TIMEOUT: Duration = Duration::from_secs(20);
/// The channel reader's buffer: Chromium's largest `max-message-size`, so that a message
/// over [`dcp::MAX_DC_MESSAGE_BYTES`] is answered with `frame_too_large` rather than
/// breaking the SCTP stream.
const READ_BUFFER: usize = 256 * 1024;
/// How long a closing pump waits for its last messages (the `error`, the `CLOSE`) to leave.
const FLUSH_GRACE: Duration = Duration::from_secs(1);

/// Opens a scan's data-channel signalling socket.
#[utoipa::path(get, path = "/v1/scans/{id}/rtc", tag = "scans", security(("bearer" = ["scans:create"])),
    params(("id" = Uuid, Path, description = "scan id"),
           ("ticket" = Option<String>, Query, description = "single-use ticket from POST /v1/auth/ws-ticket (browsers)")),
    responses((status = 101, description = "websocket (JSON signalling for a WebRTC data channel); see docs/protocol.md"),
              (status = 401, description = "unauthenticated, token_expired, token_revoked"),
              (status = 403, description = "forbidden, origin_not_allowed, consent_required, mfa_required"),
              (status = 404, description = "not_found: no such scan visible to the caller"),
              (status = 409, description = "scan_not_streamable: failed or cancelled"),
              (status = 503, description = "unavailable: draining, or another server still holds the scan")))]
#[tracing::instrument(skip_all, fields(scan_id = tracing::field::Empty))]
pub async fn signal(
    state: web::Data<AppState>,
    req: HttpRequest,
    body: web::Payload,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let (who, scan_id) = super::scan::authorize_stream(&state, &req, &path).await?;
    let (response, session, messages) =
        actix_ws::handle(&req, body).map_err(|_| ApiError::new(Code::BadRequest, "expected a websocket upgrade"))?;
    crate::cluster::scans::acquire(&state.cluster, scan_id).await?;
    auth::audit(&state, &req, Some(&who), AuditEvent::new("scan.stream", "success").target("scan", scan_id.as_uuid()))
        .await?;
    let messages = messages.max_frame_size(MAX_SIGNAL_FRAME);
    actix_web::rt::spawn(signalling(state.into_inner(), who, scan_id, session, messages));
    Ok(response)
}

/// What the peer connection's callbacks tell the signalling task.
enum PeerEvent {
    Candidate(IceCandidate),
    Channel(Arc<DataChannel>),
    Failed,
}

fn json(s: &SignalOut) -> String {
    serde_json::to_string(s).unwrap_or_default()
}

fn error(code: Code, message: &str) -> String {
    json(&SignalOut::Error { code: code.as_str().into(), message: message.into() })
}

/// A peer connection for one scan connection: data channels only, detached.
async fn new_peer(
    state: &AppState,
    who: &Principal,
    events: mpsc::UnboundedSender<PeerEvent>,
) -> Result<Arc<RTCPeerConnection>, webrtc::Error> {
    let mut setting = SettingEngine::default();
    setting.detach_data_channels();
    if state.config.webrtc_loopback_only {
        restrict_to_loopback(&mut setting);
    }
    let api = APIBuilder::new().with_media_engine(MediaEngine::default()).with_setting_engine(setting).build();
    let ice_servers = rtc_ice_servers(crate::consults::ice_servers_for(&state.config, who.user_id, state.clock.now()));
    let pc = Arc::new(api.new_peer_connection(RTCConfiguration { ice_servers, ..Default::default() }).await?);
    let tx = events.clone();
    pc.on_ice_candidate(Box::new(move |c: Option<RTCIceCandidate>| {
        if let Some(init) = c.and_then(|c| c.to_json().ok()) {
            let _ = tx.send(PeerEvent::Candidate(IceCandidate {
                candidate: init.candidate,
                sdp_mid: init.sdp_mid,
                sdp_mline_index: init.sdp_mline_index,
                username_fragment: init.username_fragment,
            }));
        }
        Box::pin(async {})
    }));
    let tx = events.clone();
    pc.on_peer_connection_state_change(Box::new(move |s: RTCPeerConnectionState| {
        if matches!(s, RTCPeerConnectionState::Failed) {
            let _ = tx.send(PeerEvent::Failed);
        }
        Box::pin(async {})
    }));
    pc.on_data_channel(Box::new(move |dc: Arc<RTCDataChannel>| {
        let tx = events.clone();
        Box::pin(async move {
            if dc.label() != dcp::LABEL {
                let _ = dc.close().await;
                return;
            }
            let dc2 = dc.clone();
            dc.on_open(Box::new(move || {
                Box::pin(async move {
                    match dc2.detach().await {
                        Ok(raw) => {
                            let _ = tx.send(PeerEvent::Channel(raw));
                        }
                        Err(e) => tracing::warn!(error = %e, "cannot detach the scan data channel"),
                    }
                })
            }));
        })
    }));
    Ok(pc)
}

/// The signalling socket's life. The peer connection belongs to it until the channel opens,
/// then to the pump.
async fn signalling(
    state: Arc<AppState>,
    who: Principal,
    scan_id: ScanId,
    mut session: Session,
    mut messages: actix_ws::MessageStream,
) {
    let (tx, mut events) = mpsc::unbounded_channel();
    let pc = match new_peer(&state, &who, tx).await {
        Ok(pc) => pc,
        Err(e) => {
            tracing::error!(error = %e, "cannot create a peer connection for a scan");
            let _ = session.text(error(Code::Internal, "cannot create a peer connection")).await;
            let _ = session.close(Some(CloseReason { code: CloseCode::Error, description: None })).await;
            return;
        }
    };
    let ice_servers = crate::consults::ice_servers_for(&state.config, who.user_id, state.clock.now());
    if session.text(json(&SignalOut::Welcome { ice_servers })).await.is_err() {
        let _ = pc.close().await;
        return;
    }
    let loopback_only = state.config.webrtc_loopback_only;
    let mut offered = false;
    let mut pending: Vec<RTCIceCandidateInit> = Vec::new();
    let mut pump: Option<tokio::sync::oneshot::Receiver<u16>> = None;
    let setup_deadline = Instant::now() + SETUP_TIMEOUT;
    let mut last_heard = Instant::now();
    let mut events_open = true;
    let mut beat = tokio::time::interval(HEARTBEAT);
    let reason: Option<CloseReason> = loop {
        tokio::select! {
            msg = messages.next() => match msg {
                Some(Ok(Message::Text(t))) => {
                    last_heard = Instant::now();
                    match super::parse_text::<SignalIn>(&t, "not a signalling message") {
                        Ok(SignalIn::Ping) => {
                            if session.text(json(&SignalOut::Pong)).await.is_err() { break None; }
                        }
                        Ok(SignalIn::Offer { sdp }) => {
                            if offered {
                                let _ = session.text(error(Code::MalformedMessage, "one offer per signalling socket; open a new socket to reconnect")).await;
                                continue;
                            }
                            offered = true;
                            match answer(&pc, sdp, &mut pending).await {
                                Ok(sdp) => {
                                    if session.text(json(&SignalOut::Answer { sdp })).await.is_err() { break None; }
                                }
                                Err(e) => {
                                    tracing::debug!(error = %e, "scan offer refused");
                                    let _ = session.text(error(Code::MalformedMessage, "the offer was refused")).await;
                                    break Some(CloseReason { code: CloseCode::Policy, description: Some("bad offer".into()) });
                                }
                            }
                        }
                        Ok(SignalIn::Ice { candidate }) => {
                            // Loopback-only: never send connectivity checks to any other address.
                            if loopback_only && !is_loopback_candidate(&candidate.candidate) {
                                continue;
                            }
                            let init = RTCIceCandidateInit {
                                candidate: candidate.candidate,
                                sdp_mid: candidate.sdp_mid,
                                sdp_mline_index: candidate.sdp_mline_index,
                                username_fragment: candidate.username_fragment,
                            };
                            if pc.remote_description().await.is_some() {
                                let _ = pc.add_ice_candidate(init).await;
                            } else if pending.len() < 64 {
                                pending.push(init);
                            }
                        }
                        Err(r) => {
                            let _ = session.text(error(r.code, &r.message)).await;
                        }
                    }
                }
                Some(Ok(Message::Ping(b))) => { last_heard = Instant::now(); let _ = session.pong(&b).await; }
                Some(Ok(Message::Close(_))) | None => break None,
                Some(Ok(Message::Binary(_))) => {
                    let _ = session.text(error(Code::MalformedMessage, "signalling is JSON text")).await;
                }
                Some(Ok(_)) => last_heard = Instant::now(),
                Some(Err(_)) => break Some(CloseReason { code: CloseCode::Size, description: Some("frame too large".into()) }),
            },
            ev = events.recv(), if events_open => match ev {
                Some(PeerEvent::Candidate(candidate)) => {
                    if session.text(json(&SignalOut::Ice { candidate })).await.is_err() { break None; }
                }
                Some(PeerEvent::Channel(dc)) => {
                    if pump.is_some() {
                        // One stream per peer connection; a second channel is refused.
                        let _ = dc.close().await;
                        continue;
                    }
                    let (done_tx, done_rx) = tokio::sync::oneshot::channel();
                    let wire = DcWire::new(pc.clone(), dc);
                    let (state, who) = (state.clone(), who.clone());
                    actix_web::rt::spawn(async move {
                        let code = super::scan::run_pump(state, who, scan_id, wire).await;
                        let _ = done_tx.send(code);
                    });
                    pump = Some(done_rx);
                }
                Some(PeerEvent::Failed) if pump.is_none() => {
                    let _ = session.text(error(Code::Unavailable, "the peer connection failed")).await;
                    break Some(CloseReason { code: CloseCode::Again, description: Some("peer connection failed".into()) });
                }
                Some(PeerEvent::Failed) => {}
                None => events_open = false,
            },
            code = async { pump.as_mut().expect("guarded by the branch condition").await }, if pump.is_some() => {
                let code = code.unwrap_or(close::GOING_AWAY);
                break Some(CloseReason { code: CloseCode::from(code), description: Some("the stream ended".into()) });
            }
            _ = beat.tick() => {
                if pump.is_none() && Instant::now() > setup_deadline {
                    let _ = session.text(error(Code::Unavailable, "the data channel did not open in time")).await;
                    break Some(CloseReason { code: CloseCode::Again, description: Some("setup timeout".into()) });
                }
                if last_heard.elapsed() > CLIENT_TIMEOUT {
                    break Some(CloseReason { code: CloseCode::Away, description: Some("heartbeat timeout".into()) });
                }
                if session.ping(b"").await.is_err() { break None; }
            }
        }
    };
    if pump.is_none() {
        let _ = pc.close().await;
    }
    let _ = session.close(reason).await;
}

/// Applies the phone's offer and returns the server's answer.
async fn answer(
    pc: &RTCPeerConnection,
    sdp: String,
    pending: &mut Vec<RTCIceCandidateInit>,
) -> Result<String, webrtc::Error> {
    pc.set_remote_description(RTCSessionDescription::offer(sdp)?).await?;
    for c in pending.drain(..) {
        let _ = pc.add_ice_candidate(c).await;
    }
    let answer = pc.create_answer(None).await?;
    pc.set_local_description(answer.clone()).await?;
    Ok(pc.local_description().await.map(|d| d.sdp).unwrap_or(answer.sdp))
}

/// The data-channel transport of the pump: a reader task reassembles fragments into whole
/// messages and hands them over one at a time; sends are fragmented.
struct DcWire {
    pc: Arc<RTCPeerConnection>,
    dc: Arc<DataChannel>,
    incoming: mpsc::Receiver<WireIn>,
    reader: tokio::task::JoinHandle<()>,
}

impl DcWire {
    fn new(pc: Arc<RTCPeerConnection>, dc: Arc<DataChannel>) -> Self {
        // Capacity 1: the reader stays at most one message ahead of the pump.
        let (tx, incoming) = mpsc::channel(1);
        let reader = tokio::spawn(read_channel(dc.clone(), tx));
        Self { pc, dc, incoming, reader }
    }

    async fn write(&self, message: &[u8]) -> bool {
        for part in dcp::fragment(message) {
            if self.dc.write_data_channel(&Bytes::from(part), false).await.is_err() {
                return false;
            }
        }
        true
    }
}

async fn read_channel(dc: Arc<DataChannel>, tx: mpsc::Sender<WireIn>) {
    let mut buf = vec![0u8; READ_BUFFER];
    let mut reassembler = Reassembler::default();
    loop {
        let item = match dc.read_data_channel(&mut buf).await {
            Ok((0, _)) => WireIn::Closed,
            Ok((_, true)) => WireIn::Text,
            Ok((n, false)) => match reassembler.push(&buf[..n]) {
                Ok(None) => continue,
                Ok(Some(Assembled::Message(m))) => WireIn::Binary(Bytes::from(m)),
                Ok(Some(Assembled::Close(..))) => WireIn::Closed,
                Err(e) => WireIn::Broken(e.code(), e.to_string()),
            },
            Err(webrtc::data::Error::Sctp(webrtc::sctp::Error::ErrShortBuffer { .. })) => WireIn::Broken(
                Code::FrameTooLarge,
                format!("a data channel message exceeds {} bytes; fragment it", dcp::MAX_DC_MESSAGE_BYTES),
            ),
            Err(_) => WireIn::Closed,
        };
        let last = !matches!(item, WireIn::Binary(_));
        if tx.send(item).await.is_err() || last {
            return;
        }
    }
}

impl Wire for DcWire {
    const KIND: &'static str = "scan_datachannel";

    async fn recv(&mut self) -> WireIn {
        self.incoming.recv().await.unwrap_or(WireIn::Closed)
    }

    async fn send(&mut self, message: Vec<u8>) -> bool {
        // A phone that does not read: its messages pile up here; drop it (it resumes).
        if self.dc.buffered_amount() > dcp::SERVER_MAX_BUFFERED {
            return false;
        }
        self.write(&message).await
    }

    async fn close(self, code: u16, reason: &'static str) {
        let _ = self.dc.write_data_channel(&Bytes::from(dcp::close_message(code, reason)), false).await;
        // Let the last messages leave before the association goes.
        let deadline = Instant::now() + FLUSH_GRACE;
        while self.dc.buffered_amount() > 0 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        self.reader.abort();
        let _ = self.dc.close().await;
        let _ = self.pc.close().await;
    }
}
