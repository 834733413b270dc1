//! The room's selective forwarding unit (webrtc-rs 0.17). Each admitted participant has one
//! peer connection with the server. Every audio or video track a participant publishes is
//! copied, RTP packet by RTP packet, into one local track per other participant; nothing is
//! decoded. Feedback: a subscriber's PLI/FIR is forwarded to the publisher as a PLI for the
//! published SSRC (plus one PLI every few seconds and when a subscriber is added, so a new
//! subscriber gets a keyframe); NACKs are answered hop by hop by the default interceptors (the
//! server retransmits to a subscriber from its send buffer and asks the publisher for what it
//! missed itself), which is what lets video recover from loss on either leg.
//!
//! Each peer is driven by one task that takes its commands in order (offer, answer,
//! candidates, tracks to add or remove), so signalling for one participant is never reordered.
//! Negotiation: the client offers its own tracks; the server offers when it adds or removes
//! tracks for that client. The server is the impolite side: a client offer that arrives while a
//! server offer is outstanding is refused with `glare`, and the client rolls back and answers.

use std::collections::HashMap;
use std::sync::{Arc, Mutex as StdMutex};
use std::time::Duration;

use actix::Recipient;
use coherency_protocol::consult::{IceCandidate, IceServer, MediaKind, ServerSignal};
use tokio::sync::mpsc;
use uuid::Uuid;
use webrtc::api::interceptor_registry::register_default_interceptors;
use webrtc::api::media_engine::MediaEngine;
use webrtc::api::setting_engine::SettingEngine;
use webrtc::api::{APIBuilder, API};
use webrtc::ice_transport::ice_candidate::{RTCIceCandidate, RTCIceCandidateInit};
use webrtc::ice_transport::ice_server::RTCIceServer;
use webrtc::interceptor::registry::Registry;
use webrtc::peer_connection::configuration::RTCConfiguration;
use webrtc::peer_connection::sdp::session_description::RTCSessionDescription;
use webrtc::peer_connection::signaling_state::RTCSignalingState;
use webrtc::peer_connection::RTCPeerConnection;
use webrtc::rtcp::payload_feedbacks::full_intra_request::FullIntraRequest;
use webrtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use webrtc::rtp_transceiver::rtp_codec::RTPCodecType;
use webrtc::rtp_transceiver::rtp_sender::RTCRtpSender;
use webrtc::track::track_local::track_local_static_rtp::TrackLocalStaticRTP;
use webrtc::track::track_local::{TrackLocal, TrackLocalWriter};
use webrtc::track::track_remote::TrackRemote;

use super::SfuReport;

/// How often a publisher is asked for a keyframe regardless of feedback.
const PLI_EVERY: Duration = Duration::from_secs(3);

/// Network settings of the SFU's peer connections.
#[derive(Debug, Clone, Default)]
pub struct SfuConfig {
    /// Gather loopback candidates only (tests and single-machine demos): loopback included,
    /// interfaces filtered to `lo`, UDP over IPv4, multicast DNS off.
    pub loopback_only: bool,
}

/// One published track, fanned out to subscribers.
struct Published {
    key: String,
    publisher: Uuid,
    kind: RTPCodecType,
    local: Arc<TrackLocalStaticRTP>,
    media_ssrc: u32,
    publisher_pc: std::sync::Weak<RTCPeerConnection>,
}

impl Published {
    async fn request_keyframe(&self) {
        if let Some(pc) = self.publisher_pc.upgrade() {
            let pli = PictureLossIndication { sender_ssrc: 0, media_ssrc: self.media_ssrc };
            let _ = pc.write_rtcp(&[Box::new(pli)]).await;
        }
    }
}

enum Cmd {
    Offer(String),
    Answer(String),
    Candidate(IceCandidate),
    Add(Arc<Published>),
    Remove(String),
    Close,
}

struct Shared {
    api: API,
    loopback_only: bool,
    ice_servers: Vec<RTCIceServer>,
    room: Recipient<SfuReport>,
    peers: StdMutex<HashMap<Uuid, mpsc::UnboundedSender<Cmd>>>,
    tracks: StdMutex<HashMap<String, Arc<Published>>>,
    /// (publisher, kind) pairs the host muted: their packets are not forwarded.
    muted: StdMutex<std::collections::HashSet<(Uuid, MediaKind)>>,
}

/// A room's SFU.
pub struct Sfu {
    shared: Arc<Shared>,
}

