//! The SFU with in-process webrtc-rs peers on loopback: the host publishes a synthetic VP8
//! track, the admitted patient receives its RTP through the server.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::sync::Mutex;
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
use webrtc::rtp_transceiver::rtp_codec::{RTCRtpCodecCapability, RTPCodecType};
use webrtc::rtp_transceiver::rtp_sender::RTCRtpSender;
use webrtc::rtp_transceiver::rtp_transceiver_direction::RTCRtpTransceiverDirection;
use webrtc::rtp_transceiver::RTCRtpTransceiverInit;
use webrtc::track::track_local::track_local_static_rtp::TrackLocalStaticRTP;
use webrtc::track::track_local::{TrackLocal, TrackLocalWriter};

use crate::consults::{connect_at, setup, until, until_event};
use crate::helpers::{eventually, spawn_app_with, TestApp, User};

pub type Sink = Arc<Mutex<futures_util::stream::SplitSink<super::consults::WsStream, Message>>>;

pub async fn peer() -> Arc<RTCPeerConnection> {
    let mut media = MediaEngine::default();
    media.register_default_codecs().unwrap();
    let registry = register_default_interceptors(Registry::new(), &mut media).unwrap();
    let mut s = SettingEngine::default();
    coherency_protocol::rtc_loopback::restrict_to_loopback(&mut s);
    let api =
        APIBuilder::new().with_media_engine(media).with_interceptor_registry(registry).with_setting_engine(s).build();
    Arc::new(api.new_peer_connection(RTCConfiguration::default()).await.unwrap())
}

pub async fn send(sink: &Sink, v: Value) {
    sink.lock().await.send(Message::Text(v.to_string().into())).await.unwrap();
}

/// Joins `who` with a peer connection, pumping signalling until the socket ends. Returns
/// the socket's sending half and the participant id.
async fn join_media(
    app: &TestApp,
    consult: uuid::Uuid,
    who: &User,
    pc: Arc<RTCPeerConnection>,
    admit: Option<&User>,
) -> (Sink, String) {
    join_media_at(app, app.port, app.port, consult, who, pc, admit, None).await
}

/// [`join_media`] with the socket on the node at `port` and the host's admission sent to
/// the node at `admit_port`; with `mute_first`, the participant (a host) mutes their own
/// media of that kind before offering any.
#[allow(clippy::too_many_arguments)]
pub async fn join_media_at(
    app: &TestApp,
    port: u16,
    admit_port: u16,
    consult: uuid::Uuid,
    who: &User,
    pc: Arc<RTCPeerConnection>,
    admit: Option<&User>,
    mute_first: Option<&str>,
) -> (Sink, String) {
    let mut ws = connect_at(port, consult, who).await.unwrap();
    let w = until(&mut ws, "welcome").await;
    let me = w["participant_id"].as_str().unwrap().to_string();
    if let Some(host) = admit {
        let pid = w["participant_id"].as_str().unwrap();
        let url = format!("http://127.0.0.1:{admit_port}/v1/consults/{consult}/participants/{pid}/admit");
        let res = app.client.post(url).bearer_auth(&host.token).json(&json!({})).send().await.unwrap();
        assert_eq!(res.status(), 200);
        until_event(&mut ws, "joined").await;
    }
    let (sink, mut stream) = ws.split();
    let sink: Sink = Arc::new(Mutex::new(sink));
    if let Some(kind) = mute_first {
        send(&sink, json!({"type": "mute", "participant_id": me, "kind": kind, "muted": true})).await;
    }
    let s2 = sink.clone();
    pc.on_ice_candidate(Box::new(move |c: Option<RTCIceCandidate>| {
        let sink = s2.clone();
        Box::pin(async move {
            if let Some(c) = c {
                let init = c.to_json().unwrap();
                send(&sink, json!({"type": "ice", "candidate": {"candidate": init.candidate, "sdpMid": init.sdp_mid, "sdpMLineIndex": init.sdp_mline_index}})).await;
            }
        })
    }));
    let offer = pc.create_offer(None).await.unwrap();
    pc.set_local_description(offer).await.unwrap();
    send(&sink, json!({"type": "offer", "sdp": pc.local_description().await.unwrap().sdp})).await;
    let pc2 = pc.clone();
    let out = (sink.clone(), me);
    tokio::spawn(async move {
        let mut pending: Vec<RTCIceCandidateInit> = Vec::new();
        // Pings (the server's heartbeat starts with one, before or after `welcome`) are
        // skipped, not taken for the end of the socket.
        while let Some(Ok(frame)) = stream.next().await {
            let Message::Text(t) = frame else { continue };
            let m: Value = serde_json::from_str(&t).unwrap();
            match m["type"].as_str().unwrap() {
                "answer" => {
                    pc2.set_remote_description(
                        RTCSessionDescription::answer(m["sdp"].as_str().unwrap().into()).unwrap(),
                    )
                    .await
                    .unwrap();
                    for c in pending.drain(..) {
                        let _ = pc2.add_ice_candidate(c).await;
                    }
                }
                "offer" => {
                    pc2.set_remote_description(
                        RTCSessionDescription::offer(m["sdp"].as_str().unwrap().into()).unwrap(),
                    )
                    .await
                    .unwrap();
                    for c in pending.drain(..) {
                        let _ = pc2.add_ice_candidate(c).await;
                    }
                    let a = pc2.create_answer(None).await.unwrap();
                    pc2.set_local_description(a).await.unwrap();
                    send(&sink, json!({"type": "answer", "sdp": pc2.local_description().await.unwrap().sdp})).await;
                }
                "ice" => {
                    let c: RTCIceCandidateInit = serde_json::from_value(m["candidate"].clone()).unwrap();
                    if pc2.remote_description().await.is_some() {
                        let _ = pc2.add_ice_candidate(c).await;
                    } else {
                        pending.push(c);
                    }
                }
                _ => {}
            }
        }
    });
    out
}

