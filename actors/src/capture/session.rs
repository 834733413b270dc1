//! `CaptureSession`: the live state of one scan's stream on this node. It checks sequence
//! numbers, keeps every frame until it is durable, cuts frames into chunk objects for the
//! durable pipeline, acks what the pipeline reports durable, tells the phone to slow down
//! when the backlog grows, computes per-frame statistics and live progress, and finishes
//! the stream. It never touches a socket: it talks to the attached connection's outbox.
//! When the scan moves to another node (or this node drains) it hands over: closes the
//! connection, makes what it received durable, and stops.

use std::collections::VecDeque;
use std::sync::Arc;

use actix::prelude::*;
use bytes::{Bytes, BytesMut};
use coherency_protocol::ids::ScanId;
use coherency_protocol::scan::{close, Ack, Finished, Progress, ServerMsg, Welcome, PROTOCOL_VERSION};
use sha2::{Digest, Sha256};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use super::error::CaptureError;
use super::messages::{
    Attach, AttachOutcome, ConnId, Detach, Finish, Frame, GetSnapshot, HandOver, HandOverReason, Outbound, Outbox,
    SessionPhase, SessionSnapshot, Shutdown,
};
use super::registry::{CaptureDeps, SessionStopped};
use super::writer::{spawn_durable, ChunkJob, DurablePipeline, QualityQueue, WriterDeps, WriterEvent};
use crate::retry::{isolated, with_retry};
use crate::stats::{CaptureStats, FrameVerdict};
use crate::store::{
    process_finished, ChunkSpec, FinishedScan, FrameRow, QualityRecord, ScanState, ScanStatus, StoreError, StoreKind,
};

/// Progress is sent while a frame arrived within this long.
const FLOWING: std::time::Duration = std::time::Duration::from_secs(1);
/// Longest wait at finish for live fusion to process the frames still queued, before the
/// final `progress` goes out with the figures it has (a full mailbox is about 24 frames
/// of fusion, well under this on an idle node).
const SETTLE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

struct Conn {
    id: ConnId,
    outbox: Outbox,
    last_ack: u64,
}

struct Held {
    seq: u64,
    raw: Bytes,
    sha256: [u8; 32],
    captured_at_us: u64,
    received_at: Instant,
}

#[derive(Default)]
struct Live {
    last: Option<FrameVerdict>,
    quality: Option<f32>,
}

/// One scan's capture session. Started by [`super::CaptureRegistry`].
pub struct CaptureSession {
    scan_id: ScanId,
    instance: u64,
    deps: Arc<CaptureDeps>,
    registry: Option<Recipient<SessionStopped>>,
    phase: SessionPhase,
    status: Option<ScanStatus>,
    conn: Option<Conn>,
    /// Every frame `1..=durable_seq` is durable.
    durable_seq: u64,
    /// Highest seq accepted; `received_seq + 1` is expected next.
    received_seq: u64,
    /// Highest seq handed to the durable pipeline.
    submitted_seq: u64,
    /// Highest seq whose statistics were computed (frames are judged once, even if resent
    /// after a storage failure).
    fused_seq: u64,
    frames_fused: u64,
    /// Frames `durable_seq + 1 ..= received_seq`, in order.
    backlog: VecDeque<Held>,
    backlog_bytes: usize,
    generation: u64,
    pipeline: Option<DurablePipeline>,
    /// The pipeline's queue was full: wait for a `Durable` before submitting again.
    queue_blocked: bool,
    /// Pending when a partial chunk waits for a non-zero `flush_window`.
    flush_timer: Option<SpawnHandle>,
    slowed: bool,
    flow_waiters: Vec<oneshot::Sender<Result<(), CaptureError>>>,
    quality: QualityQueue,
    stats: CaptureStats,
    live: Live,
    /// The scan's incremental fusion (created with the first frame this session judges).
    fusion: Option<crate::reconstruction::LiveScan>,
    /// Live fusion was full when this session first judged a frame: fused at finish.
    live_refused: bool,
    last_frame_at: Option<Instant>,
    last_activity: Instant,
    finalizing: bool,
    /// Handing over: no connection is taken any more, the backlog is being made durable
    /// and the session stops once it is (or `handover_timeout` passed).
    handing_over: bool,
    /// Who waits for the handover to end (answered with the durable seq).
    handover_waiters: Vec<oneshot::Sender<u64>>,
}

