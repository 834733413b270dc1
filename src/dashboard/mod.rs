//! The dashboard's inputs: domain events from every node (Redis pub/sub) turned into board
//! changes for this node's [`DashboardHub`], a reload from PostgreSQL whenever the bus
//! (re)connects, pruning of past items, and the scan-event publisher used by the capture
//! path. The socket is `crate::ws::dashboard`; the design is in `docs/dashboard.md`.
//!
//! Booking and scan messages are [`BusEvent`]s — kind, ids, a time and a small data map,
//! never a name or other PHI — on `<prefix>booking.events` and `<prefix>scan.events`;
//! [`change_for`] maps them to board changes. `<prefix>consult.events` carries the rooms'
//! own `RoomEvent`s, which [`consults`] turns into the waiting and consults sections.

mod consults;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix::{Actor, Addr};
use coherency_actors::dashboard::{Apply, DashboardHub, HubConfig, Reload, RemoveWhere};
use coherency_actors::room::ScanLive;
use coherency_protocol::consult::{RoomEvent, ScanLiveStatus};
use coherency_protocol::dashboard::{Change, Item, Section};
use coherency_protocol::ids::ScanId;
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sqlx::PgPool;
use uuid::Uuid;

use crate::booking::BookingEvent;
use crate::clock::Clock;
use crate::cluster::bus::BookingBus;
use crate::state::AppState;
use crate::store::redis::Redis;

/// Bus channels (under the deployment's Redis prefix) the hub listens to.
pub const CHANNELS: [&str; 3] = ["booking.events", "scan.events", "consult.events"];
/// Appointments are on the board from this long before their start…
pub const BOOKINGS_AHEAD: chrono::Duration = chrono::Duration::days(7);
/// …until this long after their end.
pub const BOOKINGS_AFTER_END: chrono::Duration = chrono::Duration::hours(1);
/// Finished scans stay on the board this long after their last change.
pub const FINISHED_SCANS_KEPT: chrono::Duration = chrono::Duration::hours(12);
/// Least time between two progress events of one scan (status changes are never held).
pub const SCAN_PROGRESS_EVERY: Duration = Duration::from_millis(500);
/// How often past items are pruned.
const PRUNE_EVERY: Duration = Duration::from_secs(60);
/// Longest a scan event's publication may take before it is given up (the board reloads on
/// reconnect; the next progress event follows).
const PUBLISH_TIMEOUT: Duration = Duration::from_millis(250);
/// Longest capture warning passed on (they are short names such as `wound_off_centre`).
const MAX_WARNING_CHARS: usize = 64;

/// One domain event on the bus. `kind` is `<domain>.<what>`; ids scope it; `data` holds a
/// few small values (counts, fractions, times, statuses), never names or free text.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BusEvent {
    pub kind: String,
    /// The entity (appointment, scan, waiting-room entry, consult).
    pub id: Uuid,
    #[serde(default)]
    pub patient_id: Option<Uuid>,
    #[serde(default)]
    pub clinician_id: Option<Uuid>,
    /// When it happened, Unix ms.
    pub at_ms: i64,
    /// When the entity began (appointment start, scan creation, check-in), Unix ms.
    #[serde(default)]
    pub since_ms: Option<i64>,
    #[serde(default)]
    pub data: Map<String, Value>,
}

/// Parses a message from `channel` (the name without prefix).
pub fn parse(channel: &str, payload: &str, now_ms: i64) -> Option<BusEvent> {
    if channel == BookingBus::CHANNEL {
        return Some(booking_event(&serde_json::from_str(payload).ok()?, now_ms));
    }
    serde_json::from_str(payload).ok()
}

/// A booking event as the board sees it.
fn booking_event(m: &BookingEvent, now_ms: i64) -> BusEvent {
    let mut data = Map::new();
    data.insert("status".into(), m.status.clone().into());
    data.insert("end_ms".into(), m.end_at.timestamp_millis().into());
    BusEvent {
        kind: format!("booking.{}", m.kind.as_str()),
        id: m.appointment_id,
        patient_id: Some(m.patient_id),
        clinician_id: Some(m.clinician_id),
        at_ms: now_ms,
        since_ms: Some(m.start_at.timestamp_millis()),
        data,
    }
}

