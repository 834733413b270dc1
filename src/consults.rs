//! Consults on the server side: loading a consult and starting its `Room` ([`ConsultRooms`]),
//! the storage the rooms write through (Postgres event log and participants, Mongo chat
//! activity stream, Redis bus), the webhook dispatcher, and ICE server lists with
//! time-limited TURN credentials.

use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use chrono::{DateTime, Utc};
use coherency_actors::room::{Change, ConsultStatus, Participant, RoomDeps, RoomSnapshot, RoomStore, WaitingRooms};
use coherency_protocol::consult::{IceServer, ParticipantRole, ParticipantState, RoomEvent, ServerSignal};
use coherency_protocol::ids::{ConsultId, UserId};
use coherency_protocol::Code;
use hmac::{Hmac, Mac};
use secrecy::ExposeSecret;
use sha2::Sha256;
use sqlx::PgPool;
use tokio::sync::Notify;
use uuid::Uuid;

use crate::audit::AuditLog;
use crate::clock::Clock;
pub use crate::cluster::rooms::RoomRef;
use crate::cluster::{Claim, Node};
use crate::config::Config;
use crate::error::ApiError;
use crate::store::redis::Redis;
use crate::store::Stores;

/// Patients may check in from this long before the appointment starts.
pub const CHECK_IN_OPENS_BEFORE: chrono::Duration = chrono::Duration::minutes(15);
/// Redis channel (under the prefix) carrying every room event.
pub const BUS_CHANNEL: &str = "consult.events";
/// Mongo collection of room activity (chat).
pub const ACTIVITY: &str = "consult_activity";
/// Advisory lock key: one node delivers webhooks at a time, so their order holds.
const WEBHOOK_LOCK: i64 = 0x0C0A_5017_4E0B;
/// Longest wait between two delivery attempts of one event.
const WEBHOOK_MAX_BACKOFF: Duration = Duration::from_secs(60);
/// First retry delay (doubles per attempt).
const WEBHOOK_FIRST_BACKOFF: Duration = Duration::from_millis(200);
/// Time a receiver has to answer.
const WEBHOOK_TIMEOUT: Duration = Duration::from_secs(5);

/// A consult row.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct Consult {
    pub id: Uuid,
    pub appointment_id: Option<Uuid>,
    pub clinician_id: Uuid,
    pub patient_id: Option<Uuid>,
    /// `open`, `live` or `ended`.
    pub status: String,
    pub scheduled_start: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub ended_at: Option<DateTime<Utc>>,
    pub end_reason: Option<String>,
}

pub async fn load(pg: &PgPool, id: Uuid) -> Result<Option<Consult>, sqlx::Error> {
    sqlx::query_as!(
        Consult,
        "SELECT id, appointment_id, clinician_id, patient_id, status, scheduled_start, created_at, started_at,
                ended_at, end_reason
         FROM consults WHERE id = $1",
        id
    )
    .fetch_optional(pg)
    .await
}

pub async fn by_appointment(pg: &PgPool, appointment_id: Uuid) -> Result<Option<Consult>, ApiError> {
    Ok(sqlx::query_as!(
        Consult,
        "SELECT id, appointment_id, clinician_id, patient_id, status, scheduled_start, created_at, started_at,
                ended_at, end_reason
         FROM consults WHERE appointment_id = $1",
        appointment_id
    )
    .fetch_optional(pg)
    .await?)
}

/// This node's consults: the storage their rooms write through, and the rooms themselves,
/// here or on the node holding a room's lease (`crate::cluster`). Built once at start
/// (`startup::app_state`) and reached as `state.consult_rooms`.
pub struct ConsultRooms {
    store: Arc<PgRoomStore>,
    deps: RoomDeps,
    cluster: Arc<Node>,
    audit: AuditLog,
}

