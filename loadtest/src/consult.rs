//! The `consult` scenario: two-person video rooms through the server's SFU. For each room,
//! through the public API: a new patient, put on the clinician's care team by an
//! administrator, an ad hoc consult opened by the clinician, the patient's check-in, the
//! patient's signalling socket in the waiting room, the clinician's admission, the
//! clinician's socket. Then both join with a webrtc-rs peer (loopback candidates only,
//! multicast DNS off — as `tests/api/sfu.rs`) and each publishes a synthetic video track:
//! `--video-fps` frames a second, each of `--video-kbps`/fps bits split into RTP packets of
//! at most 1200 payload bytes. Every payload carries a phase, a sequence number and the send
//! time, so the other side counts what it received (loss, duplicates) and how long each
//! packet took through the SFU (both peers live in this process: one clock).
//!
//! With several `--target`s, room `i`'s patient (calls and socket) uses node `i` and its
//! clinician node `i + 1`, round-robin, so every room spans two nodes and the relay of
//! sockets and host actions to the node running the room is part of what is measured.
//!
//! A room is set up when media flows both ways. When every room is set up (or failed), the
//! clock starts: for `--duration` the packets are marked "measured", and each participant
//! pings on its signalling socket every `--ping-every` (the room actor answers `pong`, in
//! order, so ping → pong is the signalling round trip). Then the senders stop, the
//! receivers get two seconds to drain, and both participants leave; the consults are ended.

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{anyhow, Context};
use bytes::{BufMut, Bytes, BytesMut};
use coherency_protocol::consult::{ClientSignal, IceCandidate, ServerSignal};
use futures_util::{SinkExt, StreamExt};
use serde_json::json;
use tokio::sync::{mpsc, Notify};
use tokio::task::JoinHandle;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;
use webrtc::api::interceptor_registry::register_default_interceptors;
use webrtc::api::media_engine::{MediaEngine, MIME_TYPE_VP8};
use webrtc::api::setting_engine::SettingEngine;
use webrtc::api::APIBuilder;
use webrtc::ice_transport::ice_candidate::{RTCIceCandidate, RTCIceCandidateInit};
use webrtc::interceptor::registry::Registry;
use webrtc::peer_connection::configuration::RTCConfiguration;
use webrtc::peer_connection::sdp::session_description::RTCSessionDescription;
use webrtc::peer_connection::RTCPeerConnection;
use webrtc::rtp_transceiver::rtp_codec::RTCRtpCodecCapability;
use webrtc::track::track_local::track_local_static_rtp::TrackLocalStaticRTP;
use webrtc::track::track_local::{TrackLocal, TrackLocalWriter};

use crate::api::{self, SetupError, Staff};
use crate::stats::{Errors, Latencies, Report};
use crate::ConsultArgs;

/// Rooms set up at once.
const SETUP_CONCURRENCY: usize = 4;
/// A frame the server must send within this long during setup (welcome, admitted).
const FRAME_WAIT: Duration = Duration::from_secs(15);
/// From the offers to media flowing both ways.
const MEDIA_WAIT: Duration = Duration::from_secs(30);
/// After the senders stop, how long packets and pongs in flight may still arrive.
const DRAIN: Duration = Duration::from_secs(2);
/// Largest RTP payload (fits a 1500-byte MTU with the RTP, SRTP, UDP and IP headers).
pub const MAX_PAYLOAD: usize = 1200;
/// Highest measured sequence number a receiver tracks (bounds its memory).
const MAX_SEQ: u64 = 50_000_000;

/// Payload header: magic, phase, sequence number, send time (µs since the run's epoch).
const MAGIC: &[u8; 4] = b"CLT1";
const HEADER: usize = 4 + 1 + 8 + 8;

/// Phases of the run, stamped in every packet.
const WARMUP: u8 = 0;
const MEASURE: u8 = 1;
const STOP: u8 = 2;

type Ws = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Usage checks before anything runs.
pub fn check(args: &ConsultArgs) -> Result<(), String> {
    check_media(args.rooms, args.video_kbps, args.video_fps)?;
    if args.ping_every.0 < Duration::from_millis(10) {
        return Err("--ping-every must be at least 10ms".into());
    }
    Ok(())
}

/// Room count, bitrate and frame rate within what one run can sensibly drive.
pub fn check_media(rooms: usize, kbps: u32, fps: f64) -> Result<(), String> {
    if !(1..=1000).contains(&rooms) {
        return Err("--rooms must be 1..=1000".into());
    }
    if !(16..=20_000).contains(&kbps) {
        return Err("--video-kbps must be 16..=20000".into());
    }
    if !(1.0..=120.0).contains(&fps) {
        return Err("--video-fps must be 1..=120".into());
    }
    Ok(())
}

