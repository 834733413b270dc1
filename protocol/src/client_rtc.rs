//! The data-channel transport of the Rust scan client (feature `rtc`, webrtc-rs 0.17):
//! opens the scan's signalling socket (`GET /v1/scans/{id}/rtc`), offers a peer connection
//! with one data channel labelled `scan`, trickles candidates, and once the channel is open
//! carries v1 messages in fragments (`crate::datachannel`). One [`DataChannelConn`] is one
//! connection of the stream: the client opens a new one (new signalling socket, new peer
//! connection) to resume.
//!
//! Flow control on the sending side: a write waits while the channel's buffered amount is
//! above [`dcp::BUFFERED_HIGH`], until it falls to [`dcp::BUFFERED_LOW`].

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot, Notify};
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use webrtc::api::media_engine::MediaEngine;
use webrtc::api::setting_engine::SettingEngine;
use webrtc::api::APIBuilder;
use webrtc::data::data_channel::DataChannel;
use webrtc::ice_transport::ice_candidate::{RTCIceCandidate, RTCIceCandidateInit};
use webrtc::ice_transport::ice_server::RTCIceServer;
use webrtc::peer_connection::configuration::RTCConfiguration;
use webrtc::peer_connection::sdp::session_description::RTCSessionDescription;
use webrtc::peer_connection::RTCPeerConnection;

use crate::client::{ClientConfig, ClientError};
use crate::consult::IceCandidate;
use crate::datachannel::{self as dcp, Assembled, Reassembler, SignalIn, SignalOut};
use crate::limits;
use crate::scan::{self, ErrorMsg};

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// What a data-channel connection delivers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DcIncoming {
    /// One whole v1 server message.
    Message(Bytes),
    /// The server closed the stream with this code (a `CLOSE` fragment).
    Closed(u16, String),
    /// The server broke the fragment framing.
    Broken(String),
}

/// One open data channel to a scan's stream (before `hello`).
pub struct DataChannelConn {
    pc: Arc<RTCPeerConnection>,
    dc: Arc<DataChannel>,
    incoming: mpsc::Receiver<DcIncoming>,
    low: Arc<Notify>,
    reader: JoinHandle<()>,
    signalling: JoinHandle<()>,
    stall_timeout: Duration,
}

impl Drop for DataChannelConn {
    fn drop(&mut self) {
        self.reader.abort();
        self.signalling.abort();
        // Closing sends the SCTP abort and DTLS close_notify: the server sees the drop at once.
        let pc = self.pc.clone();
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move {
                let _ = pc.close().await;
            });
        }
    }
}

fn signal_url(config: &ClientConfig) -> String {
    let stream = config.stream_url();
    let base = stream.strip_suffix(&scan::stream_path(config.scan_id)).unwrap_or(&stream);
    format!("{base}{}", dcp::signal_path(config.scan_id))
}

async fn send_json(ws: &mut Socket, s: &SignalIn) -> Result<(), ClientError> {
    let text = serde_json::to_string(s).map_err(|e| ClientError::Connect(e.to_string()))?;
    ws.send(Message::Text(text.into())).await.map_err(|e| ClientError::Connect(e.to_string()))
}

fn server_error(code: &str, message: String) -> ClientError {
    let code = scan::code_from_str(code).unwrap_or(crate::Code::Internal);
    ClientError::Server(ErrorMsg::new(code, message))
}

fn to_init(c: IceCandidate) -> RTCIceCandidateInit {
    RTCIceCandidateInit {
        candidate: c.candidate,
        sdp_mid: c.sdp_mid,
        sdp_mline_index: c.sdp_mline_index,
        username_fragment: c.username_fragment,
    }
}