impl ConsultRooms {
    pub fn new(config: &Config, stores: &Stores, clock: &Clock, cluster: Arc<Node>, audit: AuditLog) -> Self {
        let store = Arc::new(PgRoomStore {
            pg: stores.pg.clone(),
            redis: stores.redis.clone(),
            mongo: stores.mongo.clone(),
            clock: clock.clone(),
            webhooks: webhooks_on(config),
            wake: Arc::new(Notify::new()),
        });
        let deps = room_deps(config, store.clone(), clock);
        Self { store, deps, cluster, audit }
    }

    /// The waiting rooms of this node's clinicians.
    pub fn waiting(&self) -> &WaitingRooms {
        &self.deps.waiting
    }

    /// Creates a consult with its host and its `opened` event (seq 1).
    pub async fn create(
        &self,
        appointment_id: Option<Uuid>,
        clinician_id: Uuid,
        patient_id: Option<Uuid>,
        scheduled_start: Option<DateTime<Utc>>,
        created_by: Uuid,
    ) -> Result<Consult, ApiError> {
        let now = self.store.clock.now();
        let id = Uuid::now_v7();
        let mut tx = self.store.pg.begin().await?;
        sqlx::query!(
            "INSERT INTO consults (id, appointment_id, clinician_id, patient_id, status, scheduled_start, created_by, created_at)
             VALUES ($1, $2, $3, $4, 'open', $5, $6, $7)",
            id,
            appointment_id,
            clinician_id,
            patient_id,
            scheduled_start,
            created_by,
            now
        )
        .execute(&mut *tx)
        .await
        .map_err(|e| match &e {
            sqlx::Error::Database(d) if d.is_unique_violation() => {
                ApiError::new(Code::Conflict, "this appointment already has a consult")
            }
            _ => ApiError::from(e),
        })?;
        let host = Participant {
            id: Uuid::now_v7(),
            user_id: clinician_id,
            role: ParticipantRole::Host,
            state: ParticipantState::Admitted,
            invited_by: None,
            checked_in_at: None,
            admitted_at: Some(now),
            joined_at: None,
            left_at: None,
        };
        upsert_participant(&mut tx, id, &host, now).await?;
        let ev = RoomEvent {
            consult_id: ConsultId::from_uuid(id),
            seq: 1,
            kind: coherency_protocol::consult::EventKind::Opened,
            participant_id: None,
            user_id: None,
            role: None,
            by: Some(created_by),
            data: serde_json::json!({ "appointment_id": appointment_id }),
            at: now.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        };
        insert_event(&mut tx, &ev, now, self.store.webhooks).await?;
        tx.commit().await?;
        publish(&self.store.redis, std::slice::from_ref(&ev)).await;
        self.store.wake.notify_one();
        load(&self.store.pg, id).await?.ok_or_else(|| ApiError::internal("consult vanished"))
    }

    /// A scan was asked for inside consult `c`: the room records `scan_requested` and, unless
    /// the patient asked themself, their app gets `scan_request`. Best effort after the scan's
    /// own commit: the scan exists (with its `consult_id`) whatever the room does.
    pub async fn scan_requested(&self, c: &Consult, scan_id: Uuid, by: Uuid) {
        let patient_user: Option<Uuid> = match c.patient_id {
            Some(p) => sqlx::query_scalar!("SELECT user_id FROM patients WHERE id = $1", p)
                .fetch_optional(&self.store.pg)
                .await
                .ok()
                .flatten()
                .flatten(),
            None => None,
        };
        let raise = coherency_actors::room::Raise {
            kind: coherency_protocol::consult::EventKind::ScanRequested,
            by: Some(by),
            data: serde_json::json!({ "scan_id": scan_id }),
            notify: patient_user.filter(|u| *u != by).map(|u| (u, ServerSignal::ScanRequest { scan_id })),
            broadcast: None,
        };
        let res = match self.room(c).await {
            Ok(r) => {
                r.call(&self.cluster, raise).await.map_err(|e| e.to_string()).and_then(|r| r.map_err(|e| e.to_string()))
            }
            Err(e) => Err(e.to_string()),
        };
        if let Err(e) = res {
            tracing::warn!(consult_id = %c.id, %scan_id, error = %e, "scan request not recorded in the room");
        }
    }