impl CaptureSession {
    pub(crate) fn new(
        scan_id: ScanId,
        instance: u64,
        deps: Arc<CaptureDeps>,
        registry: Option<Recipient<SessionStopped>>,
    ) -> Self {
        let cfg = &deps.config;
        let quality = QualityQueue::spawn(
            scan_id,
            deps.quality.clone(),
            deps.metrics.clone(),
            cfg.quality_retry,
            cfg.quality_queue_cap,
            cfg.quality_batch,
            cfg.quality_linger,
        );
        Self {
            scan_id,
            instance,
            registry,
            phase: SessionPhase::Unloaded,
            status: None,
            conn: None,
            durable_seq: 0,
            received_seq: 0,
            submitted_seq: 0,
            fused_seq: 0,
            frames_fused: 0,
            backlog: VecDeque::new(),
            backlog_bytes: 0,
            generation: 0,
            pipeline: None,
            queue_blocked: false,
            flush_timer: None,
            slowed: false,
            flow_waiters: Vec::new(),
            quality,
            stats: CaptureStats::default(),
            live: Live::default(),
            fusion: None,
            live_refused: false,
            last_frame_at: None,
            last_activity: Instant::now(),
            finalizing: false,
            handing_over: false,
            handover_waiters: Vec::new(),
            deps,
        }
    }

    fn is_current(&self, conn_id: ConnId) -> bool {
        self.conn.as_ref().is_some_and(|c| c.id == conn_id)
    }

    // --- talking to the connection -----------------------------------------------------

    /// Queues a message the phone must get; a connection whose outbox is full is dropped
    /// (its pump sees the channel close and closes the socket with 1013).
    fn send(&mut self, msg: ServerMsg) {
        let Some(conn) = &self.conn else { return };
        if let ServerMsg::Ack(a) = &msg {
            if a.up_to <= conn.last_ack {
                return;
            }
        }
        let up_to = if let ServerMsg::Ack(a) = &msg { Some(a.up_to) } else { None };
        match conn.outbox.try_send(Outbound::Msg(msg)) {
            Ok(()) => {
                if let (Some(up_to), Some(conn)) = (up_to, self.conn.as_mut()) {
                    conn.last_ack = up_to;
                }
            }
            Err(_) => {
                tracing::warn!("outbox full or closed, dropping the connection");
                self.conn = None;
                self.release_waiters(Err(CaptureError::Stopped));
            }
        }
    }

    /// Queues a message the phone may miss (progress), keeping room for the others.
    fn send_lossy(&mut self, msg: ServerMsg) {
        if let Some(conn) = &self.conn {
            if conn.outbox.capacity() * 4 > conn.outbox.max_capacity() {
                let _ = conn.outbox.try_send(Outbound::Msg(msg));
            }
        }
    }

    /// Ends the attached connection with an error and its close code.
    fn fail_conn(&mut self, err: &CaptureError, seq: Option<u64>) {
        if let Some(conn) = self.conn.take() {
            let mut msg = err.to_error_msg();
            msg.seq = seq;
            let _ = conn.outbox.try_send(Outbound::Msg(ServerMsg::Error(msg)));
            let _ = conn.outbox.try_send(Outbound::Close(err.close_code()));
        }
        self.release_waiters(Err(err.clone()));
    }

    fn release_waiters(&mut self, res: Result<(), CaptureError>) {
        for w in self.flow_waiters.drain(..) {
            let _ = w.send(res.clone());
        }
    }

    /// The reply to a frame: now, or once the backlog has drained (the pump waits for it
    /// before reading the socket again).
    fn flow_reply(&mut self) -> Response<Result<(), CaptureError>> {
        if !self.slowed {
            return Response::reply(Ok(()));
        }
        let (tx, rx) = oneshot::channel();
        self.flow_waiters.push(tx);
        Response::fut(async move { rx.await.unwrap_or(Err(CaptureError::Stopped)) })
    }

    fn update_flow(&mut self) {
        let cfg = &self.deps.config;
        let (frames, bytes) = (self.backlog.len(), self.backlog_bytes);
        if !self.slowed && (frames >= cfg.slow_above_frames || bytes >= cfg.slow_above_bytes) {
            self.slowed = true;
            tracing::debug!(frames, bytes, "backlog high, slowing the phone");
            self.deps.metrics.flow(self.scan_id, true);
            self.send(ServerMsg::Slow);
        } else if self.slowed && frames <= cfg.resume_below_frames && bytes <= cfg.resume_below_bytes {
            self.slowed = false;
            self.deps.metrics.flow(self.scan_id, false);
            self.send(ServerMsg::Resume);
            self.release_waiters(Ok(()));
        }
        self.deps.metrics.durable_backlog(self.scan_id, frames, bytes);
    }

    // --- loading and attaching ---------------------------------------------------------