impl DataChannelConn {
    /// Signals a new peer connection and waits for the `scan` channel to open.
    pub async fn open(config: &ClientConfig) -> Result<Self, ClientError> {
        let request = crate::client::authorized_request(signal_url(config), config)?;
        let (mut ws, _) = tokio_tungstenite::connect_async(request).await.map_err(crate::client::handshake_error)?;
        let ice_servers = loop {
            match next_signal(&mut ws).await? {
                SignalOut::Welcome { ice_servers } => break ice_servers,
                SignalOut::Error { code, message } => return Err(server_error(&code, message)),
                _ => {}
            }
        };

        let mut setting = SettingEngine::default();
        setting.detach_data_channels();
        if config.rtc_loopback_only {
            crate::rtc_loopback::restrict_to_loopback(&mut setting);
        }
        let api = APIBuilder::new().with_media_engine(MediaEngine::default()).with_setting_engine(setting).build();
        let rtc_config = RTCConfiguration {
            ice_servers: ice_servers
                .into_iter()
                .map(|s| RTCIceServer {
                    urls: s.urls,
                    username: s.username.unwrap_or_default(),
                    credential: s.credential.unwrap_or_default(),
                })
                .collect(),
            ..Default::default()
        };
        let pc = Arc::new(api.new_peer_connection(rtc_config).await.map_err(|e| ClientError::Connect(e.to_string()))?);
        let (cand_tx, mut cand_rx) = mpsc::unbounded_channel::<IceCandidate>();
        pc.on_ice_candidate(Box::new(move |c: Option<RTCIceCandidate>| {
            if let Some(init) = c.and_then(|c| c.to_json().ok()) {
                let _ = cand_tx.send(IceCandidate {
                    candidate: init.candidate,
                    sdp_mid: init.sdp_mid,
                    sdp_mline_index: init.sdp_mline_index,
                    username_fragment: init.username_fragment,
                });
            }
            Box::pin(async {})
        }));
        let dc = pc.create_data_channel(dcp::LABEL, None).await.map_err(|e| ClientError::Connect(e.to_string()))?;
        let (open_tx, mut open_rx) = oneshot::channel();
        let dc2 = dc.clone();
        dc.on_open(Box::new(move || {
            Box::pin(async move {
                let _ = open_tx.send(dc2.detach().await);
            })
        }));
        let offer = pc.create_offer(None).await.map_err(|e| ClientError::Connect(e.to_string()))?;
        pc.set_local_description(offer).await.map_err(|e| ClientError::Connect(e.to_string()))?;
        let sdp = pc.local_description().await.map(|d| d.sdp).unwrap_or_default();
        send_json(&mut ws, &SignalIn::Offer { sdp }).await?;
        let mut pending: Vec<RTCIceCandidateInit> = Vec::new();
        let mut answered = false;
        let raw = loop {
            tokio::select! {
                opened = &mut open_rx => match opened {
                    Ok(Ok(raw)) => break raw,
                    Ok(Err(e)) => return Err(ClientError::Connect(e.to_string())),
                    Err(_) => return Err(ClientError::Connect("the data channel never opened".into())),
                },
                Some(c) = cand_rx.recv() => send_json(&mut ws, &SignalIn::Ice { candidate: c }).await?,
                s = next_signal(&mut ws) => match s? {
                    SignalOut::Answer { sdp } => {
                        let desc = RTCSessionDescription::answer(sdp).map_err(|e| ClientError::Protocol(e.to_string()))?;
                        pc.set_remote_description(desc).await.map_err(|e| ClientError::Protocol(e.to_string()))?;
                        answered = true;
                        for c in pending.drain(..) {
                            let _ = pc.add_ice_candidate(c).await;
                        }
                    }
                    SignalOut::Ice { candidate } => {
                        if answered {
                            let _ = pc.add_ice_candidate(to_init(candidate)).await;
                        } else {
                            pending.push(to_init(candidate));
                        }
                    }
                    SignalOut::Error { code, message } => return Err(server_error(&code, message)),
                    SignalOut::Welcome { .. } | SignalOut::Pong => {}
                },
            }
        };
        // Keep signalling alive (late candidates, pings) for as long as the connection lasts.
        let pc2 = pc.clone();
        let signalling = tokio::spawn(async move {
            loop {
                tokio::select! {
                    Some(c) = cand_rx.recv() => {
                        if send_json(&mut ws, &SignalIn::Ice { candidate: c }).await.is_err() { return; }
                    }
                    s = next_signal(&mut ws) => match s {
                        Ok(SignalOut::Ice { candidate }) => { let _ = pc2.add_ice_candidate(to_init(candidate)).await; }
                        Ok(_) => {}
                        Err(_) => return,
                    },
                }
            }
        });
        let (tx, incoming) = mpsc::channel(1024);
        let reader = tokio::spawn(read_channel(raw.clone(), tx));
        let low = Arc::new(Notify::new());
        raw.set_buffered_amount_low_threshold(dcp::BUFFERED_LOW);
        let low2 = low.clone();
        raw.on_buffered_amount_low(Box::new(move || {
            low2.notify_waiters();
            Box::pin(async {})
        }));
        Ok(Self { pc, dc: raw, incoming, low, reader, signalling, stall_timeout: config.heartbeat_timeout })
    }