/// How a video frame is cut into packets: `packets` of `payload` bytes each.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Packetizer {
    pub packets: usize,
    pub payload: usize,
}

impl Packetizer {
    /// `kbps` kbit/s at `fps` frames/s, in packets of at most [`MAX_PAYLOAD`] bytes.
    pub fn new(kbps: u32, fps: f64) -> Self {
        let frame = (f64::from(kbps) * 1000.0 / 8.0 / fps).ceil().max(1.0) as usize;
        let packets = frame.div_ceil(MAX_PAYLOAD).max(1);
        let payload = frame.div_ceil(packets).clamp(HEADER, MAX_PAYLOAD);
        Self { packets, payload }
    }

    /// Payload bits per second this sends at `fps`.
    pub fn kbps(&self, fps: f64) -> f64 {
        (self.packets * self.payload * 8) as f64 * fps / 1000.0
    }
}

/// What a packet's payload says about itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    pub phase: u8,
    pub seq: u64,
    pub sent_us: u64,
}

/// A payload of `size` bytes (at least the header) carrying `stamp`.
pub fn encode(stamp: Stamp, size: usize) -> Bytes {
    let mut b = BytesMut::with_capacity(size.max(HEADER));
    b.put_slice(MAGIC);
    b.put_u8(stamp.phase);
    b.put_u64(stamp.seq);
    b.put_u64(stamp.sent_us);
    b.resize(size.max(HEADER), 0);
    b.freeze()
}

/// The stamp of a payload this harness wrote (`None` for anything else).
pub fn decode(p: &[u8]) -> Option<Stamp> {
    if p.len() < HEADER || &p[..4] != MAGIC {
        return None;
    }
    let u64_at = |i: usize| p.get(i..i + 8).and_then(|s| s.try_into().ok()).map(u64::from_be_bytes);
    Some(Stamp { phase: p[4], seq: u64_at(5)?, sent_us: u64_at(13)? })
}

/// Which measured sequence numbers a receiver has seen (retransmissions arrive twice).
#[derive(Debug, Default)]
pub struct SeqSet {
    bits: Vec<u64>,
    unique: u64,
}

impl SeqSet {
    /// Records `seq`; false when it was already seen (or is out of range).
    pub fn insert(&mut self, seq: u64) -> bool {
        if seq >= MAX_SEQ {
            return false;
        }
        let (w, b) = ((seq / 64) as usize, seq % 64);
        if self.bits.len() <= w {
            self.bits.resize(w + 1, 0);
        }
        let new = self.bits[w] & (1 << b) == 0;
        self.bits[w] |= 1 << b;
        self.unique += u64::from(new);
        new
    }

    /// Distinct sequence numbers seen.
    pub fn unique(&self) -> u64 {
        self.unique
    }
}

/// Lost share of `sent`, in percent (0 when nothing was sent; never negative).
pub fn loss_pct(sent: u64, received: u64) -> f64 {
    if sent == 0 {
        return 0.0;
    }
    let lost = sent.saturating_sub(received) as f64;
    (lost / sent as f64 * 100_000.0).round() / 1000.0
}

/// What one participant received of the other's measured packets.
#[derive(Default)]
struct Rx {
    seen: SeqSet,
    duplicates: u64,
    latency: Latencies,
}