    /// A scan of consult `consult_id` changed status: if its room runs on this node, the room
    /// records `scan_progress` (streaming, processing) or `scan_finished` (complete, failed,
    /// cancelled); other statuses (created, progress) are ignored. Every node hears the scan
    /// bus; only the room's node records the event. The room is not awaited (its mailbox keeps
    /// the order), so the bus listener is not held up by the room's commit.
    pub async fn scan_status(&self, consult_id: Uuid, scan_id: Uuid, status: &str) {
        let kind = match status {
            "streaming" | "processing" => coherency_protocol::consult::EventKind::ScanProgress,
            "complete" | "failed" | "cancelled" => coherency_protocol::consult::EventKind::ScanFinished,
            _ => return,
        };
        let Some(r) = self.cluster.rooms.get(ConsultId::from_uuid(consult_id)) else { return };
        // The measurements go live to the admitted participants only (not into the log or
        // webhooks), and the disclosure is audited.
        let mut broadcast = None;
        if status == "complete" {
            match crate::store::measurements::list(&self.store.pg, scan_id).await {
                Ok(m) => {
                    let measurements = serde_json::to_value(&m).unwrap_or(serde_json::Value::Null);
                    broadcast = Some(ServerSignal::ScanResult { scan_id, measurements });
                    let ev = crate::audit::AuditEvent::new("consult.scan_result.shared", "success")
                        .target("consult", consult_id)
                        .details(serde_json::json!({ "scan_id": scan_id, "measurements": m.len() }));
                    if let Err(e) = self.audit.append(self.store.clock.now(), ev).await {
                        tracing::error!(%consult_id, error = %e, "scan result not audited, not shared");
                        broadcast = None;
                    }
                }
                Err(e) => tracing::warn!(%consult_id, %scan_id, error = %e, "measurements not loaded for the room"),
            }
        }
        let raise = coherency_actors::room::Raise {
            kind,
            by: None,
            data: serde_json::json!({ "scan_id": scan_id, "status": status }),
            notify: None,
            broadcast,
        };
        r.do_send(raise);
    }

    /// Live figures of a scan of consult `consult_id`: if its room runs on this node, it sends
    /// them to everyone admitted and connected (`scan_live`), neither logged nor sent to
    /// webhooks. Every node hears the scan bus, as for [`Self::scan_status`]; the room is not
    /// awaited.
    pub fn scan_live(&self, consult_id: Uuid, live: coherency_actors::room::ScanLive) {
        if let Some(r) = self.cluster.rooms.get(ConsultId::from_uuid(consult_id)) {
            r.do_send(live);
        }
    }