    /// Sends one v1 message in fragments, waiting while the channel's buffer is above the
    /// high-water mark.
    pub async fn send_message(&mut self, message: &[u8]) -> Result<(), String> {
        for part in dcp::fragment(message) {
            self.send_raw(part).await?;
        }
        Ok(())
    }

    /// Sends one data-channel message as it is (tests use it to break the framing).
    pub async fn send_raw(&mut self, dc_message: Vec<u8>) -> Result<(), String> {
        let deadline = tokio::time::Instant::now() + self.stall_timeout;
        while self.dc.buffered_amount() > dcp::BUFFERED_HIGH {
            let notified = self.low.notified();
            if self.dc.buffered_amount() <= dcp::BUFFERED_HIGH {
                break;
            }
            // The callback may fire between the check and the wait; poll as a backstop.
            let _ = tokio::time::timeout(Duration::from_millis(50), notified).await;
            if tokio::time::Instant::now() > deadline {
                return Err("the data channel's send buffer did not drain".into());
            }
        }
        self.dc.write_data_channel(&Bytes::from(dc_message), false).await.map(|_| ()).map_err(|e| e.to_string())
    }

    /// The next thing the server sent; `None` when the channel is gone. Cancel-safe.
    pub async fn recv(&mut self) -> Option<DcIncoming> {
        self.incoming.recv().await
    }

    /// Sends a `CLOSE` fragment with `code`, then closes the peer connection.
    pub async fn close(&mut self, code: u16, reason: &str) {
        let _ = self.dc.write_data_channel(&Bytes::from(dcp::close_message(code, reason)), false).await;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(1);
        while self.dc.buffered_amount() > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let _ = self.dc.close().await;
        let _ = self.pc.close().await;
    }
}

async fn next_signal(ws: &mut Socket) -> Result<SignalOut, ClientError> {
    loop {
        match ws.next().await {
            None => return Err(ClientError::Connect("signalling closed".into())),
            Some(Err(e)) => return Err(ClientError::Connect(e.to_string())),
            Some(Ok(Message::Text(t))) => match serde_json::from_str::<SignalOut>(&t) {
                Ok(s) => return Ok(s),
                Err(_) => continue, // unknown signalling messages are ignored
            },
            Some(Ok(Message::Close(frame))) => {
                let (code, reason) =
                    frame.map(|f| (u16::from(f.code), f.reason.to_string())).unwrap_or((1005, String::new()));
                return Err(ClientError::Closed { code, reason });
            }
            Some(Ok(_)) => {}
        }
    }
}

async fn read_channel(dc: Arc<DataChannel>, tx: mpsc::Sender<DcIncoming>) {
    let mut buf = vec![0u8; dcp::MAX_DC_MESSAGE_BYTES + 1];
    let mut reassembler = Reassembler::new(limits::MAX_SERVER_MESSAGE_BYTES);
    loop {
        let item = match dc.read_data_channel(&mut buf).await {
            Ok((0, _)) | Err(_) => return,
            Ok((n, _)) => match reassembler.push(&buf[..n]) {
                Ok(None) => continue,
                Ok(Some(Assembled::Message(m))) => DcIncoming::Message(Bytes::from(m)),
                Ok(Some(Assembled::Close(code, reason))) => DcIncoming::Closed(code, reason),
                Err(e) => DcIncoming::Broken(e.to_string()),
            },
        };
        let last = !matches!(item, DcIncoming::Message(_));
        if tx.send(item).await.is_err() || last {
            return;
        }
    }
}