/// Adds a synthetic VP8 track to `pc`; returns it and its RTP sender.
pub async fn publish_video(pc: &Arc<RTCPeerConnection>) -> (Arc<TrackLocalStaticRTP>, Arc<RTCRtpSender>) {
    let track = Arc::new(TrackLocalStaticRTP::new(
        RTCRtpCodecCapability { mime_type: MIME_TYPE_VP8.to_owned(), clock_rate: 90000, ..Default::default() },
        "video".into(),
        "host-camera".into(),
    ));
    let sender = pc.add_track(track.clone() as Arc<dyn TrackLocal + Send + Sync>).await.unwrap();
    (track, sender)
}

/// Writes marked synthetic RTP (the SFU does not decode, so any payload forwards) to
/// `track`, 100 packets a second for at most 20 s.
pub fn write_frames(track: Arc<TrackLocalStaticRTP>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut seq: u16 = 0;
        for i in 0..2000u32 {
            let pkt = webrtc::rtp::packet::Packet {
                header: webrtc::rtp::header::Header {
                    version: 2,
                    payload_type: 96,
                    sequence_number: seq,
                    timestamp: i * 3000,
                    marker: true,
                    ssrc: 0,
                    ..Default::default()
                },
                payload: bytes::Bytes::from(format!("coherency-frame-{i}").into_bytes()),
            };
            seq = seq.wrapping_add(1);
            let _ = track.write_rtp(&pkt).await;
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
}

/// Makes `pc` receive (a recvonly audio transceiver, plus whatever the SFU offers) and
/// counts the RTP packets it gets: all of them, and those carrying [`write_frames`]' marker.
pub async fn count_frames(pc: &Arc<RTCPeerConnection>) -> (Arc<AtomicUsize>, Arc<AtomicUsize>) {
    pc.add_transceiver_from_kind(
        RTPCodecType::Audio,
        Some(RTCRtpTransceiverInit { direction: RTCRtpTransceiverDirection::Recvonly, send_encodings: vec![] }),
    )
    .await
    .unwrap();
    let received = Arc::new(AtomicUsize::new(0));
    let marked = Arc::new(AtomicUsize::new(0));
    let (r2, m2) = (received.clone(), marked.clone());
    pc.on_track(Box::new(move |remote, _, _| {
        let (r, m) = (r2.clone(), m2.clone());
        Box::pin(async move {
            tokio::spawn(async move {
                while let Ok((pkt, _)) = remote.read_rtp().await {
                    r.fetch_add(1, Ordering::SeqCst);
                    if pkt.payload.starts_with(b"coherency-frame") {
                        m.fetch_add(1, Ordering::SeqCst);
                    }
                }
            });
        })
    }));
    (received, marked)
}

#[actix_web::test]
async fn a_published_video_track_reaches_the_other_participant_through_the_sfu() {
    let app = spawn_app_with(|mut c| {
        c.webrtc_loopback_only = true;
        c
    })
    .await;
    let s = setup(&app).await;

    // Host publishes a synthetic VP8 track.
    let host_pc = peer().await;
    let (track, sender) = publish_video(&host_pc).await;
    let plis = Arc::new(AtomicUsize::new(0));
    let plis2 = plis.clone();
    tokio::spawn(async move {
        while let Ok((pkts, _)) = sender.read_rtcp().await {
            for p in pkts {
                if p.as_any()
                    .downcast_ref::<webrtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication>()
                    .is_some()
                {
                    plis2.fetch_add(1, Ordering::SeqCst);
                }
            }
        }
    });
    let (host_sink, host_pid) = join_media(&app, s.consult, &s.clin, host_pc.clone(), None).await;

    // Patient receives only.
    let pat_pc = peer().await;
    let (received, marker_ok) = count_frames(&pat_pc).await;
    let (pat_sink, _) = join_media(&app, s.consult, &s.patient, pat_pc.clone(), Some(&s.clin)).await;

    let writer = write_frames(track.clone());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while marker_ok.load(Ordering::SeqCst) < 20 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no RTP through the SFU in 20 s: received {}, host {:?}/{:?}, patient {:?}/{:?}, transceivers {}",
            received.load(Ordering::SeqCst),
            host_pc.connection_state(),
            host_pc.signaling_state(),
            pat_pc.connection_state(),
            pat_pc.signaling_state(),
            pat_pc.get_transceivers().await.len(),
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(received.load(Ordering::SeqCst) >= 20);
    // The SFU asks the publisher for keyframes (its own ticker and the subscriber's PLIs).
    eventually(Duration::from_secs(10), "a PLI at the publisher", || async {
        (plis.load(Ordering::SeqCst) > 0).then_some(())
    })
    .await;
    // The host mutes their own video: the SFU stops forwarding it; unmuted, it flows again.
    // A patient cannot mute anyone.
    let before = marker_ok.load(Ordering::SeqCst);
    send(&pat_sink, json!({"type": "mute", "participant_id": host_pid, "kind": "video", "muted": true})).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(marker_ok.load(Ordering::SeqCst) > before, "the patient's mute changed nothing: media still flows");
    send(&host_sink, json!({"type": "mute", "participant_id": host_pid, "kind": "video", "muted": true})).await;
    tokio::time::sleep(Duration::from_millis(500)).await; // packets already in flight
    let at_mute = marker_ok.load(Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(marker_ok.load(Ordering::SeqCst), at_mute, "nothing is forwarded while muted");
    send(&host_sink, json!({"type": "mute", "participant_id": host_pid, "kind": "video", "muted": false})).await;
    eventually(Duration::from_secs(10), "RTP again after unmuting", || async {
        (marker_ok.load(Ordering::SeqCst) >= at_mute + 10).then_some(())
    })
    .await;
    writer.abort();
    // The SFU applies a mute at once and the room commits its event just after, so media can
    // flow again before the "unmuted" event is in the log: wait for the log to settle.
    let kinds = || async {
        let evs: Vec<Value> =
            app.get_auth(&format!("/v1/consults/{}/events", s.consult), &s.clin.token).await.json().await.unwrap();
        evs.iter().map(|e| e["kind"].as_str().unwrap().to_owned()).collect::<Vec<String>>()
    };
    eventually(Duration::from_secs(10), "the host's unmute in the consult log", || async {
        kinds().await.iter().any(|k| k == "unmuted").then_some(())
    })
    .await;
    let kinds = kinds().await;
    assert!(kinds.iter().any(|k| k == "track_published"), "{kinds:?}");
    let mutes: Vec<&str> = kinds.iter().map(String::as_str).filter(|k| k.ends_with("muted")).collect();
    assert_eq!(mutes, ["muted", "unmuted"], "the patient's mute was refused; the host's are in the log");
    let _ = host_pc.close().await;
    let _ = pat_pc.close().await;
}

#[actix_web::test]
async fn a_mute_given_before_any_media_holds_once_media_flows() {
    let app = spawn_app_with(|mut c| {
        c.webrtc_loopback_only = true;
        c
    })
    .await;
    let s = setup(&app).await;
    // The host mutes their own video before the SFU exists (nobody has offered yet).
    let host_pc = peer().await;
    let (track, _sender) = publish_video(&host_pc).await;
    let (host_sink, host_pid) =
        join_media_at(&app, app.port, app.port, s.consult, &s.clin, host_pc.clone(), None, Some("video")).await;
    let pat_pc = peer().await;
    let (_, marked) = count_frames(&pat_pc).await;
    join_media(&app, s.consult, &s.patient, pat_pc.clone(), Some(&s.clin)).await;
    let writer = write_frames(track);
    use webrtc::peer_connection::peer_connection_state::RTCPeerConnectionState as St;
    eventually(Duration::from_secs(20), "both peers connected to the SFU", || async {
        (host_pc.connection_state() == St::Connected && pat_pc.connection_state() == St::Connected).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(marked.load(Ordering::SeqCst), 0, "video muted before media was forwarded anyway");
    // Unmuted, the same track reaches the patient: the silence above was the mute.
    send(&host_sink, json!({"type": "mute", "participant_id": host_pid, "kind": "video", "muted": false})).await;
    eventually(Duration::from_secs(15), "video after unmuting", || async {
        (marked.load(Ordering::SeqCst) >= 10).then_some(())
    })
    .await;
    writer.abort();
    let _ = host_pc.close().await;
    let _ = pat_pc.close().await;
}