    /// The consult's room: on this node if this node holds (or now claims) its lease, started
    /// from the database if it is not running; otherwise a handle on the owner's room.
    pub async fn room(&self, c: &Consult) -> Result<RoomRef, ApiError> {
        let cid = ConsultId::from_uuid(c.id);
        if c.status == "ended" {
            return Err(ApiError::new(Code::ConsultEnded, "the consult has ended"));
        }
        let key = crate::cluster::room_key(c.id);
        if let Some(r) = self.cluster.rooms.get(cid) {
            if self.cluster.leases.holds(&key) {
                return Ok(RoomRef::Local(r));
            }
        }
        // Kept while the room runs here; a just-claimed lease survives the start-up.
        let rooms = self.cluster.rooms.clone();
        let claimed = std::time::Instant::now();
        let alive = move || claimed.elapsed() < crate::cluster::lease::RENEW_EVERY * 2 || rooms.get(cid).is_some();
        // Another node holds (or held) the lease while the room runs here: the room retires
        // (participants reconnect to the holder's room). An expired lease (Redis unreachable)
        // keeps the room, as a claim that fails does: no other node can claim it either.
        let rooms = self.cluster.rooms.clone();
        let retire = move |end: &crate::cluster::lease::LeaseEnd| {
            if let (crate::cluster::lease::LeaseEnd::Lost { .. }, Some(r)) = (end, rooms.get(cid)) {
                tracing::warn!(consult_id = %cid, "room lease lost; retiring the room here");
                r.do_send(coherency_actors::room::Retire);
            }
        };
        match self.cluster.leases.claim_or_stop(&key, alive, retire).await {
            Ok(Claim::Ours) => {}
            Ok(Claim::Theirs(node)) => {
                if let Some(r) = self.cluster.rooms.get(cid) {
                    // This node lost the lease (it stalled): the other node's room is the room.
                    r.do_send(coherency_actors::room::Retire);
                }
                return Ok(RoomRef::Remote { node, consult: c.id });
            }
            Err(e) => {
                // Without Redis there is no other node to ask: serve the room here.
                tracing::warn!(error = %e, "room lease not claimed; serving the room on this node");
            }
        }
        if let Some(r) = self.cluster.rooms.get(cid) {
            return Ok(RoomRef::Local(r));
        }
        let rows = sqlx::query!(
            "SELECT id, user_id, role, state, invited_by, checked_in_at, admitted_at, left_at
             FROM consult_participants WHERE consult_id = $1",
            c.id
        )
        .fetch_all(&self.store.pg)
        .await?;
        let mut participants = Vec::new();
        for r in rows {
            participants.push(Participant {
                id: r.id,
                user_id: r.user_id,
                role: ParticipantRole::parse(&r.role).ok_or_else(|| ApiError::internal("bad role"))?,
                state: ParticipantState::parse(&r.state).ok_or_else(|| ApiError::internal("bad state"))?,
                invited_by: r.invited_by,
                checked_in_at: r.checked_in_at,
                admitted_at: r.admitted_at,
                // A room that starts has no connections: nobody is joined.
                joined_at: None,
                left_at: r.left_at,
            });
        }
        let last_seq: i64 = sqlx::query_scalar!(
            r#"SELECT coalesce(max(seq), 0) AS "last_seq!" FROM consult_events WHERE consult_id = $1"#,
            c.id
        )
        .fetch_one(&self.store.pg)
        .await?;
        let snap = RoomSnapshot {
            consult_id: cid,
            clinician_id: c.clinician_id,
            status: ConsultStatus::parse(&c.status).unwrap_or(ConsultStatus::Open),
            last_seq: last_seq as u64,
            participants,
        };
        Ok(RoomRef::Local(self.cluster.rooms.get_or_start(snap, &self.deps)))
    }

    /// The consult's room if it runs, here or on the node holding its lease (never starting
    /// one).
    pub async fn running(&self, c: &Consult) -> Option<RoomRef> {
        match self.cluster.rooms.get(ConsultId::from_uuid(c.id)) {
            Some(a) => Some(RoomRef::Local(a)),
            // An ended consult has no room anywhere: no need to ask Redis.
            None if c.status == "ended" => None,
            None => match self.cluster.leases.owner(&crate::cluster::room_key(c.id)).await {
                Ok(Some(node)) if node != self.cluster.name => Some(RoomRef::Remote { node, consult: c.id }),
                _ => None,
            },
        }
    }

