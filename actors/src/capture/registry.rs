//! `CaptureRegistry`: one per node. Finds or starts the capture session of a scan, forgets
//! sessions when they stop (they stop themselves when idle), hands a scan's session over
//! when another node takes the scan, and drains them on shutdown.
//!
//! Ownership across nodes (a Redis lease per scan) is the server's job before it calls
//! [`attach`]; this registry only knows its own node. It publishes which scans have a
//! session actor running here ([`LiveSessions`]), which the server's lease renewer reads.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex};

use actix::prelude::*;
use coherency_protocol::ids::ScanId;

use super::config::CaptureConfig;
use super::error::CaptureError;
use super::messages::{Attach, AttachOutcome, ConnId, HandOver, HandOverReason, Outbox, Shutdown};
use super::session::CaptureSession;
use crate::metrics::{NoMetrics, SessionMetrics};
use crate::reconstruction::{ReconstructionPool, Reconstructor};
use crate::store::{FinishHook, FrameStore, NoObserver, NoReconstruction, ProgressObserver, QualitySink, ScanIndex};

/// Everything capture sessions need from the outside world.
#[derive(Clone)]
pub struct CaptureDeps {
    /// Raw frame chunks (blob store).
    pub frames: Arc<dyn FrameStore>,
    /// Frame index and scan status (PostgreSQL).
    pub index: Arc<dyn ScanIndex>,
    /// Per-frame quality records (MongoDB).
    pub quality: Arc<dyn QualitySink>,
    /// What runs once a stream has finished (reconstruction).
    pub finish: Arc<dyn FinishHook>,
    /// The arbiters live fusion runs on.
    pub reconstruction: ReconstructionPool,
    /// The node's reconstructions, when it runs them (also the finish hook then).
    pub reconstructor: Option<Reconstructor>,
    /// Where queue depths, lag and retries are reported.
    pub metrics: Arc<dyn SessionMetrics>,
    /// Who else hears live progress (the dashboard).
    pub observer: Arc<dyn ProgressObserver>,
    /// Tunables.
    pub config: CaptureConfig,
}

impl CaptureDeps {
    /// The three stores, with no reconstruction, no metrics and the default config.
    pub fn new(frames: Arc<dyn FrameStore>, index: Arc<dyn ScanIndex>, quality: Arc<dyn QualitySink>) -> Self {
        Self {
            frames,
            index,
            quality,
            finish: Arc::new(NoReconstruction),
            reconstruction: ReconstructionPool::default(),
            reconstructor: None,
            metrics: Arc::new(NoMetrics),
            observer: Arc::new(NoObserver),
            config: CaptureConfig::default(),
        }
    }

    /// Replaces the finish hook.
    pub fn with_finish_hook(mut self, hook: Arc<dyn FinishHook>) -> Self {
        self.finish = hook;
        self
    }

    /// Reconstructs finished scans with `r`, fusing live on its pool.
    pub fn with_reconstructor(mut self, r: Reconstructor) -> Self {
        self.reconstruction = r.pool().clone();
        self.finish = Arc::new(r.clone());
        self.reconstructor = Some(r);
        self
    }

    /// Replaces the pool live fusion runs on.
    pub fn with_reconstruction_pool(mut self, pool: ReconstructionPool) -> Self {
        self.reconstruction = pool;
        self
    }

    /// Replaces the metrics sink.
    pub fn with_metrics(mut self, metrics: Arc<dyn SessionMetrics>) -> Self {
        self.metrics = metrics;
        self
    }

    /// Replaces the progress observer.
    pub fn with_observer(mut self, observer: Arc<dyn ProgressObserver>) -> Self {
        self.observer = observer;
        self
    }

    /// Replaces the config.
    pub fn with_config(mut self, config: CaptureConfig) -> Self {
        self.config = config;
        self
    }
}

struct Entry {
    instance: u64,
    addr: Addr<CaptureSession>,
}