/// What one participant's signalling socket measured.
#[derive(Default)]
struct Sig {
    rtt: Latencies,
    offer_answer: Latencies,
    pings: VecDeque<Instant>,
    offer_sent: Option<Instant>,
    errors: Errors,
    leaving: bool,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Shared by every room: the phase and the clock stamps are read against.
struct Run {
    phase: AtomicU8,
    epoch: std::time::Instant,
    pack: Packetizer,
    fps: f64,
    ping_every: Duration,
}

impl Run {
    fn now_us(&self) -> u64 {
        self.epoch.elapsed().as_micros() as u64
    }
}

/// One participant's connection: signalling pump, peer connection, sender, receiver.
struct Participant {
    pc: Arc<RTCPeerConnection>,
    out: mpsc::UnboundedSender<ClientSignal>,
    sent: Arc<AtomicU64>,
    rx: Arc<Mutex<Rx>>,
    sig: Arc<Mutex<Sig>>,
    got_media: Arc<Notify>,
    tasks: Vec<JoinHandle<()>>,
}

/// A room with media flowing both ways.
struct Room {
    consult: String,
    /// The node the clinician uses for this room (it ends the consult there).
    host_target: String,
    host: Participant,
    patient: Participant,
}

fn setup_err(code: &str, error: anyhow::Error) -> SetupError {
    SetupError { code: code.into(), error }
}

fn signal_url(target: &str, consult: &str) -> String {
    let base = target.trim_end_matches('/');
    let base = base.replacen("https://", "wss://", 1).replacen("http://", "ws://", 1);
    format!("{base}/v1/consults/{consult}/signal")
}

/// Opens a signalling socket and reads its `welcome`.
async fn open_signal(target: &str, consult: &str, token: &str) -> Result<Ws, SetupError> {
    let mut req = signal_url(target, consult).into_client_request().map_err(|e| setup_err("signal_url", e.into()))?;
    let auth = format!("Bearer {token}").parse().map_err(|_| setup_err("signal_url", anyhow!("bad token")))?;
    req.headers_mut().insert("authorization", auth);
    // No Nagle (as browsers): a ping queued behind an unacknowledged small frame would wait
    // for the peer's delayed ACK (40 ms) and show up as a signalling delay.
    let connecting = tokio_tungstenite::connect_async_with_config(req, None, true);
    let (mut ws, _) = match tokio::time::timeout(FRAME_WAIT, connecting).await {
        Err(_) => return Err(setup_err("signal_timeout_connect", anyhow!("signalling connect timed out"))),
        Ok(Err(tokio_tungstenite::tungstenite::Error::Http(r))) => {
            let status = r.status().as_u16();
            return Err(setup_err(&format!("signal_http_{status}"), anyhow!("signalling upgrade refused: {status}")));
        }
        Ok(Err(e)) => return Err(setup_err("signal_connect", e.into())),
        Ok(Ok(x)) => x,
    };
    until(&mut ws, "welcome", |s| matches!(s, ServerSignal::Welcome { .. })).await?;
    Ok(ws)
}

/// Reads frames until one `want` accepts (bounded by [`FRAME_WAIT`]).
async fn until(ws: &mut Ws, what: &str, want: impl Fn(&ServerSignal) -> bool) -> Result<ServerSignal, SetupError> {
    let deadline = Instant::now() + FRAME_WAIT;
    loop {
        let m = tokio::time::timeout_at(deadline, ws.next())
            .await
            .map_err(|_| setup_err(&format!("signal_timeout_{what}"), anyhow!("no {what} in {FRAME_WAIT:?}")))?;
        match m {
            Some(Ok(Message::Text(t))) => {
                let s: ServerSignal = serde_json::from_str(&t)
                    .map_err(|e| setup_err("signal_protocol", anyhow!("unreadable frame: {e}")))?;
                if let ServerSignal::Error { code, message } = &s {
                    return Err(setup_err(&format!("signal_{code}"), anyhow!("waiting for {what}: {message}")));
                }
                if want(&s) {
                    return Ok(s);
                }
            }
            Some(Ok(Message::Close(f))) => {
                let code = f.map_or(1005, |f| u16::from(f.code));
                return Err(setup_err(&format!("signal_close_{code}"), anyhow!("closed waiting for {what}")));
            }
            Some(Ok(_)) => {}
            Some(Err(e)) => return Err(setup_err("signal_closed", e.into())),
            None => return Err(setup_err("signal_closed", anyhow!("closed waiting for {what}"))),
        }
    }
}

/// A webrtc-rs peer connection that gathers loopback UDP4 host candidates only, mDNS off.
async fn peer() -> anyhow::Result<Arc<RTCPeerConnection>> {
    let mut media = MediaEngine::default();
    media.register_default_codecs()?;
    let registry = register_default_interceptors(Registry::new(), &mut media)?;
    let mut s = SettingEngine::default();
    coherency_protocol::rtc_loopback::restrict_to_loopback(&mut s);
    let api =
        APIBuilder::new().with_media_engine(media).with_interceptor_registry(registry).with_setting_engine(s).build();
    Ok(Arc::new(api.new_peer_connection(RTCConfiguration::default()).await?))
}

fn candidate_init(c: IceCandidate) -> RTCIceCandidateInit {
    RTCIceCandidateInit {
        candidate: c.candidate,
        sdp_mid: c.sdp_mid,
        sdp_mline_index: c.sdp_mline_index,
        username_fragment: c.username_fragment,
    }
}

async fn send(ws: &mut Ws, m: &ClientSignal) -> bool {
    let text = serde_json::to_string(m).unwrap_or_default();
    ws.send(Message::text(text)).await.is_ok()
}

/// The signalling socket once media starts: writes what the participant sends, answers the
/// server's offers, applies its answers and candidates, times pongs and the offer → answer.
async fn pump(
    mut ws: Ws,
    pc: Arc<RTCPeerConnection>,
    mut out: mpsc::UnboundedReceiver<ClientSignal>,
    sig: Arc<Mutex<Sig>>,
) {
    let mut pending: Vec<RTCIceCandidateInit> = Vec::new();
    loop {
        tokio::select! {
            m = out.recv() => {
                let Some(m) = m else { break };
                match &m {
                    ClientSignal::Ping => lock(&sig).pings.push_back(Instant::now()),
                    ClientSignal::Offer { .. } => lock(&sig).offer_sent = Some(Instant::now()),
                    ClientSignal::Leave => lock(&sig).leaving = true,
                    _ => {}
                }
                if !send(&mut ws, &m).await {
                    lock(&sig).errors.add("signal_send");
                    break;
                }
            }
            m = ws.next() => {
                let t = match m {
                    Some(Ok(Message::Text(t))) => t,
                    Some(Ok(Message::Close(f))) => {
                        let code = f.map_or(1005, |f| u16::from(f.code));
                        let mut s = lock(&sig);
                        if !s.leaving || code != 1000 {
                            s.errors.add(format!("signal_close_{code}"));
                        }
                        break;
                    }
                    Some(Ok(_)) => continue,
                    Some(Err(_)) | None => {
                        let mut s = lock(&sig);
                        if !s.leaving {
                            s.errors.add("signal_closed");
                        }
                        break;
                    }
                };
                let Ok(s) = serde_json::from_str::<ServerSignal>(&t) else {
                    lock(&sig).errors.add("signal_protocol");
                    continue;
                };
                match s {
                    ServerSignal::Pong => {
                        let mut s = lock(&sig);
                        match s.pings.pop_front() {
                            Some(at) => s.rtt.record(at.elapsed()),
                            None => s.errors.add("signal_unexpected_pong"),
                        }
                    }
                    ServerSignal::Answer { sdp } => {
                        let offered = lock(&sig).offer_sent.take();
                        if let Some(at) = offered {
                            lock(&sig).offer_answer.record(at.elapsed());
                        }
                        let res = match RTCSessionDescription::answer(sdp) {
                            Ok(d) => pc.set_remote_description(d).await,
                            Err(e) => Err(e),
                        };
                        if res.is_err() {
                            lock(&sig).errors.add("sdp_answer");
                        }
                        for c in pending.drain(..) {
                            let _ = pc.add_ice_candidate(c).await;
                        }
                    }
                    ServerSignal::Offer { sdp } => {
                        let answered = async {
                            pc.set_remote_description(RTCSessionDescription::offer(sdp)?).await?;
                            for c in pending.drain(..) {
                                let _ = pc.add_ice_candidate(c).await;
                            }
                            let a = pc.create_answer(None).await?;
                            pc.set_local_description(a.clone()).await?;
                            Ok::<_, webrtc::Error>(pc.local_description().await.map_or(a.sdp, |d| d.sdp))
                        }
                        .await;
                        match answered {
                            Ok(sdp) => {
                                if !send(&mut ws, &ClientSignal::Answer { sdp }).await {
                                    lock(&sig).errors.add("signal_send");
                                    break;
                                }
                            }
                            Err(_) => lock(&sig).errors.add("sdp_offer"),
                        }
                    }
                    ServerSignal::Ice { candidate } => {
                        let c = candidate_init(candidate);
                        if pc.remote_description().await.is_some() {
                            let _ = pc.add_ice_candidate(c).await;
                        } else {
                            pending.push(c);
                        }
                    }
                    ServerSignal::Error { code, .. } => lock(&sig).errors.add(format!("signal_{code}")),
                    ServerSignal::Ended { .. } => {
                        let mut s = lock(&sig);
                        if !s.leaving {
                            s.errors.add("room_ended");
                        }
                    }
                    ServerSignal::Removed | ServerSignal::Denied => lock(&sig).errors.add("signal_removed"),
                    _ => {}
                }
            }
        }
    }
}

/// Sends the synthetic video until the run stops: one frame per tick (a late tick is
/// skipped, not bursted), its packets back to back, measured ones counted.
async fn send_video(run: Arc<Run>, track: Arc<TrackLocalStaticRTP>, sent: Arc<AtomicU64>, seed: u16) {
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / run.fps));
    tick.set_missed_tick_behavior(MissedTickBehavior::Skip);
    let mut rtp_seq = seed;
    let mut measured = 0u64;
    for frame in 0u64.. {
        tick.tick().await;
        let phase = run.phase.load(Ordering::Acquire);
        if phase == STOP {
            break;
        }
        let timestamp = (frame as f64 * 90_000.0 / run.fps) as u32;
        for k in 0..run.pack.packets {
            let seq = if phase == MEASURE { measured } else { 0 };
            let payload = encode(Stamp { phase, seq, sent_us: run.now_us() }, run.pack.payload);
            let pkt = webrtc::rtp::packet::Packet {
                header: webrtc::rtp::header::Header {
                    version: 2,
                    payload_type: 96,
                    sequence_number: rtp_seq,
                    timestamp,
                    marker: k + 1 == run.pack.packets,
                    ..Default::default()
                },
                payload,
            };
            rtp_seq = rtp_seq.wrapping_add(1);
            // A packet the track could not take is still sent as far as the user knows:
            // it counts as lost.
            let _ = track.write_rtp(&pkt).await;
            if phase == MEASURE {
                measured += 1;
                sent.store(measured, Ordering::Release);
            }
        }
    }
}