    /// Delivers consult events to the configured webhook, in order, for as long as the node
    /// runs. Only one node delivers at a time (advisory lock), so order holds across nodes.
    pub fn spawn_webhooks(&self, config: &Config) {
        if !self.store.webhooks {
            return;
        }
        let store = self.store.clone();
        let url = config.webhook_url.clone();
        let secret = config.webhook_secret.as_ref().map(|s| s.expose_secret().as_bytes().to_vec()).unwrap_or_default();
        actix_web::rt::spawn(async move {
            let client = match reqwest::Client::builder().timeout(WEBHOOK_TIMEOUT).build() {
                Ok(c) => c,
                Err(e) => {
                    tracing::error!(error = %e, "webhook client");
                    return;
                }
            };
            loop {
                let wait = match deliver_next(&store, &client, &url, &secret).await {
                    Ok(Some(w)) => w,
                    Ok(None) => Duration::ZERO,
                    Err(e) => {
                        tracing::warn!(error = %e, "webhook delivery");
                        Duration::from_secs(1)
                    }
                };
                if wait > Duration::ZERO {
                    let _ = tokio::time::timeout(wait, store.wake.notified()).await;
                }
            }
        });
    }
}

fn webhooks_on(config: &Config) -> bool {
    !config.webhook_url.is_empty()
}

async fn upsert_participant(
    tx: &mut sqlx::PgConnection,
    consult_id: Uuid,
    p: &Participant,
    now: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "INSERT INTO consult_participants
            (id, consult_id, user_id, role, state, invited_by, checked_in_at, admitted_at, joined_at, left_at, updated_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
         ON CONFLICT (id) DO UPDATE SET role = $4, state = $5, invited_by = $6, checked_in_at = $7, admitted_at = $8,
            joined_at = $9, left_at = $10, updated_at = $11",
        p.id,
        consult_id,
        p.user_id,
        p.role.as_str(),
        p.state.as_str(),
        p.invited_by,
        p.checked_in_at,
        p.admitted_at,
        p.joined_at,
        p.left_at,
        now
    )
    .execute(&mut *tx)
    .await?;
    Ok(())
}

async fn insert_event(
    tx: &mut sqlx::PgConnection,
    ev: &RoomEvent,
    now: DateTime<Utc>,
    webhooks: bool,
) -> Result<(), sqlx::Error> {
    let body = serde_json::to_value(ev).unwrap_or(serde_json::Value::Null);
    sqlx::query!(
        "INSERT INTO consult_events (consult_id, seq, kind, body, at, webhook_next_at, webhook_done_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
        ev.consult_id.as_uuid(),
        ev.seq as i64,
        ev.kind.as_str(),
        body,
        now,
        webhooks.then_some(now),
        (!webhooks).then_some(now)
    )
    .execute(&mut *tx)
    .await?;
    Ok(())
}

async fn publish(redis: &Redis, events: &[RoomEvent]) {
    let mut c = redis.conn.clone();
    for ev in events {
        let payload = serde_json::to_string(ev).unwrap_or_default();
        let res: Result<i64, _> =
            redis::cmd("PUBLISH").arg(redis.key(BUS_CHANNEL)).arg(payload).query_async(&mut c).await;
        if let Err(e) = res {
            // The event is durable in Postgres (and reaches webhooks); only live listeners miss it.
            tracing::warn!(error = %e, "could not publish a consult event");
        }
    }
}

/// The storage rooms write through.
pub struct PgRoomStore {
    pub pg: PgPool,
    pub redis: Redis,
    pub mongo: mongodb::Database,
    pub clock: Clock,
    pub webhooks: bool,
    pub wake: Arc<Notify>,
}