fn item(section: Section, ev: &BusEvent, status: &str) -> Item {
    let mut data = ev.data.clone();
    data.remove("status");
    Item {
        section,
        id: ev.id,
        patient_id: ev.patient_id,
        clinician_id: ev.clinician_id,
        status: status.to_string(),
        since_ms: ev.since_ms.unwrap_or(ev.at_ms),
        updated_ms: ev.at_ms,
        data,
        patient_name: None,
        wound: None,
    }
}

/// The board change a booking or scan event makes, if any.
pub fn change_for(ev: &BusEvent) -> Option<Change> {
    let status = ev.data.get("status").and_then(Value::as_str).unwrap_or_default().to_string();
    let (domain, what) = ev.kind.split_once('.')?;
    let remove = |section| Some(Change::Remove { section, id: ev.id });
    match (domain, what) {
        ("booking", _) => match status.as_str() {
            "held" | "booked" | "no_show" => Some(Change::Upsert { item: item(Section::Bookings, ev, &status) }),
            _ => remove(Section::Bookings),
        },
        ("scan", _) if !status.is_empty() => Some(Change::Upsert { item: item(Section::Scans, ev, &status) }),
        _ => None,
    }
}

/// The live figures a scan event carries for the room of its consult: `scan.progress`,
/// `scan.streaming` and `scan.processing` while the scan streams or is processed.
pub fn live_figures(ev: &BusEvent) -> Option<ScanLive> {
    if !matches!(ev.kind.as_str(), "scan.progress" | "scan.streaming" | "scan.processing") {
        return None;
    }
    let status = ScanLiveStatus::parse(ev.data.get("status")?.as_str()?)?;
    Some(ScanLive {
        scan_id: ev.id,
        status,
        frames: ev.data.get("frames").and_then(Value::as_u64).unwrap_or(0),
        fused: ev.data.get("fused").and_then(Value::as_u64),
        coverage: ev.data.get("coverage").and_then(Value::as_f64).map(|c| c.clamp(0.0, 1.0)),
        warnings: ev
            .data
            .get("warnings")
            .and_then(Value::as_array)
            .map_or_else(Vec::new, |w| bounded_warnings(w.iter().filter_map(Value::as_str))),
    })
}

/// At most `MAX_WARNINGS` warnings, each a short name.
fn bounded_warnings<'a>(w: impl IntoIterator<Item = &'a str>) -> Vec<String> {
    w.into_iter()
        .filter(|w| w.len() <= MAX_WARNING_CHARS)
        .take(coherency_protocol::limits::MAX_WARNINGS)
        .map(str::to_owned)
        .collect()
}

/// Starts the node's hub.
pub fn start_hub() -> Addr<DashboardHub> {
    DashboardHub::new(HubConfig::default()).start()
}

/// Starts the hub's bus listener and pruner.
pub fn spawn_inputs(state: actix_web::web::Data<AppState>) {
    let hub = state.dashboard.clone();
    actix_web::rt::spawn(listen(state.clone(), hub.clone()));
    let clock = state.clock.clone();
    actix_web::rt::spawn(async move {
        let mut tick = tokio::time::interval(PRUNE_EVERY);
        loop {
            tick.tick().await;
            hub.do_send(prune(&clock));
        }
    });
}

/// Removes appointments well past their end and scans long finished.
fn prune(clock: &Clock) -> RemoveWhere {
    let now = clock.now();
    let booking_cut = (now - BOOKINGS_AFTER_END).timestamp_millis();
    let scan_cut = (now - FINISHED_SCANS_KEPT).timestamp_millis();
    RemoveWhere(Box::new(move |i: &Item| match i.section {
        Section::Bookings => i.data.get("end_ms").and_then(Value::as_i64).is_some_and(|e| e < booking_cut),
        Section::Scans => matches!(i.status.as_str(), "complete" | "failed" | "cancelled") && i.updated_ms < scan_cut,
        _ => false,
    }))
}