/// Pings on the signalling socket while measuring.
async fn ping(run: Arc<Run>, out: mpsc::UnboundedSender<ClientSignal>) {
    let mut tick = tokio::time::interval(run.ping_every);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let phase = run.phase.load(Ordering::Acquire);
        if phase == STOP || (phase == MEASURE && out.send(ClientSignal::Ping).is_err()) {
            break;
        }
    }
}

/// Starts media on an admitted participant's socket: a peer connection publishing one
/// video track, the signalling pump, the sender, the pinger, and the first offer.
async fn start_media(run: &Arc<Run>, ws: Ws, name: &str, seed: u16) -> anyhow::Result<Participant> {
    let pc = peer().await?;
    let track = Arc::new(TrackLocalStaticRTP::new(
        RTCRtpCodecCapability { mime_type: MIME_TYPE_VP8.to_owned(), clock_rate: 90000, ..Default::default() },
        "video".into(),
        format!("loadtest-{name}"),
    ));
    let sender = pc.add_track(track.clone() as Arc<dyn TrackLocal + Send + Sync>).await?;
    let (out, out_rx) = mpsc::unbounded_channel();
    let sig = Arc::new(Mutex::new(Sig::default()));
    let rx = Arc::new(Mutex::new(Rx::default()));
    let got_media = Arc::new(Notify::new());
    let sent = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    // Reading RTCP drives the sender's interceptors (NACK responder, reports).
    tasks.push(tokio::spawn(async move { while sender.read_rtcp().await.is_ok() {} }));
    let out2 = out.clone();
    pc.on_ice_candidate(Box::new(move |c: Option<RTCIceCandidate>| {
        let out = out2.clone();
        Box::pin(async move {
            if let Some(Ok(init)) = c.map(|c| c.to_json()) {
                let candidate = IceCandidate {
                    candidate: init.candidate,
                    sdp_mid: init.sdp_mid,
                    sdp_mline_index: init.sdp_mline_index,
                    username_fragment: init.username_fragment,
                };
                let _ = out.send(ClientSignal::Ice { candidate });
            }
        })
    }));
    let (rx2, got2, run2) = (rx.clone(), got_media.clone(), run.clone());
    pc.on_track(Box::new(move |remote, _, _| {
        let (rx, got, run) = (rx2.clone(), got2.clone(), run2.clone());
        Box::pin(async move {
            tokio::spawn(async move {
                while let Ok((pkt, _)) = remote.read_rtp().await {
                    let Some(stamp) = decode(&pkt.payload) else { continue };
                    got.notify_one();
                    if stamp.phase != MEASURE {
                        continue;
                    }
                    let took = Duration::from_micros(run.now_us().saturating_sub(stamp.sent_us));
                    let mut rx = lock(&rx);
                    if rx.seen.insert(stamp.seq) {
                        rx.latency.record(took);
                    } else {
                        rx.duplicates += 1;
                    }
                }
            });
        })
    }));
    tasks.push(tokio::spawn(pump(ws, pc.clone(), out_rx, sig.clone())));
    let offer = pc.create_offer(None).await?;
    pc.set_local_description(offer.clone()).await?;
    let sdp = pc.local_description().await.map_or(offer.sdp, |d| d.sdp);
    out.send(ClientSignal::Offer { sdp }).map_err(|_| anyhow!("the signalling socket closed"))?;
    tasks.push(tokio::spawn(send_video(run.clone(), track, sent.clone(), seed)));
    tasks.push(tokio::spawn(ping(run.clone(), out.clone())));
    Ok(Participant { pc, out, sent, rx, sig, got_media, tasks })
}