/// The scans whose session actor runs on this node, from its start until it has stopped
/// (including while it hands over or drains, after the registry has forgotten it).
/// Readable from outside the actor system without a message: the server's lease renewer
/// asks it every pass.
#[derive(Clone, Default)]
pub struct LiveSessions(Arc<Mutex<HashMap<ScanId, usize>>>);

impl LiveSessions {
    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<ScanId, usize>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether a session of `scan_id` runs here.
    pub fn contains(&self, scan_id: ScanId) -> bool {
        self.map().contains_key(&scan_id)
    }

    /// Scans with a running session.
    pub fn len(&self) -> usize {
        self.map().len()
    }

    /// Whether no session runs.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn started(&self, scan_id: ScanId) {
        *self.map().entry(scan_id).or_insert(0) += 1;
    }

    fn stopped(&self, scan_id: ScanId) {
        let mut map = self.map();
        if let Some(n) = map.get_mut(&scan_id) {
            *n -= 1;
            if *n == 0 {
                map.remove(&scan_id);
            }
        }
    }
}

/// The node's capture sessions, by scan.
pub struct CaptureRegistry {
    deps: Arc<CaptureDeps>,
    arbiters: Vec<ArbiterHandle>,
    sessions: HashMap<ScanId, Entry>,
    live: LiveSessions,
    next_instance: u64,
    draining: bool,
}

impl CaptureRegistry {
    /// A registry whose sessions run on the arbiter that starts it.
    pub fn new(deps: CaptureDeps) -> Self {
        Self {
            deps: Arc::new(deps),
            arbiters: Vec::new(),
            sessions: HashMap::new(),
            live: LiveSessions::default(),
            next_instance: 1,
            draining: false,
        }
    }

    /// Publishes the running sessions through `live` (the server keeps a clone).
    pub fn with_live(mut self, live: LiveSessions) -> Self {
        self.live = live;
        self
    }

    /// The running sessions, as [`Self::with_live`] set them.
    pub fn live(&self) -> LiveSessions {
        self.live.clone()
    }

    /// Spreads sessions over these arbiters (by scan id), so that many scans use several
    /// cores.
    pub fn with_arbiters(mut self, arbiters: Vec<ArbiterHandle>) -> Self {
        self.arbiters = arbiters;
        self
    }
}

impl Actor for CaptureRegistry {
    type Context = Context<Self>;
}

/// Returns the scan's session on this node, starting it if needed.
#[derive(Debug, Clone, Copy, Message)]
#[rtype(result = "Result<Addr<CaptureSession>, CaptureError>")]
pub struct GetOrStart {
    /// The scan.
    pub scan_id: ScanId,
}

impl Handler<GetOrStart> for CaptureRegistry {
    type Result = Result<Addr<CaptureSession>, CaptureError>;

    #[tracing::instrument(skip_all, fields(scan_id = %msg.scan_id))]
    fn handle(&mut self, msg: GetOrStart, ctx: &mut Context<Self>) -> Self::Result {
        if let Some(e) = self.sessions.get(&msg.scan_id) {
            if e.addr.connected() {
                return Ok(e.addr.clone());
            }
        }
        if self.draining {
            return Err(CaptureError::Draining);
        }
        let instance = self.next_instance;
        self.next_instance += 1;
        let deps = self.deps.clone();
        let registry = ctx.address().recipient();
        let scan_id = msg.scan_id;
        let make = move |_: &mut Context<CaptureSession>| CaptureSession::new(scan_id, instance, deps, Some(registry));
        let addr = if self.arbiters.is_empty() {
            CaptureSession::create(make)
        } else {
            let mut h = std::collections::hash_map::DefaultHasher::new();
            scan_id.hash(&mut h);
            let arbiter = &self.arbiters[(h.finish() % self.arbiters.len() as u64) as usize];
            CaptureSession::start_in_arbiter(arbiter, make)
        };
        tracing::debug!(instance, "capture session started");
        self.live.started(scan_id);
        self.sessions.insert(scan_id, Entry { instance, addr: addr.clone() });
        Ok(addr)
    }
}