#[async_trait::async_trait]
impl RoomStore for PgRoomStore {
    async fn record(&self, changes: &[Change]) -> Result<(), String> {
        let now = self.clock.now();
        let mut tx = self.pg.begin().await.map_err(|e| e.to_string())?;
        for ch in changes {
            let cid = ch.event.consult_id.as_uuid();
            if let Some(p) = &ch.participant {
                upsert_participant(&mut tx, cid, p, now).await.map_err(|e| e.to_string())?;
            }
            match ch.status {
                Some(ConsultStatus::Live) => {
                    sqlx::query!(
                        "UPDATE consults SET status = 'live', started_at = coalesce(started_at, $2) WHERE id = $1",
                        cid,
                        now
                    )
                    .execute(&mut *tx)
                    .await
                    .map_err(|e| e.to_string())?;
                }
                Some(ConsultStatus::Ended) => {
                    let reason = ch.event.data.get("reason").and_then(|r| r.as_str()).unwrap_or("ended").to_string();
                    sqlx::query!(
                        "UPDATE consults SET status = 'ended', ended_at = $2, end_reason = $3 WHERE id = $1",
                        cid,
                        now,
                        reason
                    )
                    .execute(&mut *tx)
                    .await
                    .map_err(|e| e.to_string())?;
                }
                _ => {}
            }
            insert_event(&mut tx, &ch.event, now, self.webhooks).await.map_err(|e| e.to_string())?;
        }
        tx.commit().await.map_err(|e| e.to_string())?;
        let events: Vec<RoomEvent> = changes.iter().map(|c| c.event.clone()).collect();
        publish(&self.redis, &events).await;
        self.wake.notify_one();
        Ok(())
    }

    async fn chat(
        &self,
        consult_id: ConsultId,
        from: Uuid,
        role: ParticipantRole,
        text: &str,
        at: DateTime<Utc>,
        to: Option<&Participant>,
    ) -> Result<(), String> {
        use mongodb::bson::{doc, Bson};
        let mut d = doc! {
            "_id": Uuid::now_v7().to_string(),
            "consult_id": consult_id.as_uuid().to_string(),
            "type": "Create",
            "actor": { "id": from.to_string(), "role": role.as_str() },
            "object": { "type": "Note", "content": text },
            "published": Bson::DateTime(mongodb::bson::DateTime::from_millis(at.timestamp_millis())),
        };
        // A private message names its one recipient (ActivityStreams `to`), with the state
        // they were in, so the record says who could read it and from where.
        if let Some(p) = to {
            d.insert(
                "to",
                vec![doc! {
                    "id": p.user_id.to_string(),
                    "participant_id": p.id.to_string(),
                    "role": p.role.as_str(),
                    "state": p.state.as_str(),
                }],
            );
        }
        self.mongo.collection::<mongodb::bson::Document>(ACTIVITY).insert_one(d).await.map_err(|e| e.to_string())?;
        Ok(())
    }
}

/// What every room of the node shares.
fn room_deps(config: &Config, store: Arc<PgRoomStore>, clock: &Clock) -> RoomDeps {
    let clock2 = clock.clone();
    let stun: Vec<String> = split_list(&config.stun_urls);
    RoomDeps {
        store,
        config: coherency_actors::room::RoomConfig {
            max_participants: config.consult_max_participants,
            empty_timeout: Duration::from_secs(config.consult_empty_timeout_secs),
            max_duration: Duration::from_secs(config.consult_max_duration_secs),
            reconnect_grace: Duration::from_secs(config.consult_reconnect_grace_secs),
            ice_servers: if stun.is_empty() {
                Vec::new()
            } else {
                vec![IceServer { urls: stun, username: None, credential: None }]
            },
            media: config
                .consult_media
                .then_some(coherency_actors::room::sfu::SfuConfig { loopback_only: config.webrtc_loopback_only }),
        },
        now: Arc::new(move || clock2.now()),
        waiting: Default::default(),
    }
}

fn split_list(s: &str) -> Vec<String> {
    s.split(',').map(|x| x.trim().to_string()).filter(|x| !x.is_empty()).collect()
}

/// The ICE servers for `user_id`: STUN as configured, TURN with credentials valid for
/// `turn_ttl_secs` (the TURN REST API scheme: username `expiry:user`, password
/// base64(HMAC-SHA1(secret, username))).
pub fn ice_servers_for(config: &Config, user_id: UserId, now: DateTime<Utc>) -> Vec<IceServer> {
    let mut out = Vec::new();
    let stun = split_list(&config.stun_urls);
    if !stun.is_empty() {
        out.push(IceServer { urls: stun, username: None, credential: None });
    }
    let turn = split_list(&config.turn_urls);
    if let (false, Some(secret)) = (turn.is_empty(), &config.turn_secret) {
        let expiry = now.timestamp() + config.turn_ttl_secs as i64;
        let username = format!("{expiry}:{user_id}");
        let mut mac = Hmac::<sha1::Sha1>::new_from_slice(secret.expose_secret().as_bytes())
            .unwrap_or_else(|_| unreachable!("HMAC accepts any key length"));
        mac.update(username.as_bytes());
        let credential = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
        out.push(IceServer { urls: turn, username: Some(username), credential: Some(credential) });
    }
    out
}