    fn apply_loaded(&mut self, state: ScanState) {
        self.status = Some(state.status);
        self.durable_seq = state.acked_seq;
        self.received_seq = state.acked_seq;
        self.submitted_seq = state.acked_seq;
        self.fused_seq = state.acked_seq;
        self.phase = match state.status {
            ScanStatus::Created | ScanStatus::Streaming => SessionPhase::Streaming,
            ScanStatus::Processing | ScanStatus::Complete => SessionPhase::Finished,
            ScanStatus::Failed | ScanStatus::Cancelled => SessionPhase::Closed,
        };
    }

    fn finished_msg(&self) -> Finished {
        Finished {
            frames: self.durable_seq,
            last_seq: self.durable_seq,
            status: self.status.unwrap_or(ScanStatus::Processing).as_str().to_owned(),
        }
    }

    fn attach_loaded(&mut self, msg: Attach) -> Result<AttachOutcome, CaptureError> {
        match self.phase {
            SessionPhase::Unloaded => Err(CaptureError::Internal),
            SessionPhase::Closed => {
                let err = CaptureError::NotStreamable("the scan failed or was cancelled");
                let _ = msg.outbox.try_send(Outbound::Msg(ServerMsg::Error(err.to_error_msg())));
                let _ = msg.outbox.try_send(Outbound::Close(err.close_code()));
                Err(err)
            }
            SessionPhase::Finished => {
                let fin = self.finished_msg();
                let _ = msg.outbox.try_send(Outbound::Msg(ServerMsg::Finished(fin.clone())));
                let _ = msg.outbox.try_send(Outbound::Close(close::NORMAL));
                Ok(AttachOutcome::Finished(fin))
            }
            SessionPhase::Streaming | SessionPhase::Finishing { .. } => {
                if self.conn.as_ref().is_some_and(|c| c.id != msg.conn_id) {
                    tracing::info!("a new connection takes over the scan");
                    self.fail_conn(&CaptureError::Superseded, None);
                }
                // A phone that lost its connection while finishing resends its frames and
                // `finish` again.
                self.phase = SessionPhase::Streaming;
                if let Some(resume) = msg.resume_from {
                    if resume > self.durable_seq {
                        tracing::warn!(resume, acked = self.durable_seq, "phone claims more acks than are durable");
                    }
                }
                let welcome = Welcome {
                    version: PROTOCOL_VERSION,
                    scan_id: self.scan_id,
                    acked: self.durable_seq,
                    next: self.received_seq + 1,
                    window: self.deps.config.window,
                };
                self.conn = Some(Conn { id: msg.conn_id, outbox: msg.outbox, last_ack: self.durable_seq });
                self.send(ServerMsg::Welcome(welcome.clone()));
                if self.slowed {
                    self.send(ServerMsg::Slow);
                }
                Ok(AttachOutcome::Streaming(welcome))
            }
        }
    }

    // --- frames ------------------------------------------------------------------------

    fn accept(&mut self, frame: &coherency_protocol::scan::DepthFrame, raw: Bytes, ctx: &mut Context<Self>) {
        let seq = frame.seq;
        let now = Instant::now();
        self.received_seq = seq;
        self.backlog_bytes += raw.len();
        self.backlog.push_back(Held {
            seq,
            sha256: Sha256::digest(&raw).into(),
            raw,
            captured_at_us: frame.captured_at_us,
            received_at: now,
        });
        self.last_frame_at = Some(now);
        super::activity::frame_accepted();
        if seq > self.fused_seq {
            self.observe(frame);
            self.fused_seq = seq;
        }
        self.update_flow();
        self.try_flush(ctx);
    }

    /// Judges a frame once and hands it to the scan's reconstruction actor (which decodes
    /// and fuses it on its own arbiter, never here).
    fn observe(&mut self, frame: &coherency_protocol::scan::DepthFrame) {
        let v = self.stats.observe_frame(frame);
        if self.deps.config.live_fusion && self.fusion.is_none() && !self.live_refused {
            // Earlier frames were received by another session: this one cannot fuse them.
            let from_start = self.fused_seq == 0;
            let max = self.deps.config.live_fusion_max_scans;
            self.fusion = self.deps.reconstruction.start_live(from_start, max);
            self.live_refused = self.fusion.is_none();
        }
        if let Some(fusion) = &self.fusion {
            fusion.push(frame.clone());
        } else if v.accepted {
            self.frames_fused += 1;
        }
        self.live.quality = Some(match self.live.quality {
            Some(q) => 0.8 * q + 0.2 * v.quality,
            None => v.quality,
        });
        let record = QualityRecord::of(self.scan_id, frame, &v);
        self.quality.push(record, &*self.deps.metrics);
        self.live.last = Some(v);
    }

