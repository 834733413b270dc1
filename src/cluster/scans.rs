//! Capture sessions across nodes. A scan's `CaptureSession` runs only on the node holding
//! the scan's lease ([`super::scan_key`]). A node claims it before it upgrades a phone's
//! stream (websocket or data channel, [`acquire`]); the lease stays while the session runs
//! there (and for [`STARTUP_GRACE`] after the claim, until the phone's `hello` starts it),
//! and the renewer releases it once the session has stopped.
//!
//! A phone that reconnects to another node moves the scan: the new node asks the holder to
//! release it ([`ScanRequest::Release`]); the holder's session hands over (closes the old
//! connection with 4001, makes what it received durable, stops) and the holder releases the
//! lease. A holder that does not answer is dead: its lease expires within
//! [`super::lease::LEASE_TTL`] and the new node takes it then. Either way the new session
//! starts from what Postgres and the blob store hold, so the phone resumes from its last
//! ack. While the lease cannot be had the upgrade is refused with 503 `unavailable`.
//!
//! A session whose lease ends while it runs (found held by another node, or not renewed
//! before it expired: [`super::lease::LeaseEnd`]) hands over at once: what it received is
//! made durable, and the phone is closed with 4001 when another node holds the scan, 1001
//! otherwise (it resumes wherever it reconnects).

use std::collections::HashSet;
use std::time::Duration;

use actix::Addr;
use coherency_actors::capture::{
    CaptureRegistry, HandOverReason, HandOverScan, HandOverScanFor, LiveSessions, StopSession,
};
use coherency_protocol::ids::ScanId;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::bus::Request;
use super::lease::LeaseEnd;
use super::{Claim, Node};
use crate::error::ApiError;

/// Longest an upgrade waits for the scan's lease: a dead holder's lease expires within
/// `LEASE_TTL` (6 s) after its last renewal, a live one answers within the bus timeout.
pub const TAKEOVER_WAIT: Duration = Duration::from_secs(10);
/// How often a waiting upgrade tries the lease again.
const POLL: Duration = Duration::from_millis(200);
/// How long a claimed lease is kept before the scan's session starts here: the data
/// channel's set-up (20 s) plus the `hello` timeout (10 s), with a margin. Keeping it
/// longer than needed blocks nobody: another node asking for the scan gets it at once.
pub const STARTUP_GRACE: Duration = Duration::from_secs(35);
/// How long a released session may take to stop after its handover answered (it is
/// normally gone already).
const STOP_WAIT: Duration = Duration::from_millis(500);

/// A request about a scan to the node holding its lease.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum ScanRequest {
    /// The phone reconnected elsewhere: stop the scan's session here and give up the lease.
    Release { scan_id: Uuid },
}

/// The holder's answer to [`ScanRequest::Release`].
#[derive(Debug, Serialize, Deserialize)]
pub struct Released {
    /// The lease is no longer this node's.
    pub released: bool,
    /// The highest durable seq the session here reached, when one was running.
    pub durable: Option<u64>,
}

/// Answers a [`ScanRequest`] on the lease holder.
pub async fn serve(here: &Node, req: ScanRequest) -> serde_json::Value {
    match req {
        ScanRequest::Release { scan_id } => {
            let r = release(here, ScanId::from_uuid(scan_id)).await;
            serde_json::to_value(r).unwrap_or(serde_json::Value::Null)
        }
    }
}

/// Hands the scan's session here over and gives up its lease.
#[tracing::instrument(skip_all, fields(scan_id = %scan_id))]
async fn release(here: &Node, scan_id: ScanId) -> Released {
    let durable = here.capture.send(HandOverScan { scan_id }).await.ok().flatten();
    // A session the registry had already let go of (draining) may still be writing.
    let deadline = tokio::time::Instant::now() + STOP_WAIT;
    while here.capture_live.contains(scan_id) && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    here.leases.release(&super::scan_key(scan_id.as_uuid())).await;
    tracing::info!(?durable, "scan released to another node");
    Released { released: true, durable }
}

/// While true, the renewer keeps the scan's lease: a session runs here, or the claim is
/// recent enough that the phone's `hello` may still start one.
fn alive(live: LiveSessions, scan_id: ScanId) -> impl Fn() -> bool + Send + Sync + 'static {
    let until = std::time::Instant::now() + STARTUP_GRACE;
    move || live.contains(scan_id) || std::time::Instant::now() < until
}