/// A session has stopped (sent by the session itself).
#[derive(Debug, Clone, Copy, Message)]
#[rtype(result = "()")]
pub struct SessionStopped {
    /// The scan.
    pub scan_id: ScanId,
    /// Which start of the session (a newer one may already be registered).
    pub instance: u64,
}

impl Handler<SessionStopped> for CaptureRegistry {
    type Result = ();

    fn handle(&mut self, msg: SessionStopped, _ctx: &mut Context<Self>) {
        self.live.stopped(msg.scan_id);
        if self.sessions.get(&msg.scan_id).is_some_and(|e| e.instance == msg.instance) {
            self.sessions.remove(&msg.scan_id);
        }
    }
}

/// Ends one scan's session now (scan cancelled, lease lost). Returns whether one was running.
#[derive(Debug, Clone, Copy, Message)]
#[rtype(result = "bool")]
pub struct StopSession {
    /// The scan.
    pub scan_id: ScanId,
}

impl Handler<StopSession> for CaptureRegistry {
    type Result = bool;

    fn handle(&mut self, msg: StopSession, _ctx: &mut Context<Self>) -> bool {
        match self.sessions.remove(&msg.scan_id) {
            Some(e) => {
                e.addr.do_send(Shutdown);
                true
            }
            None => false,
        }
    }
}

/// Another node takes the scan: its session here hands over ([`HandOver`] with
/// [`HandOverReason::Takeover`]) and is forgotten at once, so a later attach on this node
/// starts afresh from storage. Answers the session's durable seq once it has stopped
/// writing, or `None` when no session was registered.
#[derive(Debug, Clone, Copy, Message)]
#[rtype(result = "Option<u64>")]
pub struct HandOverScan {
    /// The scan.
    pub scan_id: ScanId,
}

impl Handler<HandOverScan> for CaptureRegistry {
    type Result = ResponseFuture<Option<u64>>;

    fn handle(&mut self, msg: HandOverScan, ctx: &mut Context<Self>) -> Self::Result {
        self.handle(HandOverScanFor { scan_id: msg.scan_id, reason: HandOverReason::Takeover }, ctx)
    }
}

/// [`HandOverScan`] with a chosen [`HandOverReason`]: a scan whose lease this node lost or
/// could not renew in time leaves with [`HandOverReason::Drain`] when no other node asked
/// for it (the phone gets close 1001 and resumes wherever it reconnects).
#[derive(Debug, Clone, Copy, Message)]
#[rtype(result = "Option<u64>")]
pub struct HandOverScanFor {
    /// The scan.
    pub scan_id: ScanId,
    /// Why.
    pub reason: HandOverReason,
}

impl Handler<HandOverScanFor> for CaptureRegistry {
    type Result = ResponseFuture<Option<u64>>;

    #[tracing::instrument(skip_all, fields(scan_id = %msg.scan_id))]
    fn handle(&mut self, msg: HandOverScanFor, _ctx: &mut Context<Self>) -> Self::Result {
        let Some(e) = self.sessions.remove(&msg.scan_id) else { return Box::pin(async { None }) };
        let asked = e.addr.send(HandOver { reason: msg.reason });
        Box::pin(async move { asked.await.ok() })
    }
}

/// Stops taking new sessions and hands every running one over ([`HandOver`] with
/// [`HandOverReason::Drain`]: phones get close 1001 and resume elsewhere, frames received
/// are made durable first). Answers how many were running, once they have all stopped
/// writing (each within `CaptureConfig::handover_timeout`).
#[derive(Debug, Clone, Copy, Message)]
#[rtype(result = "usize")]
pub struct Drain;