/// Listens to the bus for as long as the node runs; after each (re)subscription the board
/// is reloaded from PostgreSQL so nothing missed while disconnected stays missing.
async fn listen(state: actix_web::web::Data<AppState>, hub: Addr<DashboardHub>) {
    let mut backoff = Duration::from_millis(200);
    loop {
        match subscribe_once(&state, &hub).await {
            Ok(()) => backoff = Duration::from_millis(200),
            Err(e) => tracing::warn!(error = %e, "dashboard bus disconnected"),
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}

async fn subscribe_once(state: &AppState, hub: &Addr<DashboardHub>) -> Result<(), redis::RedisError> {
    let redis = &state.stores.redis;
    let mut pubsub = redis.client.get_async_pubsub().await?;
    for c in CHANNELS {
        pubsub.subscribe(redis.key(c)).await?;
    }
    match reload(&state.stores.pg, &state.clock).await {
        Ok(r) => hub.do_send(r),
        Err(e) => tracing::warn!(error = %e, "dashboard reload failed"),
    }
    let prefix = redis.prefix().to_string();
    let mut stream = pubsub.on_message();
    while let Some(msg) = stream.next().await {
        let payload: String = msg.get_payload()?;
        let channel = msg.get_channel_name().strip_prefix(prefix.as_str()).unwrap_or_default().to_string();
        let now_ms = state.clock.now().timestamp_millis();
        if channel == crate::consults::BUS_CHANNEL {
            let Ok(ev) = serde_json::from_str::<RoomEvent>(&payload) else {
                tracing::debug!(channel, "unreadable consult event");
                continue;
            };
            match consults::changes(&state.stores.pg, &ev, now_ms).await {
                Ok(changes) if !changes.is_empty() => hub.do_send(Apply(changes)),
                Ok(_) => {}
                // The next reload (bus reconnect) brings the board back in line.
                Err(e) => tracing::warn!(error = %e, "consult event not applied to the board"),
            }
            continue;
        }
        if channel == BookingBus::CHANNEL {
            // Every node's changes (this one's too: applying one twice changes nothing) go to
            // the calendars running here, then to the board.
            let Ok(b) = serde_json::from_str::<BookingEvent>(&payload) else {
                tracing::debug!(channel, "unreadable booking event");
                continue;
            };
            state.calendars.apply(std::slice::from_ref(&b));
            if let Some(change) = change_for(&booking_event(&b, now_ms)) {
                hub.do_send(Apply(vec![change]));
            }
            continue;
        }
        let Some(ev) = parse(&channel, &payload, now_ms) else {
            tracing::debug!(channel, "unreadable dashboard event");
            continue;
        };
        if let Some(change) = change_for(&ev) {
            hub.do_send(Apply(vec![change]));
        }
        if let Some(consult) = ev.data.get("consult_id").and_then(Value::as_str).and_then(|c| c.parse().ok()) {
            // A scan taken inside a consult: its status changes are room events too, and its
            // live figures go to the people in the room (not logged).
            if let Some(status) = ev.kind.strip_prefix("scan.") {
                state.consult_rooms.scan_status(consult, ev.id, status).await;
            }
            if let Some(live) = live_figures(&ev) {
                state.consult_rooms.scan_live(consult, live);
            }
        }
    }
    Ok(())
}

/// The whole board as the system of record has it.
pub async fn reload(pg: &PgPool, clock: &Clock) -> Result<Reload, sqlx::Error> {
    let now = clock.now();
    let mut items = Vec::new();
    let rows = sqlx::query!(
        "SELECT id, clinician_id, patient_id, status, start_at, end_at, updated_at FROM appointments
          WHERE status IN ('held', 'booked', 'no_show') AND end_at > $1 AND start_at < $2
          ORDER BY start_at LIMIT 5000",
        now - BOOKINGS_AFTER_END,
        now + BOOKINGS_AHEAD,
    )
    .fetch_all(pg)
    .await?;
    for r in rows {
        let mut data = Map::new();
        data.insert("end_ms".into(), r.end_at.timestamp_millis().into());
        items.push(Item {
            section: Section::Bookings,
            id: r.id,
            patient_id: Some(r.patient_id),
            clinician_id: Some(r.clinician_id),
            status: r.status,
            since_ms: r.start_at.timestamp_millis(),
            updated_ms: r.updated_at.timestamp_millis(),
            data,
            patient_name: None,
            wound: None,
        });
    }
    let rows = sqlx::query!(
        "SELECT s.id, s.patient_id, s.status, s.acked_seq, s.created_at, s.updated_at, u.role, s.created_by
           FROM scans s JOIN users u ON u.id = s.created_by
          WHERE s.status IN ('created', 'streaming', 'processing') OR s.updated_at > $1
          ORDER BY s.created_at DESC LIMIT 2000",
        now - FINISHED_SCANS_KEPT,
    )
    .fetch_all(pg)
    .await?;
    for r in rows {
        let mut data = Map::new();
        data.insert("frames".into(), r.acked_seq.into());
        items.push(Item {
            section: Section::Scans,
            id: r.id,
            patient_id: Some(r.patient_id),
            clinician_id: (r.role == "clinician").then_some(r.created_by),
            status: r.status,
            since_ms: r.created_at.timestamp_millis(),
            updated_ms: r.updated_at.timestamp_millis(),
            data,
            patient_name: None,
            wound: None,
        });
    }
    items.extend(consults::reload(pg).await?);
    Ok(Reload { sections: vec![Section::Bookings, Section::Scans, Section::Waiting, Section::Consults], items })
}

/// Publishes one event on `<prefix>{channel}`. Best effort: the hub reloads from the
/// database whenever its bus reconnects.
pub async fn publish(redis: &Redis, channel: &str, ev: &BusEvent) {
    let mut conn = redis.conn.clone();
    let payload = serde_json::to_string(ev).unwrap_or_default();
    let r: Result<i64, _> = redis::cmd("PUBLISH").arg(redis.key(channel)).arg(payload).query_async(&mut conn).await;
    if let Err(e) = r {
        tracing::warn!(error = %e, channel, "dashboard event publish failed");
    }
}

/// Announces a scan created through the API.
pub async fn scan_created(state: &AppState, scan: &crate::store::scans::ScanRecord) {
    let clinician = sqlx::query_scalar!("SELECT role FROM users WHERE id = $1", scan.created_by)
        .fetch_optional(&state.stores.pg)
        .await
        .ok()
        .flatten()
        .filter(|r| r == "clinician")
        .map(|_| scan.created_by);
    let mut data = Map::new();
    data.insert("status".into(), "created".into());
    data.insert("frames".into(), 0.into());
    if let Some(c) = scan.consult_id {
        data.insert("consult_id".into(), c.to_string().into());
    }
    let ev = BusEvent {
        kind: "scan.created".into(),
        id: scan.id,
        patient_id: Some(scan.patient_id),
        clinician_id: clinician,
        at_ms: state.clock.now().timestamp_millis(),
        since_ms: Some(scan.created_at.timestamp_millis()),
        data,
    };
    let _ = tokio::time::timeout(PUBLISH_TIMEOUT, publish(&state.stores.redis, "scan.events", &ev)).await;
}

/// What the publisher remembers of a live scan.
struct ScanMeta {
    patient_id: Uuid,
    consult_id: Option<Uuid>,
    clinician_id: Option<Uuid>,
    since_ms: i64,
    status: String,
    frames: u64,
    /// Live fusion figures from the capture session, once it has reported them.
    fused: Option<u64>,
    coverage: Option<f32>,
    /// The capture warnings of the latest progress (names only, no PHI).
    warnings: Vec<String>,
    last_sent: Option<Instant>,
}

/// Publishes scan lifecycle and progress on `<prefix>scan.events`: status changes at once,
/// frame progress at most every [`SCAN_PROGRESS_EVERY`] per scan.
#[derive(Clone)]
pub struct ScanEvents {
    redis: Redis,
    pg: PgPool,
    clock: Clock,
    live: Arc<Mutex<HashMap<ScanId, ScanMeta>>>,
}

impl ScanEvents {
    pub fn new(redis: Redis, pg: PgPool, clock: Clock) -> Self {
        Self { redis, pg, clock, live: Default::default() }
    }

    async fn meta(&self, scan: ScanId) -> Option<()> {
        if self.live.lock().ok()?.contains_key(&scan) {
            return Some(());
        }
        let r = sqlx::query!(
            "SELECT s.patient_id, s.consult_id, s.created_at, s.status, s.acked_seq, s.created_by, u.role
               FROM scans s JOIN users u ON u.id = s.created_by WHERE s.id = $1",
            scan.as_uuid(),
        )
        .fetch_optional(&self.pg)
        .await
        .ok()??;
        let meta = ScanMeta {
            patient_id: r.patient_id,
            consult_id: r.consult_id,
            clinician_id: (r.role == "clinician").then_some(r.created_by),
            since_ms: r.created_at.timestamp_millis(),
            status: r.status,
            frames: u64::try_from(r.acked_seq).unwrap_or(0),
            fused: None,
            coverage: None,
            warnings: Vec::new(),
            last_sent: None,
        };
        self.live.lock().ok()?.entry(scan).or_insert(meta);
        Some(())
    }

    fn event(&self, scan: ScanId, m: &ScanMeta, kind: &str) -> BusEvent {
        let mut data = Map::new();
        data.insert("status".into(), m.status.clone().into());
        data.insert("frames".into(), m.frames.into());
        if let Some(c) = m.consult_id {
            data.insert("consult_id".into(), c.to_string().into());
        }
        if let Some(f) = m.fused {
            data.insert("fused".into(), f.into());
        }
        if let Some(c) = m.coverage {
            data.insert("coverage".into(), ((f64::from(c) * 1000.0).round() / 1000.0).into());
        }
        data.insert("warnings".into(), m.warnings.clone().into());
        BusEvent {
            kind: kind.to_string(),
            id: scan.as_uuid(),
            patient_id: Some(m.patient_id),
            clinician_id: m.clinician_id,
            at_ms: self.clock.now().timestamp_millis(),
            since_ms: Some(m.since_ms),
            data,
        }
    }
}

/// What the scan index stores is published for the boards.
#[async_trait::async_trait]
impl crate::store::scans::ScanLifecycle for ScanEvents {
    async fn progress(&self, scan: ScanId, acked: u64) {
        if self.meta(scan).await.is_none() {
            return;
        }
        let ev = {
            let Ok(mut live) = self.live.lock() else { return };
            let Some(m) = live.get_mut(&scan) else { return };
            m.frames = m.frames.max(acked);
            let due = m.last_sent.is_none_or(|t| t.elapsed() >= SCAN_PROGRESS_EVERY);
            if m.status == "created" {
                m.status = "streaming".into();
            } else if !due {
                return;
            }
            m.last_sent = Some(Instant::now());
            self.event(scan, m, "scan.progress")
        };
        publish(&self.redis, "scan.events", &ev).await;
    }

    async fn status(&self, scan: ScanId, status: &str) {
        if self.meta(scan).await.is_none() {
            return;
        }
        let ev = {
            let Ok(mut live) = self.live.lock() else { return };
            let Some(m) = live.get_mut(&scan) else { return };
            m.status = status.to_string();
            m.last_sent = Some(Instant::now());
            let ev = self.event(scan, m, &format!("scan.{status}"));
            if matches!(status, "complete" | "failed" | "cancelled") {
                live.remove(&scan);
            }
            ev
        };
        publish(&self.redis, "scan.events", &ev).await;
    }
}

/// The capture session's live figures ride along on the next progress event: while the
/// scan streams they are only recorded here (publishing stays at the ack-driven,
/// rate-limited pace). Once it is `processing` no ack follows, so figures that changed —
/// the final `progress`, with the final fused count, coverage and guidance — go out at once
/// as a `scan.progress` (never blocking the session: the publication is spawned).
impl coherency_actors::store::ProgressObserver for ScanEvents {
    fn progress(&self, scan: ScanId, p: &coherency_protocol::scan::Progress) {
        let ev = {
            let Ok(mut live) = self.live.lock() else { return };
            let Some(m) = live.get_mut(&scan) else { return };
            let fused = Some(p.frames_fused);
            let coverage = Some(if p.coverage.is_finite() { p.coverage.clamp(0.0, 1.0) } else { 0.0 });
            let warnings = bounded_warnings(p.warnings.iter().map(String::as_str));
            let changed = (m.fused, m.coverage, &m.warnings) != (fused, coverage, &warnings);
            m.fused = fused;
            m.coverage = coverage;
            m.warnings = warnings;
            if m.status != "processing" || !changed {
                return;
            }
            m.last_sent = Some(Instant::now());
            self.event(scan, m, "scan.progress")
        };
        let Ok(rt) = tokio::runtime::Handle::try_current() else { return };
        let redis = self.redis.clone();
        rt.spawn(async move {
            let _ = tokio::time::timeout(PUBLISH_TIMEOUT, publish(&redis, "scan.events", &ev)).await;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{DateTime, Utc};

    #[test]
    fn booking_messages_become_board_items_and_cancellations_removals() {
        let id = Uuid::now_v7();
        let (start, end): (DateTime<Utc>, DateTime<Utc>) =
            ("2027-01-05T10:00:00Z".parse().unwrap(), "2027-01-05T10:30:00Z".parse().unwrap());
        let mut msg = BookingEvent {
            kind: crate::booking::EventKind::Booked,
            appointment_id: id,
            clinician_id: Uuid::nil(),
            patient_id: Uuid::nil(),
            start_at: start,
            end_at: end,
            status: "booked".into(),
            block_start: start,
            block_end: end,
            expires_at: None,
            waitlist_id: None,
            version: 1,
        };
        let ev = parse("booking.events", &serde_json::to_string(&msg).unwrap(), 5).unwrap();
        let Some(Change::Upsert { item }) = change_for(&ev) else { panic!("no upsert") };
        assert_eq!((item.section, item.status.as_str(), item.updated_ms), (Section::Bookings, "booked", 5));
        assert_eq!(item.data["end_ms"], 1_799_145_000_000i64);
        msg.status = "cancelled".into();
        let ev = parse("booking.events", &serde_json::to_string(&msg).unwrap(), 6).unwrap();
        assert_eq!(change_for(&ev), Some(Change::Remove { section: Section::Bookings, id }));
    }

    #[test]
    fn progress_of_a_scan_becomes_live_figures_for_its_room_and_finished_ones_do_not() {
        let mut data = Map::new();
        data.insert("status".into(), "streaming".into());
        data.insert("frames".into(), 42.into());
        data.insert("fused".into(), 40.into());
        data.insert("coverage".into(), 0.625.into());
        data.insert("warnings".into(), serde_json::json!(["wound_off_centre", "x".repeat(65), 7]));
        let mut ev = BusEvent {
            kind: "scan.progress".into(),
            id: Uuid::now_v7(),
            patient_id: None,
            clinician_id: None,
            at_ms: 1,
            since_ms: None,
            data,
        };
        let live = live_figures(&ev).unwrap();
        assert_eq!(
            live,
            ScanLive {
                scan_id: ev.id,
                status: ScanLiveStatus::Streaming,
                frames: 42,
                fused: Some(40),
                coverage: Some(0.625),
                warnings: vec!["wound_off_centre".into()],
            }
        );
        ev.data.remove("fused");
        ev.data.remove("coverage");
        ev.kind = "scan.processing".into();
        ev.data.insert("status".into(), "processing".into());
        let live = live_figures(&ev).unwrap();
        assert_eq!((live.status, live.fused, live.coverage), (ScanLiveStatus::Processing, None, None));
        ev.kind = "scan.complete".into();
        ev.data.insert("status".into(), "complete".into());
        assert_eq!(live_figures(&ev), None);
        ev.kind = "scan.created".into();
        ev.data.insert("status".into(), "created".into());
        assert_eq!(live_figures(&ev), None);
    }

    #[test]
    fn unknown_kinds_change_nothing() {
        let ev = BusEvent {
            kind: "consult.started".into(),
            id: Uuid::nil(),
            patient_id: None,
            clinician_id: None,
            at_ms: 1,
            since_ms: None,
            data: Map::new(),
        };
        assert_eq!(change_for(&ev), None);
    }
}