impl Participant {
    /// Leaves (the server closes the socket) and closes the peer connection.
    async fn leave(self) -> Sig {
        let _ = self.out.send(ClientSignal::Leave);
        tokio::time::sleep(Duration::from_millis(300)).await;
        let _ = tokio::time::timeout(Duration::from_secs(5), self.pc.close()).await;
        for t in &self.tasks {
            t.abort();
        }
        std::mem::take(&mut *lock(&self.sig))
    }
}

/// Everything a room needs from the run.
struct Ctx {
    http: reqwest::Client,
    /// Every node; room `i`'s patient uses node `i`, its clinician node `i + 1` (round-robin).
    targets: Vec<String>,
    staff: Staff,
    admin: Staff,
    tag: String,
    run: Arc<Run>,
}

/// Sets up room `i`: API calls, both sockets, admission, media both ways. With several
/// nodes the patient's calls and socket go to one node and the clinician's to the next, so
/// one side's socket and actions are relayed to the node running the room.
async fn set_up_room(ctx: &Ctx, i: usize) -> Result<Room, SetupError> {
    let http = &ctx.http;
    let patient_target = api::target_for(&ctx.targets, i);
    let host_target = api::target_for(&ctx.targets, i + 1);
    let (token, patient_id) = api::patient(http, patient_target, &ctx.tag, i).await?;
    let path = format!("/v1/patients/{patient_id}/care-team");
    let team = json!({"clinician_id": ctx.staff.user_id});
    api::call(http, patient_target, &path, Some(&ctx.admin.token), &team).await?;
    let opened = json!({"patient_id": patient_id});
    let c = api::call(http, host_target, "/v1/consults", Some(&ctx.staff.token), &opened).await?;
    let consult = api::field(&c, "/id", "consult")?.to_owned();
    let check_in = format!("/v1/consults/{consult}/check-in");
    let checked = api::call(http, patient_target, &check_in, Some(&token), &json!({})).await?;
    let pid = api::field(&checked, "/participant_id", "check-in")?.to_owned();
    let mut patient_ws = open_signal(patient_target, &consult, &token).await?;
    let admit = format!("/v1/consults/{consult}/participants/{pid}/admit");
    api::call(http, host_target, &admit, Some(&ctx.staff.token), &json!({})).await?;
    until(&mut patient_ws, "admitted", |s| matches!(s, ServerSignal::Admitted)).await?;
    let host_ws = open_signal(host_target, &consult, &ctx.staff.token).await?;
    let media_err = |e: anyhow::Error| setup_err("media_setup", e);
    let seed = (i as u16).wrapping_mul(7919);
    let host = start_media(&ctx.run, host_ws, "host", seed).await.map_err(media_err)?;
    let patient = start_media(&ctx.run, patient_ws, "patient", seed ^ 0x8000).await.map_err(media_err)?;
    let room = Room { consult, host_target: host_target.to_owned(), host, patient };
    let both = async {
        room.host.got_media.notified().await;
        room.patient.got_media.notified().await;
    };
    if tokio::time::timeout(MEDIA_WAIT, both).await.is_err() {
        let states = format!(
            "host {:?}/{:?}, patient {:?}/{:?}",
            room.host.pc.connection_state(),
            room.host.pc.signaling_state(),
            room.patient.pc.connection_state(),
            room.patient.pc.signaling_state()
        );
        let consult = room.consult.clone();
        tear_down(ctx, room).await;
        return Err(setup_err(
            "media_timeout",
            anyhow!("consult {consult}: no media both ways in {MEDIA_WAIT:?} ({states})"),
        ));
    }
    Ok(room)
}