    fn progress(&mut self) -> Progress {
        let fusion = self.fusion.as_ref().map(|f| f.progress());
        if let Some(f) = &fusion {
            self.frames_fused = f.frames_fused;
        }
        let last = self.live.last.as_ref();
        let mut warnings: Vec<String> =
            last.map(|v| v.warnings.iter().map(|w| (*w).to_owned()).collect()).unwrap_or_default();
        for w in fusion.iter().flat_map(|f| f.warnings.iter()) {
            if !warnings.iter().any(|x| x == w) {
                warnings.push((*w).to_owned());
            }
        }
        Progress {
            frames_received: self.received_seq,
            frames_fused: self.frames_fused,
            coverage: fusion.as_ref().map_or(0.0, |f| f.coverage),
            quality: self.live.quality.unwrap_or(0.0),
            valid_fraction: last.map_or(0.0, |v| v.depth.valid_fraction),
            distance_m: last.and_then(|v| v.depth.region_median_m),
            pose_jump_m: last.and_then(|v| v.jump).map(|j| j.translation_mm / 1000.0),
            warnings,
        }
    }

    // --- the durable pipeline ----------------------------------------------------------

    fn drop_pipeline(&mut self) {
        self.pipeline = None;
        self.submitted_seq = self.durable_seq;
        self.queue_blocked = false;
    }

    /// Cuts chunks from the frames not yet submitted. A full chunk goes at once, and so
    /// does everything when the stream is finishing. Otherwise, with the default zero
    /// `flush_window` (group commit), a partial chunk goes as soon as nothing of this scan
    /// is in flight in the durable pipeline: the first frame after a quiet spell is written
    /// alone and at once, and the frames that arrive while a chunk's write and commit are in
    /// flight gather into the next chunk, so the chunk size follows the store's speed and
    /// no frame waits for a timer. With a non-zero `flush_window` a partial chunk waits
    /// until its oldest frame is that old.
    fn try_flush(&mut self, ctx: &mut Context<Self>) {
        let cfg = self.deps.config.clone();
        while !self.queue_blocked && self.received_seq > self.submitted_seq {
            let start = (self.submitted_seq - self.durable_seq) as usize;
            let mut n = 0usize;
            let mut bytes = 0usize;
            for h in self.backlog.range(start..) {
                if n == cfg.chunk_max_frames || (n > 0 && bytes + h.raw.len() > cfg.chunk_max_bytes) {
                    break;
                }
                n += 1;
                bytes += h.raw.len();
            }
            let full = start + n < self.backlog.len() || n >= cfg.chunk_max_frames;
            let due = if cfg.flush_window.is_zero() {
                self.submitted_seq == self.durable_seq
            } else {
                self.backlog[start].received_at.elapsed() >= cfg.flush_window
            };
            let force = due || self.handing_over || matches!(self.phase, SessionPhase::Finishing { .. });
            if !full && !force {
                break;
            }
            if self.pipeline.is_none() {
                self.generation += 1;
                let deps = WriterDeps {
                    frames: self.deps.frames.clone(),
                    index: self.deps.index.clone(),
                    metrics: self.deps.metrics.clone(),
                    retry: cfg.durable_retry,
                    queue: cfg.writer_queue_chunks,
                };
                self.pipeline = Some(spawn_durable(self.generation, deps, ctx.address().recipient()));
            }
            let job = self.build_job(start, n, bytes);
            let last = job.spec.last_seq;
            let Some(pipeline) = &self.pipeline else { break };
            match pipeline.tx.try_send(job) {
                Ok(()) => self.submitted_seq = last,
                Err(mpsc::error::TrySendError::Full(_)) => self.queue_blocked = true,
                Err(mpsc::error::TrySendError::Closed(_)) => {
                    tracing::warn!("durable pipeline gone, restarting it");
                    self.drop_pipeline();
                    break;
                }
            }
        }
        if !cfg.flush_window.is_zero()
            && self.received_seq > self.submitted_seq
            && !self.queue_blocked
            && self.flush_timer.is_none()
        {
            let start = (self.submitted_seq - self.durable_seq) as usize;
            let waited = self.backlog[start].received_at.elapsed();
            let wait = cfg.flush_window.saturating_sub(waited).max(std::time::Duration::from_millis(1));
            self.flush_timer = Some(ctx.run_later(wait, |act, ctx| {
                act.flush_timer = None;
                act.try_flush(ctx);
            }));
        }
    }