/// Hands the scan's session here over when its lease ends while it runs (see the module
/// docs). Runs on the lease renewer's thread: it only sends a message.
fn stop(capture: Addr<CaptureRegistry>, scan_id: ScanId) -> impl Fn(&LeaseEnd) + Send + Sync + 'static {
    move |why| {
        let reason = match why {
            LeaseEnd::Lost { holder: Some(_) } => HandOverReason::Takeover,
            LeaseEnd::Lost { holder: None } | LeaseEnd::Expired => HandOverReason::Drain,
        };
        tracing::warn!(%scan_id, ?why, "the scan's lease ended; its session here hands over");
        capture.do_send(HandOverScanFor { scan_id, reason });
    }
}

/// Claims the scan's lease for this node (see [`alive`] and [`stop`]).
async fn claim(here: &Node, key: &str, scan_id: ScanId) -> Result<Claim, redis::RedisError> {
    let (live, capture) = (here.capture_live.clone(), here.capture.clone());
    here.leases.claim_or_stop(key, alive(live, scan_id), stop(capture, scan_id)).await
}

fn moving() -> ApiError {
    ApiError::unavailable("the scan is being streamed through another server that has not let go of it yet; retry")
        .with_retry_after(1)
}

/// Makes this node the holder of the scan's lease before a phone's stream is upgraded here.
/// Another holder is asked to let go; one that does not answer is waited out until its
/// lease expires, for at most [`TAKEOVER_WAIT`]. Fails with 503 `unavailable`.
#[tracing::instrument(skip_all, fields(scan_id = %scan_id))]
pub async fn acquire(here: &Node, scan_id: ScanId) -> Result<(), ApiError> {
    let key = super::scan_key(scan_id.as_uuid());
    let deadline = tokio::time::Instant::now() + TAKEOVER_WAIT;
    // Holders that did not answer: their lease is waited out, not asked for again.
    let mut silent: HashSet<String> = HashSet::new();
    loop {
        match claim(here, &key, scan_id).await {
            Ok(Claim::Ours) => return Ok(()),
            Ok(Claim::Theirs(node)) => {
                if !silent.contains(&node) {
                    if ask_release(here, &node, scan_id).await {
                        continue;
                    }
                    silent.insert(node);
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "scan lease not readable");
                return Err(ApiError::unavailable("the lease store is not answering; retry").with_retry_after(1));
            }
        }
        if tokio::time::Instant::now() + POLL > deadline {
            tracing::warn!("scan lease still held elsewhere; refusing the stream");
            return Err(moving());
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Asks `node` to let go of the scan; true once it has.
async fn ask_release(here: &Node, node: &str, scan_id: ScanId) -> bool {
    if !here.bus.listening(node).await {
        tracing::info!(holder = node, "the scan's node is gone; waiting for its lease to expire");
        return false;
    }
    let req = Request::Scan(ScanRequest::Release { scan_id: scan_id.as_uuid() });
    match here.bus.request::<Released>(node, req).await {
        Ok(r) => {
            tracing::info!(holder = node, durable = ?r.durable, "the scan's node let go of it");
            r.released
        }
        Err(e) => {
            tracing::info!(holder = node, error = %e, "the scan's node did not answer; waiting out its lease");
            false
        }
    }
}

/// How a pump stands with the scan's lease.
pub enum Standing {
    /// This node holds it.
    Held,
    /// Another node does: this connection has been superseded there.
    Lost,
    /// Unknown (Redis trouble): carry on, the renewer settles it.
    Unknown,
}

/// Checks that this node still holds the scan's lease, claiming it again if nobody does
/// (never waiting). On [`Standing::Lost`] the local session is stopped: the scan runs on
/// another node now.
pub async fn standing(here: &Node, scan_id: ScanId) -> Standing {
    let key = super::scan_key(scan_id.as_uuid());
    if here.leases.holds(&key) {
        return Standing::Held;
    }
    match claim(here, &key, scan_id).await {
        Ok(Claim::Ours) => Standing::Held,
        Ok(Claim::Theirs(holder)) => {
            tracing::warn!(holder = %holder, "the scan's lease is another node's; stopping the session here");
            here.capture.do_send(StopSession { scan_id });
            Standing::Lost
        }
        Err(e) => {
            tracing::debug!(error = %e, "scan lease not readable");
            Standing::Unknown
        }
    }
}