impl Handler<Drain> for CaptureRegistry {
    type Result = ResponseFuture<usize>;

    fn handle(&mut self, _msg: Drain, _ctx: &mut Context<Self>) -> Self::Result {
        self.draining = true;
        let n = self.sessions.len();
        // Every request is queued now, so the sessions flush side by side.
        let asked: Vec<_> =
            self.sessions.drain().map(|(_, e)| e.addr.send(HandOver { reason: HandOverReason::Drain })).collect();
        Box::pin(async move {
            for a in asked {
                let _ = a.await;
            }
            n
        })
    }
}

/// The scans with a running session on this node.
#[derive(Debug, Clone, Copy, Message)]
#[rtype(result = "Vec<ScanId>")]
pub struct ListSessions;

impl Handler<ListSessions> for CaptureRegistry {
    type Result = MessageResult<ListSessions>;

    fn handle(&mut self, _msg: ListSessions, _ctx: &mut Context<Self>) -> Self::Result {
        MessageResult(self.sessions.keys().copied().collect())
    }
}

/// The node's reconstructions (`None` when the registry runs none): what a re-measurement
/// goes through.
#[derive(Debug, Clone, Copy, Message)]
#[rtype(result = "Option<crate::reconstruction::Reconstructor>")]
pub struct GetReconstructor;

impl Handler<GetReconstructor> for CaptureRegistry {
    type Result = MessageResult<GetReconstructor>;

    fn handle(&mut self, _msg: GetReconstructor, _ctx: &mut Context<Self>) -> Self::Result {
        MessageResult(self.deps.reconstructor.clone())
    }
}

/// Re-measures a finished scan with a clinician's outline through the registry's
/// reconstructions (stored, or only answered for a preview: `req.mode`); a stopped registry,
/// or one running none, is
/// [`RemeasureError::Unavailable`](crate::reconstruction::RemeasureError::Unavailable).
pub async fn remeasure(
    registry: &Addr<CaptureRegistry>,
    req: crate::reconstruction::RemeasureRequest,
) -> Result<crate::reconstruction::Remeasured, crate::reconstruction::RemeasureError> {
    match registry.send(GetReconstructor).await {
        Ok(Some(r)) => r.remeasure(req).await,
        Ok(None) | Err(_) => Err(crate::reconstruction::RemeasureError::Unavailable),
    }
}

/// Re-analyses a measurement's tissue with a clinician's corrections on the node's
/// reconstructions; a stopped registry, or one running none, is
/// [`RemeasureError::Unavailable`](crate::reconstruction::RemeasureError::Unavailable).
pub async fn retissue(
    registry: &Addr<CaptureRegistry>,
    req: crate::reconstruction::RetissueRequest,
) -> Result<crate::reconstruction::Retissued, crate::reconstruction::RemeasureError> {
    match registry.send(GetReconstructor).await {
        Ok(Some(r)) => r.retissue(req).await,
        Ok(None) | Err(_) => Err(crate::reconstruction::RemeasureError::Unavailable),
    }
}

/// Gets (or starts) the scan's session and attaches a connection to it: what a pump calls
/// after `hello`. Retries when it catches a session that is just stopping (or handing
/// over).
pub async fn attach(
    registry: &Addr<CaptureRegistry>,
    scan_id: ScanId,
    conn_id: ConnId,
    resume_from: Option<u64>,
    outbox: Outbox,
) -> Result<(Addr<CaptureSession>, AttachOutcome), CaptureError> {
    let mut last = CaptureError::Stopped;
    for _ in 0..3 {
        let session = registry.send(GetOrStart { scan_id }).await??;
        match session.send(Attach { conn_id, resume_from, outbox: outbox.clone() }).await {
            Ok(Err(CaptureError::Stopped)) => last = CaptureError::Stopped,
            Ok(res) => return res.map(|o| (session, o)),
            Err(e) => last = e.into(),
        }
    }
    Err(last)
}