    /// The chunk of backlog frames `start..start + n` (`bytes` long). A one-frame chunk — the
    /// usual case while the store keeps up, see [`Self::try_flush`] — is the frame's own
    /// bytes and digest: no copy, and the blob store does not hash it again.
    fn build_job(&self, start: usize, n: usize, bytes: usize) -> ChunkJob {
        let first = &self.backlog[start];
        let spec = ChunkSpec { scan_id: self.scan_id, first_seq: first.seq, last_seq: first.seq + n as u64 - 1 };
        let row = |h: &Held, offset: u64| FrameRow {
            seq: h.seq,
            offset,
            length: h.raw.len() as u64,
            sha256: h.sha256,
            captured_at_us: h.captured_at_us,
        };
        if n == 1 {
            return ChunkJob {
                spec,
                bytes: first.raw.clone(),
                sha256: Some(first.sha256),
                rows: vec![row(first, 0)],
                oldest: first.received_at,
            };
        }
        let mut buf = BytesMut::with_capacity(bytes);
        let mut rows = Vec::with_capacity(n);
        for h in self.backlog.range(start..start + n) {
            rows.push(row(h, buf.len() as u64));
            buf.extend_from_slice(&h.raw);
        }
        ChunkJob { spec, bytes: buf.freeze(), sha256: None, rows, oldest: first.received_at }
    }

    fn on_durable(&mut self, up_to: u64, ctx: &mut Context<Self>) {
        self.queue_blocked = false;
        if up_to > self.durable_seq {
            while self.backlog.front().is_some_and(|h| h.seq <= up_to) {
                if let Some(h) = self.backlog.pop_front() {
                    self.backlog_bytes -= h.raw.len();
                }
            }
            self.durable_seq = up_to;
            self.send(ServerMsg::Ack(Ack { up_to }));
        }
        self.update_flow();
        self.try_flush(ctx);
        self.check_finish(ctx);
        self.check_handed_over(ctx);
    }

    /// The durable path failed for good. Frames that are not durable are forgotten — the
    /// phone still holds them, unacked, and resends them after it resumes — and the
    /// connection is told to come back later.
    fn on_durable_failed(&mut self, error: &StoreError, ctx: &mut Context<Self>) {
        tracing::error!(error = %error, durable = self.durable_seq, "durable write failed, dropping the connection");
        self.drop_pipeline();
        if let Some(t) = self.flush_timer.take() {
            ctx.cancel_future(t);
        }
        self.backlog.clear();
        self.backlog_bytes = 0;
        self.received_seq = self.durable_seq;
        self.submitted_seq = self.durable_seq;
        if matches!(self.phase, SessionPhase::Finishing { .. }) {
            self.phase = SessionPhase::Streaming;
        }
        if self.slowed {
            self.slowed = false;
            self.deps.metrics.flow(self.scan_id, false);
        }
        let err = if error.is_transient() { CaptureError::Unavailable } else { CaptureError::Internal };
        self.fail_conn(&err, None);
        self.deps.metrics.durable_backlog(self.scan_id, 0, 0);
        self.check_handed_over(ctx);
    }

    // --- finishing ---------------------------------------------------------------------

    fn check_finish(&mut self, ctx: &mut Context<Self>) {
        let SessionPhase::Finishing { last } = self.phase else { return };
        if self.durable_seq < last || self.finalizing {
            return;
        }
        self.finalizing = true;
        let index = self.deps.index.clone();
        let metrics = self.deps.metrics.clone();
        let retry = self.deps.config.control_retry;
        let scan_id = self.scan_id;
        let mark = async move {
            with_retry(
                &retry,
                || {
                    let index = index.clone();
                    isolated(async move { index.set_status(scan_id, ScanStatus::Processing).await })
                },
                |_, _| metrics.store_retry(StoreKind::Index),
            )
            .await
        };
        ctx.spawn(mark.into_actor(self).map(move |res, act, ctx| {
            act.finalizing = false;
            match res {
                Ok(()) => act.finish_stream(last, ctx),
                Err(e) => {
                    tracing::error!(error = %e, "could not mark the scan processing");
                    if matches!(act.phase, SessionPhase::Finishing { .. }) {
                        act.phase = SessionPhase::Streaming;
                    }
                    let err = if e.is_transient() { CaptureError::Unavailable } else { CaptureError::Internal };
                    act.fail_conn(&err, None);
                }
            }
            act.check_handed_over(ctx);
        }));
    }