/// Both leave; the host ends the consult. Returns what their sockets measured.
async fn tear_down(ctx: &Ctx, room: Room) -> (Sig, Sig) {
    let (mut a, b) = tokio::join!(room.host.leave(), room.patient.leave());
    let path = format!("/v1/consults/{}/end", room.consult);
    if let Err(e) = api::call(&ctx.http, &room.host_target, &path, Some(&ctx.staff.token), &json!({})).await {
        // Already ended is fine.
        if e.code != "setup_http_409" {
            a.errors.add(e.code.replacen("setup_", "end_", 1));
        }
    }
    (a, b)
}

/// Per-room and overall packet counts, loss and the worst room.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct LossTally {
    pub sent: u64,
    pub received: u64,
    pub worst_room_pct: f64,
    pub rooms_over_1pct: u64,
}

impl LossTally {
    /// Adds one room's packets sent and received (both directions).
    pub fn room(&mut self, sent: u64, received: u64) {
        self.sent += sent;
        self.received += received;
        let pct = loss_pct(sent, received);
        self.worst_room_pct = self.worst_room_pct.max(pct);
        if pct >= 1.0 {
            self.rooms_over_1pct += 1;
        }
    }

    /// Overall loss, percent.
    pub fn pct(&self) -> f64 {
        loss_pct(self.sent, self.received)
    }
}