fn lock<T>(m: &StdMutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Sfu {
    pub fn new(cfg: SfuConfig, ice_servers: Vec<IceServer>, room: Recipient<SfuReport>) -> Result<Self, webrtc::Error> {
        let mut media = MediaEngine::default();
        media.register_default_codecs()?;
        let registry = register_default_interceptors(Registry::new(), &mut media)?;
        let mut setting = SettingEngine::default();
        if cfg.loopback_only {
            restrict_to_loopback(&mut setting);
        }
        let api = APIBuilder::new()
            .with_media_engine(media)
            .with_interceptor_registry(registry)
            .with_setting_engine(setting)
            .build();
        let ice_servers = rtc_ice_servers(ice_servers);
        Ok(Self {
            shared: Arc::new(Shared {
                api,
                loopback_only: cfg.loopback_only,
                ice_servers,
                room,
                peers: StdMutex::new(HashMap::new()),
                tracks: StdMutex::new(HashMap::new()),
                muted: StdMutex::new(Default::default()),
            }),
        })
    }

    fn push(&self, pid: Uuid, cmd: Cmd) {
        let tx = lock(&self.shared.peers).get(&pid).cloned();
        if let Some(tx) = tx {
            let _ = tx.send(cmd);
        }
    }

    /// A client's offer (creates its peer connection on first use).
    pub fn offer(&self, pid: Uuid, sdp: String) {
        let exists = lock(&self.shared.peers).contains_key(&pid);
        if !exists {
            let (tx, rx) = mpsc::unbounded_channel();
            lock(&self.shared.peers).insert(pid, tx.clone());
            let _ = tx.send(Cmd::Offer(sdp));
            // Everything already published by others is offered to the newcomer.
            let existing: Vec<Arc<Published>> =
                lock(&self.shared.tracks).values().filter(|t| t.publisher != pid).cloned().collect();
            for t in existing {
                let _ = tx.send(Cmd::Add(t));
            }
            let shared = self.shared.clone();
            tokio::spawn(async move { run_peer(shared, pid, rx).await });
        } else {
            self.push(pid, Cmd::Offer(sdp));
        }
    }

    pub fn answer(&self, pid: Uuid, sdp: String) {
        self.push(pid, Cmd::Answer(sdp));
    }

    pub fn candidate(&self, pid: Uuid, c: IceCandidate) {
        // Loopback-only: never send connectivity checks to any other address.
        if self.shared.loopback_only && !is_loopback_candidate(&c.candidate) {
            return;
        }
        self.push(pid, Cmd::Candidate(c));
    }

    /// Stops (or resumes) forwarding `pid`'s tracks of `kind`.
    pub fn set_muted(&self, pid: Uuid, kind: MediaKind, muted: bool) {
        let mut set = lock(&self.shared.muted);
        if muted {
            set.insert((pid, kind));
        } else {
            set.remove(&(pid, kind));
        }
    }

    /// Closes a participant's peer connection (their published tracks end with it).
    pub fn remove(&self, pid: Uuid) {
        let tx = lock(&self.shared.peers).remove(&pid);
        if let Some(tx) = tx {
            let _ = tx.send(Cmd::Close);
        }
    }

    /// Closes every peer connection.
    pub fn close(&self) {
        let all: Vec<_> = lock(&self.shared.peers).drain().collect();
        for (_, tx) in all {
            let _ = tx.send(Cmd::Close);
        }
    }

    /// Peers with a connection.
    pub fn peers(&self) -> usize {
        lock(&self.shared.peers).len()
    }
}

/// Loopback only (`webrtc_loopback_only`) for every peer connection the server makes (the
/// SFU, scan data channels): the project's one setting, shared with its clients.
pub use coherency_protocol::rtc_loopback::restrict_to_loopback;

/// The configured ICE servers in webrtc-rs's form.
pub fn rtc_ice_servers(servers: Vec<IceServer>) -> Vec<RTCIceServer> {
    servers
        .into_iter()
        .map(|s| RTCIceServer {
            urls: s.urls,
            username: s.username.unwrap_or_default(),
            credential: s.credential.unwrap_or_default(),
        })
        .collect()
}

/// Whether a candidate line's connection address is a loopback IP.
pub fn is_loopback_candidate(line: &str) -> bool {
    // candidate:<foundation> <component> <transport> <priority> <address> <port> typ …
    line.split_whitespace().nth(4).and_then(|a| a.parse::<std::net::IpAddr>().ok()).is_some_and(|ip| ip.is_loopback())
}

fn signal(shared: &Shared, pid: Uuid, s: ServerSignal) {
    shared.room.do_send(SfuReport::Signal { participant_id: pid, signal: s });
}

fn glare_error(shared: &Shared, pid: Uuid, message: String) {
    signal(shared, pid, ServerSignal::Error { code: "glare".into(), message });
}

struct PeerState {
    pc: Arc<RTCPeerConnection>,
    senders: HashMap<String, Arc<RTCRtpSender>>,
    pending: Vec<RTCIceCandidateInit>,
    needs_offer: bool,
    /// The client's first offer has been answered. The server renegotiates only after
    /// that: an offer of ours crossing the client's first offer was the glare that lost
    /// video (docs/consults.md).
    client_offered: bool,
}

async fn run_peer(shared: Arc<Shared>, pid: Uuid, mut rx: mpsc::UnboundedReceiver<Cmd>) {
    let config = RTCConfiguration { ice_servers: shared.ice_servers.clone(), ..Default::default() };
    let pc = match shared.api.new_peer_connection(config).await {
        Ok(pc) => Arc::new(pc),
        Err(e) => {
            tracing::error!(error = %e, "cannot create a peer connection");
            return;
        }
    };
    {
        let shared2 = shared.clone();
        pc.on_ice_candidate(Box::new(move |c: Option<RTCIceCandidate>| {
            let shared = shared2.clone();
            Box::pin(async move {
                if let Some(c) = c {
                    if let Ok(init) = c.to_json() {
                        let candidate = IceCandidate {
                            candidate: init.candidate,
                            sdp_mid: init.sdp_mid,
                            sdp_mline_index: init.sdp_mline_index,
                            username_fragment: init.username_fragment,
                        };
                        signal(&shared, pid, ServerSignal::Ice { candidate });
                    }
                }
            })
        }));
        let shared2 = shared.clone();
        let weak = Arc::downgrade(&pc);
        pc.on_track(Box::new(move |remote: Arc<TrackRemote>, _, _| {
            let shared = shared2.clone();
            let weak = weak.clone();
            Box::pin(async move { publish(shared, pid, remote, weak) })
        }));
    }
    let mut st =
        PeerState { pc, senders: HashMap::new(), pending: Vec::new(), needs_offer: false, client_offered: false };
    while let Some(cmd) = rx.recv().await {
        match cmd {
            Cmd::Close => break,
            Cmd::Offer(sdp) => {
                if st.pc.signaling_state() != RTCSignalingState::Stable {
                    glare_error(&shared, pid, "the server has an offer outstanding; answer it first".into());
                    continue;
                }
                if let Err(e) = answer_offer(&shared, pid, &mut st, sdp).await {
                    tracing::warn!(error = %e, "client offer failed");
                    signal(
                        &shared,
                        pid,
                        ServerSignal::Error { code: "bad_request".into(), message: "offer rejected".into() },
                    );
                }
            }
            Cmd::Answer(sdp) => {
                let res = match RTCSessionDescription::answer(sdp) {
                    Ok(d) => st.pc.set_remote_description(d).await,
                    Err(e) => Err(e),
                };
                if let Err(e) = res {
                    tracing::warn!(error = %e, "client answer failed");
                }
                flush_candidates(&mut st).await;
            }
            Cmd::Candidate(c) => {
                let init = RTCIceCandidateInit {
                    candidate: c.candidate,
                    sdp_mid: c.sdp_mid,
                    sdp_mline_index: c.sdp_mline_index,
                    username_fragment: c.username_fragment,
                };
                if st.pc.remote_description().await.is_some() {
                    let _ = st.pc.add_ice_candidate(init).await;
                } else {
                    st.pending.push(init);
                }
            }
            Cmd::Add(t) => {
                if st.senders.contains_key(&t.key) {
                    continue;
                }
                match st.pc.add_track(t.local.clone() as Arc<dyn TrackLocal + Send + Sync>).await {
                    Ok(sender) => {
                        st.senders.insert(t.key.clone(), sender.clone());
                        tokio::spawn(relay_feedback(sender, t.clone()));
                        st.needs_offer = true;
                        t.request_keyframe().await;
                    }
                    Err(e) => tracing::warn!(error = %e, "cannot add a track for a subscriber"),
                }
            }
            Cmd::Remove(key) => {
                if let Some(sender) = st.senders.remove(&key) {
                    let _ = st.pc.remove_track(&sender).await;
                    st.needs_offer = true;
                }
            }
        }
        if st.client_offered && st.needs_offer && st.pc.signaling_state() == RTCSignalingState::Stable && rx.is_empty()
        {
            st.needs_offer = false;
            if let Err(e) = server_offer(&shared, pid, &st).await {
                tracing::warn!(error = %e, "server offer failed");
            }
        }
    }
    let _ = st.pc.close().await;
}

async fn flush_candidates(st: &mut PeerState) {
    for c in st.pending.drain(..) {
        let _ = st.pc.add_ice_candidate(c).await;
    }
}

async fn answer_offer(shared: &Shared, pid: Uuid, st: &mut PeerState, sdp: String) -> Result<(), webrtc::Error> {
    st.pc.set_remote_description(RTCSessionDescription::offer(sdp)?).await?;
    flush_candidates(st).await;
    let answer = st.pc.create_answer(None).await?;
    st.pc.set_local_description(answer.clone()).await?;
    let sdp = st.pc.local_description().await.map(|d| d.sdp).unwrap_or(answer.sdp);
    signal(shared, pid, ServerSignal::Answer { sdp });
    st.client_offered = true;
    Ok(())
}

async fn server_offer(shared: &Shared, pid: Uuid, st: &PeerState) -> Result<(), webrtc::Error> {
    let offer = st.pc.create_offer(None).await?;
    st.pc.set_local_description(offer.clone()).await?;
    let sdp = st.pc.local_description().await.map(|d| d.sdp).unwrap_or(offer.sdp);
    signal(shared, pid, ServerSignal::Offer { sdp });
    Ok(())
}

/// A subscriber's RTCP: keyframe requests go to the publisher; reading also drives the
/// sender's interceptors (NACK responder, reports).
async fn relay_feedback(sender: Arc<RTCRtpSender>, t: Arc<Published>) {
    while let Ok((pkts, _)) = sender.read_rtcp().await {
        let wants_keyframe = pkts.iter().any(|p| {
            let any = p.as_any();
            any.downcast_ref::<PictureLossIndication>().is_some() || any.downcast_ref::<FullIntraRequest>().is_some()
        });
        if wants_keyframe {
            t.request_keyframe().await;
        }
    }
}

/// A participant published `remote`: fan it out until it ends.
fn publish(shared: Arc<Shared>, pid: Uuid, remote: Arc<TrackRemote>, pc: std::sync::Weak<RTCPeerConnection>) {
    let kind = remote.kind();
    let media_kind = if kind == RTPCodecType::Audio { MediaKind::Audio } else { MediaKind::Video };
    let kind_s = media_kind.as_str();
    let key = format!("{pid}:{}:{}", remote.stream_id(), remote.id());
    let local = Arc::new(TrackLocalStaticRTP::new(
        remote.codec().capability,
        format!("{kind_s}-{}", Uuid::new_v4().simple()),
        pid.to_string(),
    ));
    let t = Arc::new(Published {
        key: key.clone(),
        publisher: pid,
        kind,
        local,
        media_ssrc: remote.ssrc(),
        publisher_pc: pc,
    });
    lock(&shared.tracks).insert(key.clone(), t.clone());
    let subscribers: Vec<_> =
        lock(&shared.peers).iter().filter(|(p, _)| **p != pid).map(|(_, tx)| tx.clone()).collect();
    for tx in subscribers {
        let _ = tx.send(Cmd::Add(t.clone()));
    }
    shared.room.do_send(SfuReport::Track {
        participant_id: pid,
        published: true,
        track_id: t.local.id().to_string(),
        kind: kind_s.into(),
    });
    tokio::spawn(async move {
        let ticker_t = t.clone();
        let ticker = tokio::spawn(async move {
            if ticker_t.kind != RTPCodecType::Video {
                return;
            }
            let mut every = tokio::time::interval(PLI_EVERY);
            loop {
                every.tick().await;
                ticker_t.request_keyframe().await;
            }
        });
        while let Ok((pkt, _)) = remote.read_rtp().await {
            if lock(&shared.muted).contains(&(pid, media_kind)) {
                continue;
            }
            if let Err(e) = t.local.write_rtp(&pkt).await {
                if matches!(e, webrtc::Error::ErrClosedPipe) {
                    break;
                }
            }
        }
        ticker.abort();
        lock(&shared.tracks).remove(&t.key);
        let subscribers: Vec<_> = lock(&shared.peers).values().cloned().collect();
        for tx in subscribers {
            let _ = tx.send(Cmd::Remove(t.key.clone()));
        }
        shared.room.do_send(SfuReport::Track {
            participant_id: pid,
            published: false,
            track_id: t.local.id().to_string(),
            kind: kind_s.into(),
        });
    });
}