    /// Every frame is durable and the scan is `processing`: acks the last frame, lets live
    /// fusion process what is still queued (at most [`SETTLE_TIMEOUT`]), then sends the one
    /// final `progress` (final fused count, coverage and guidance) and `finished`, and
    /// starts the finish hook. The session stays `finalizing` meanwhile, so a handover
    /// waits for the hook to start.
    fn finish_stream(&mut self, last: u64, ctx: &mut Context<Self>) {
        self.phase = SessionPhase::Finished;
        self.status = Some(ScanStatus::Processing);
        self.send(ServerMsg::Ack(Ack { up_to: last }));
        self.finalizing = true;
        let fusion = self.fusion.clone();
        let settle = async move {
            if let Some(f) = fusion {
                if tokio::time::timeout(SETTLE_TIMEOUT, f.settle()).await.is_err() {
                    tracing::debug!("live fusion did not settle in time; final progress from the latest figures");
                }
            }
        };
        ctx.spawn(settle.into_actor(self).map(move |(), act, ctx| {
            act.finalizing = false;
            act.end_stream(last);
            act.check_handed_over(ctx);
        }));
    }

    fn end_stream(&mut self, last: u64) {
        let p = self.progress();
        self.deps.observer.progress(self.scan_id, &p);
        self.send(ServerMsg::Progress(p));
        self.send(ServerMsg::Finished(self.finished_msg()));
        if let Some(conn) = self.conn.take() {
            let _ = conn.outbox.try_send(Outbound::Close(close::NORMAL));
        }
        self.release_waiters(Err(CaptureError::NotStreamable("the stream has finished")));
        // No record follows the last frame: the writer sends its partial bucket now rather
        // than when its linger is up, so the finish step finds every record in place.
        self.quality.close();
        tracing::info!(frames = last, "scan stream finished");
        self.on_finish(last);
    }

    /// Runs the finish hook (reconstruction, once that exists) on its own task, then
    /// records the outcome. The task outlives the session.
    fn on_finish(&self, last: u64) {
        let hook = self.deps.finish.clone();
        let index = self.deps.index.clone();
        let retry = self.deps.config.quality_retry;
        let scan = FinishedScan {
            scan_id: self.scan_id,
            last_seq: last,
            quality_dropped: self.quality.dropped(),
            live: self.fusion.clone(),
        };
        tokio::spawn(async move { process_finished(hook, index, &retry, scan).await });
    }

    // --- handing over ------------------------------------------------------------------

    /// Starts a handover: the connection goes, every received frame is submitted at once,
    /// and the session stops when they are durable or `handover_timeout` has passed. A
    /// finish already under way (the scan being marked processing) completes first.
    fn begin_handover(&mut self, reason: HandOverReason, ctx: &mut Context<Self>) {
        self.handing_over = true;
        tracing::info!(?reason, durable = self.durable_seq, received = self.received_seq, "handing the scan over");
        match reason {
            HandOverReason::Takeover => self.fail_conn(&CaptureError::Superseded, None),
            HandOverReason::Drain => {
                if let Some(conn) = self.conn.take() {
                    let _ = conn.outbox.try_send(Outbound::Close(close::GOING_AWAY));
                }
                self.release_waiters(Err(CaptureError::Stopped));
            }
        }
        if let Some(t) = self.flush_timer.take() {
            ctx.cancel_future(t);
        }
        self.try_flush(ctx);
        ctx.run_later(self.deps.config.handover_timeout, |act, ctx| {
            if !act.backlog.is_empty() {
                tracing::warn!(
                    durable = act.durable_seq,
                    received = act.received_seq,
                    "handover timed out; the phone resends what is not durable"
                );
            }
            act.handed_over(ctx);
        });
        self.check_handed_over(ctx);
    }

    fn check_handed_over(&mut self, ctx: &mut Context<Self>) {
        if self.handing_over && self.backlog.is_empty() && !self.finalizing {
            self.handed_over(ctx);
        }
    }

    fn handed_over(&mut self, ctx: &mut Context<Self>) {
        for w in self.handover_waiters.drain(..) {
            let _ = w.send(self.durable_seq);
        }
        ctx.stop();
    }

    fn tick(&mut self, ctx: &mut Context<Self>) {
        let flowing = self.last_frame_at.is_some_and(|t| t.elapsed() < FLOWING);
        if flowing && matches!(self.phase, SessionPhase::Streaming | SessionPhase::Finishing { .. }) {
            let p = self.progress();
            self.deps.observer.progress(self.scan_id, &p);
            self.send_lossy(ServerMsg::Progress(p));
        }
        let cfg = &self.deps.config;
        let timeout = match self.phase {
            SessionPhase::Finished | SessionPhase::Closed => cfg.finished_idle_timeout,
            _ => cfg.idle_timeout,
        };
        if self.conn.is_none() && self.backlog.is_empty() && !self.finalizing && self.last_activity.elapsed() >= timeout
        {
            tracing::debug!("idle, stopping");
            ctx.stop();
        }
    }
}