/// The signature header value for `body` sent at `timestamp`.
pub fn sign(secret: &[u8], timestamp: i64, body: &[u8]) -> String {
    let mut mac =
        Hmac::<Sha256>::new_from_slice(secret).unwrap_or_else(|_| unreachable!("HMAC accepts any key length"));
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// Attempts the oldest undelivered event. `Ok(None)`: try the next one now; `Ok(Some(d))`:
/// wait up to `d` (or a wake-up).
async fn deliver_next(
    store: &PgRoomStore,
    client: &reqwest::Client,
    url: &str,
    secret: &[u8],
) -> Result<Option<Duration>, sqlx::Error> {
    let mut tx = store.pg.begin().await?;
    let locked: bool = sqlx::query_scalar!(r#"SELECT pg_try_advisory_xact_lock($1) AS "locked!""#, WEBHOOK_LOCK)
        .fetch_one(&mut *tx)
        .await?;
    if !locked {
        return Ok(Some(Duration::from_secs(1)));
    }
    let row = sqlx::query!(
        "SELECT id, consult_id, seq, kind, body, webhook_attempts, webhook_next_at FROM consult_events
         WHERE webhook_done_at IS NULL ORDER BY id LIMIT 1",
    )
    .fetch_optional(&mut *tx)
    .await?;
    let Some(row) = row else { return Ok(Some(Duration::from_secs(5))) };
    let now = store.clock.now();
    if let Some(n) = row.webhook_next_at {
        if n > now {
            return Ok(Some((n - now).to_std().unwrap_or(Duration::from_millis(50))));
        }
    }
    let (id, consult_id, seq, kind, body, attempts) =
        (row.id, row.consult_id, row.seq, row.kind, row.body, row.webhook_attempts);
    let body = serde_json::to_vec(&body).unwrap_or_default();
    let ts = now.timestamp();
    let res = client
        .post(url)
        .header("content-type", "application/json")
        .header("idempotency-key", format!("{consult_id}:{seq}"))
        .header("x-coherency-event", kind)
        .header("x-coherency-delivery", id.to_string())
        .header("x-coherency-timestamp", ts.to_string())
        .header("x-coherency-signature", sign(secret, ts, &body))
        .body(body)
        .send()
        .await;
    let outcome = match res {
        Ok(r) if r.status().is_success() => Ok(()),
        Ok(r) => Err(format!("status {}", r.status().as_u16())),
        Err(e) => Err(if e.is_timeout() { "timeout".into() } else { "connection failed".into() }),
    };
    match outcome {
        Ok(()) => {
            sqlx::query!(
                "UPDATE consult_events SET webhook_done_at = $2, webhook_attempts = webhook_attempts + 1,
                    webhook_error = NULL WHERE id = $1",
                id,
                now
            )
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
            Ok(None)
        }
        Err(why) => {
            let backoff =
                (WEBHOOK_FIRST_BACKOFF * 2u32.saturating_pow(attempts.clamp(0, 16) as u32)).min(WEBHOOK_MAX_BACKOFF);
            let next = now + chrono::Duration::from_std(backoff).unwrap_or_default();
            sqlx::query!(
                "UPDATE consult_events SET webhook_attempts = webhook_attempts + 1, webhook_next_at = $2,
                    webhook_error = $3 WHERE id = $1",
                id,
                next,
                why
            )
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
            Ok(Some(backoff))
        }
    }
}