pub async fn run(args: &ConsultArgs) -> anyhow::Result<Report> {
    let common = &args.common;
    let (target, http, staff) = api::start_as_clinician(common, &args.staff).await?;
    let a = &args.admin;
    let login = (a.admin_email.as_ref(), a.admin_password.as_ref(), a.admin_totp.as_deref());
    let admin = api::sign_in(&http, &target, a.admin_token.as_deref(), login)
        .await
        .context("consult rooms need an administrator (to put each patient on the clinician's care team): --admin-email and --admin-password, or --admin-token")?
        .map_err(|e| e.error.context("admin sign-in"))?;
    let say = |m: String| {
        if !common.quiet {
            eprintln!("loadtest: {m}");
        }
    };
    let pack = Packetizer::new(args.video_kbps, args.video_fps);
    let run = Arc::new(Run {
        phase: AtomicU8::new(WARMUP),
        epoch: std::time::Instant::now(),
        pack,
        fps: args.video_fps,
        ping_every: args.ping_every.0,
    });
    let tag = api::run_tag();
    let ctx = Arc::new(Ctx { http, targets: common.target.clone(), staff, admin, tag, run: run.clone() });

    // Set the rooms up, spread over the ramp-up, a few at a time.
    say(format!(
        "setting up {} rooms on {} node(s) ({} packets × {} B per frame at {} fps = {:.0} kbit/s each way)…",
        args.rooms,
        common.target.len(),
        pack.packets,
        pack.payload,
        args.video_fps,
        pack.kbps(args.video_fps)
    ));
    let ramp = common.ramp_up.0;
    let started = Instant::now();
    let mut errors = Errors::default();
    let mut setup = Latencies::new();
    let mut rooms = Vec::with_capacity(args.rooms);
    let mut first_error = None;
    let mut setting_up = futures_util::stream::iter((0..args.rooms).map(|i| {
        let ctx = ctx.clone();
        let at = started + ramp.mul_f64(i as f64 / args.rooms as f64);
        async move {
            tokio::time::sleep_until(at).await;
            let t0 = Instant::now();
            let r = set_up_room(&ctx, i).await;
            (r, t0.elapsed())
        }
    }))
    .buffer_unordered(SETUP_CONCURRENCY);
    while let Some((r, took)) = setting_up.next().await {
        match r {
            Ok(room) => {
                setup.record(took);
                rooms.push(room);
            }
            Err(e) => {
                errors.add(e.code);
                first_error.get_or_insert(e.error);
            }
        }
    }
    drop(setting_up);
    if let Some(e) = &first_error {
        say(format!("{} of {} rooms failed to set up; first: {e:#}", args.rooms - rooms.len(), args.rooms));
    }
    if rooms.is_empty() {
        return Err(first_error.unwrap_or_else(|| anyhow!("no room could be set up")));
    }
    say(format!("{} rooms up in {:.1} s; measuring", rooms.len(), started.elapsed().as_secs_f64()));

    // Measure.
    let duration = common.duration.map_or(Duration::from_secs(10), |d| d.0);
    run.phase.store(MEASURE, Ordering::Release);
    let measuring = Instant::now();
    tokio::time::sleep(duration).await;
    run.phase.store(STOP, Ordering::Release);
    let measured = measuring.elapsed().as_secs_f64();
    tokio::time::sleep(DRAIN).await;

    // Count, then tear down.
    let mut loss = LossTally::default();
    let mut media = Latencies::new();
    let mut duplicates = 0u64;
    for room in &rooms {
        let (hs, ps) = (room.host.sent.load(Ordering::Acquire), room.patient.sent.load(Ordering::Acquire));
        let (hr, pr) = (lock(&room.host.rx), lock(&room.patient.rx));
        loss.room(hs + ps, hr.seen.unique() + pr.seen.unique());
        media.merge(&hr.latency);
        media.merge(&pr.latency);
        duplicates += hr.duplicates + pr.duplicates;
    }
    let established = rooms.len();
    let mut signalling = Latencies::new();
    let mut offer_answer = Latencies::new();
    let mut pings = 0u64;
    let downs: Vec<_> = rooms
        .into_iter()
        .map(|room| {
            let ctx = ctx.clone();
            tokio::spawn(async move { tear_down(&ctx, room).await })
        })
        .collect();
    for d in downs {
        let Ok((a, b)) = d.await else {
            errors.add("task_panicked");
            continue;
        };
        for s in [a, b] {
            signalling.merge(&s.rtt);
            offer_answer.merge(&s.offer_answer);
            pings += s.rtt.count();
            for _ in 0..s.pings.len() {
                errors.add("pong_missing");
            }
            errors.merge(&s.errors);
        }
    }

    let mut counts = BTreeMap::new();
    counts.insert("rooms".into(), args.rooms as f64);
    counts.insert("rooms_established".into(), established as f64);
    counts.insert("video_kbps".into(), (pack.kbps(args.video_fps) * 10.0).round() / 10.0);
    // What the senders would have sent in the measured time had they never been held back:
    // when `send_ratio` falls well below 1, this process (not the node) was the limit.
    let offered = (established * 2 * pack.packets) as f64 * args.video_fps * measured;
    counts.insert("packets_offered".into(), offered.round());
    counts.insert("send_ratio".into(), (loss.sent as f64 / offered.max(1.0) * 1000.0).round() / 1000.0);
    counts.insert("packets_sent".into(), loss.sent as f64);
    counts.insert("packets_received".into(), loss.received as f64);
    counts.insert("packets_per_s".into(), (loss.received as f64 / measured.max(1e-9)).round());
    counts.insert("duplicates".into(), duplicates as f64);
    counts.insert("loss_pct".into(), loss.pct());
    counts.insert("worst_room_loss_pct".into(), loss.worst_room_pct);
    counts.insert("rooms_over_1pct_loss".into(), loss.rooms_over_1pct as f64);
    counts.insert("pongs".into(), pings as f64);
    let mut latencies = BTreeMap::new();
    latencies.insert("setup".into(), setup.summary());
    latencies.insert("signalling".into(), signalling.summary());
    latencies.insert("offer_answer".into(), offer_answer.summary());
    latencies.insert("media".into(), media.summary());
    Ok(Report::named("consult", &common.target, ramp.as_secs_f64(), measured, latencies, counts, errors))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_are_cut_into_mtu_sized_packets_at_the_asked_bitrate() {
        let p = Packetizer::new(500, 30.0);
        // 500 kbit/s at 30 fps: 2084 B a frame, two packets of 1042 B.
        assert_eq!(p, Packetizer { packets: 2, payload: 1042 });
        assert!((p.kbps(30.0) - 500.0).abs() < 1.0, "{}", p.kbps(30.0));
        let big = Packetizer::new(4000, 30.0);
        assert!(big.payload <= MAX_PAYLOAD && big.packets == 14, "{big:?}");
        let tiny = Packetizer::new(16, 120.0);
        assert_eq!((tiny.packets, tiny.payload), (1, HEADER), "never smaller than the stamp");
    }

    #[test]
    fn stamps_round_trip_and_foreign_payloads_are_ignored() {
        let s = Stamp { phase: MEASURE, seq: 123_456, sent_us: 987_654_321 };
        let p = encode(s, 1042);
        assert_eq!(p.len(), 1042);
        assert_eq!(decode(&p), Some(s));
        assert_eq!(decode(b"coherency-frame-1"), None);
        assert_eq!(decode(&p[..HEADER - 1]), None);
    }

    #[test]
    fn retransmissions_are_counted_once() {
        let mut s = SeqSet::default();
        assert!(s.insert(0));
        assert!(s.insert(200));
        assert!(!s.insert(200));
        assert!(s.insert(63) && s.insert(64));
        assert!(!s.insert(MAX_SEQ), "out of range is ignored");
        assert_eq!(s.unique(), 4);
    }

    #[test]
    fn loss_is_a_percentage_of_what_was_sent() {
        assert_eq!(loss_pct(0, 0), 0.0);
        assert_eq!(loss_pct(1000, 1000), 0.0);
        assert_eq!(loss_pct(1000, 990), 1.0);
        assert_eq!(loss_pct(3, 2), 33.333);
        assert_eq!(loss_pct(10, 12), 0.0, "never negative");
        let mut t = LossTally::default();
        t.room(1000, 1000);
        t.room(1000, 980);
        t.room(1000, 995);
        assert_eq!((t.sent, t.received), (3000, 2975));
        assert_eq!(t.worst_room_pct, 2.0);
        assert_eq!(t.rooms_over_1pct, 1);
        assert!((t.pct() - 0.833).abs() < 1e-9, "{}", t.pct());
    }

    #[test]
    fn signal_urls_follow_the_scheme() {
        assert_eq!(signal_url("http://127.0.0.1:8080/", "c1"), "ws://127.0.0.1:8080/v1/consults/c1/signal");
        assert_eq!(signal_url("https://clinic.example", "c1"), "wss://clinic.example/v1/consults/c1/signal");
    }
}