impl Actor for CaptureSession {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        self.deps.metrics.sessions(1);
        ctx.run_interval(self.deps.config.progress_every, |act, ctx| act.tick(ctx));
    }

    fn stopped(&mut self, _ctx: &mut Self::Context) {
        self.deps.metrics.sessions(-1);
        self.deps.metrics.durable_backlog(self.scan_id, 0, 0);
        self.release_waiters(Err(CaptureError::Stopped));
        for w in self.handover_waiters.drain(..) {
            let _ = w.send(self.durable_seq);
        }
        if let Some(r) = &self.registry {
            r.do_send(SessionStopped { scan_id: self.scan_id, instance: self.instance });
        }
    }
}

impl Handler<Attach> for CaptureSession {
    type Result = AtomicResponse<Self, Result<AttachOutcome, CaptureError>>;

    #[tracing::instrument(skip_all, fields(scan_id = %self.scan_id, conn = msg.conn_id.0))]
    fn handle(&mut self, msg: Attach, _ctx: &mut Context<Self>) -> Self::Result {
        self.last_activity = Instant::now();
        if self.handing_over {
            // The registry has forgotten this session: `attach` starts a new one.
            return AtomicResponse::new(Box::pin(fut::ready(Err(CaptureError::Stopped))));
        }
        if self.phase != SessionPhase::Unloaded {
            let res = self.attach_loaded(msg);
            return AtomicResponse::new(Box::pin(fut::ready(res)));
        }
        let index = self.deps.index.clone();
        let metrics = self.deps.metrics.clone();
        let retry = self.deps.config.control_retry;
        let scan_id = self.scan_id;
        let load = async move {
            let call = |status: Option<ScanStatus>| {
                let index = index.clone();
                let metrics = metrics.clone();
                async move {
                    with_retry(
                        &retry,
                        || {
                            let index = index.clone();
                            isolated(async move {
                                match status {
                                    None => index.load_scan(scan_id).await,
                                    Some(s) => index
                                        .set_status(scan_id, s)
                                        .await
                                        .map(|()| ScanState { status: s, acked_seq: 0 }),
                                }
                            })
                        },
                        |_, _| metrics.store_retry(StoreKind::Index),
                    )
                    .await
                }
            };
            let state = call(None).await?;
            if state.status == ScanStatus::Created {
                call(Some(ScanStatus::Streaming)).await?;
                return Ok(ScanState { status: ScanStatus::Streaming, ..state });
            }
            Ok(state)
        };
        AtomicResponse::new(Box::pin(load.into_actor(self).map(
            move |res: Result<ScanState, StoreError>, act, _ctx| match res {
                Ok(state) => {
                    act.apply_loaded(state);
                    act.attach_loaded(msg)
                }
                Err(e) => {
                    tracing::error!(error = %e, "could not load the scan");
                    let err = if e.is_transient() { CaptureError::Unavailable } else { CaptureError::Internal };
                    let _ = msg.outbox.try_send(Outbound::Msg(ServerMsg::Error(err.to_error_msg())));
                    let _ = msg.outbox.try_send(Outbound::Close(err.close_code()));
                    Err(err)
                }
            },
        )))
    }
}

impl Handler<Frame> for CaptureSession {
    type Result = Response<Result<(), CaptureError>>;

    #[tracing::instrument(skip_all, fields(scan_id = %self.scan_id, seq = msg.frame.seq))]
    fn handle(&mut self, msg: Frame, ctx: &mut Context<Self>) -> Self::Result {
        self.last_activity = Instant::now();
        if !self.is_current(msg.conn_id) {
            return Response::reply(Err(CaptureError::Superseded));
        }
        let seq = msg.frame.seq;
        match self.phase {
            SessionPhase::Streaming => {}
            SessionPhase::Finishing { .. } | SessionPhase::Finished | SessionPhase::Closed | SessionPhase::Unloaded => {
                let err = CaptureError::NotStreamable("a frame arrived after finish");
                self.fail_conn(&err, Some(seq));
                return Response::reply(Err(err));
            }
        }
        if seq <= self.received_seq {
            // A duplicate, normal after a reconnection: dropped silently.
            return self.flow_reply();
        }
        if seq != self.received_seq + 1 {
            let err = CaptureError::SequenceGap { expected: self.received_seq + 1, got: seq };
            tracing::info!(expected = self.received_seq + 1, "sequence gap");
            self.fail_conn(&err, Some(seq));
            return Response::reply(Err(err));
        }
        self.accept(&msg.frame, msg.raw, ctx);
        self.flow_reply()
    }
}

impl Handler<Finish> for CaptureSession {
    type Result = Result<(), CaptureError>;

    #[tracing::instrument(skip_all, fields(scan_id = %self.scan_id, last = msg.last))]
    fn handle(&mut self, msg: Finish, ctx: &mut Context<Self>) -> Self::Result {
        self.last_activity = Instant::now();
        if !self.is_current(msg.conn_id) {
            return Err(CaptureError::Superseded);
        }
        match self.phase {
            SessionPhase::Streaming | SessionPhase::Finishing { .. } => {
                if msg.last != self.received_seq {
                    let err = CaptureError::SequenceGap { expected: self.received_seq, got: msg.last };
                    self.fail_conn(&err, Some(msg.last));
                    return Err(err);
                }
                self.phase = SessionPhase::Finishing { last: msg.last };
                self.try_flush(ctx);
                self.check_finish(ctx);
                Ok(())
            }
            SessionPhase::Finished | SessionPhase::Closed | SessionPhase::Unloaded => {
                let err = CaptureError::NotStreamable("the stream is not open");
                self.fail_conn(&err, None);
                Err(err)
            }
        }
    }
}

impl Handler<Detach> for CaptureSession {
    type Result = ();

    #[tracing::instrument(skip_all, fields(scan_id = %self.scan_id, conn = msg.conn_id.0))]
    fn handle(&mut self, msg: Detach, _ctx: &mut Context<Self>) {
        self.last_activity = Instant::now();
        if self.is_current(msg.conn_id) {
            self.conn = None;
            self.release_waiters(Err(CaptureError::Stopped));
        }
    }
}

impl Handler<WriterEvent> for CaptureSession {
    type Result = ();

    #[tracing::instrument(skip_all, fields(scan_id = %self.scan_id))]
    fn handle(&mut self, msg: WriterEvent, ctx: &mut Context<Self>) {
        self.last_activity = Instant::now();
        let current = self.pipeline.as_ref().map(|p| p.generation);
        match msg {
            WriterEvent::Durable { generation, up_to } if Some(generation) == current => self.on_durable(up_to, ctx),
            WriterEvent::Failed { generation, error } if Some(generation) == current => {
                self.on_durable_failed(&error, ctx)
            }
            WriterEvent::Crashed { generation } if Some(generation) == current => {
                tracing::error!("durable writer crashed, restarting it");
                self.drop_pipeline();
                self.try_flush(ctx);
            }
            _ => {}
        }
    }
}

impl Handler<GetSnapshot> for CaptureSession {
    type Result = MessageResult<GetSnapshot>;

    fn handle(&mut self, _msg: GetSnapshot, _ctx: &mut Context<Self>) -> Self::Result {
        MessageResult(SessionSnapshot {
            phase: self.phase,
            status: self.status.map(|status| ScanState { status, acked_seq: self.durable_seq }),
            durable_seq: self.durable_seq,
            received_seq: self.received_seq,
            backlog_frames: self.backlog.len(),
            backlog_bytes: self.backlog_bytes,
            slowed: self.slowed,
            conn: self.conn.as_ref().map(|c| c.id),
            quality_queue: self.quality.len(),
            quality_dropped: self.quality.dropped(),
            frames_fused: self.fusion.as_ref().map_or(self.frames_fused, |f| f.progress().frames_fused),
        })
    }
}

impl Handler<HandOver> for CaptureSession {
    type Result = Response<u64>;

    #[tracing::instrument(skip_all, fields(scan_id = %self.scan_id))]
    fn handle(&mut self, msg: HandOver, ctx: &mut Context<Self>) -> Self::Result {
        let (tx, rx) = oneshot::channel();
        self.handover_waiters.push(tx);
        if !self.handing_over {
            self.begin_handover(msg.reason, ctx);
        }
        let durable = self.durable_seq;
        Response::fut(async move { rx.await.unwrap_or(durable) })
    }
}

impl Handler<Shutdown> for CaptureSession {
    type Result = ();

    #[tracing::instrument(skip_all, fields(scan_id = %self.scan_id))]
    fn handle(&mut self, _msg: Shutdown, ctx: &mut Context<Self>) {
        if let Some(conn) = self.conn.take() {
            let _ = conn.outbox.try_send(Outbound::Close(close::GOING_AWAY));
        }
        ctx.stop();
    }
}
