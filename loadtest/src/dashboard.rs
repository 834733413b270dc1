//! The `dashboard` scenario: many live boards (`GET /v1/dashboard/ws`) open as one
//! clinician while a driver changes that clinician's calendar through the public API —
//! patients booking a slot and cancelling it again, one change at a time at a fixed rate.
//! Each change is a delta every board must receive; the run reports how long each took
//! from the start of the API call that made it to each board reading it ("delivery"), the
//! API calls' own latency, the hub-to-board time of each upsert, and every board delta that
//! never arrived. With `--waiting N` (and an administrator's login) N more patients sit in
//! the clinician's waiting room during the run, so a demo board shows someone waiting.
//!
//! With several `--target`s the boards are opened round-robin over the nodes (board `i` on
//! node `i mod n`) and so are the driver's changes (change `k` through node `k mod n`), so
//! every change made on one node must reach the boards of every other node.

use std::collections::HashMap;
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use coherency_protocol::dashboard::{Change, ServerMsg};
use futures_util::{SinkExt, StreamExt};
use serde_json::json;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;
use uuid::Uuid;

use crate::api::{self, Staff};
use crate::stats::{Errors, Latencies, Report};
use crate::DashboardArgs;

/// Sockets opened at once.
const CONNECT_CONCURRENCY: usize = 50;
/// After the last change, how long boards may take to receive it before it counts as missed.
const DRAIN: Duration = Duration::from_secs(5);
/// Patients taking turns at booking (each books and cancels its own).
const PATIENTS: usize = 4;

/// One change the driver made: the appointment, whether it was the booking (upsert) or
/// the cancellation (removal), and when the call started and ended.
struct Made {
    id: Uuid,
    upsert: bool,
    start: Instant,
    end: Instant,
}

/// What one board saw: (appointment, upsert?, when read).
type Seen = Vec<(Uuid, bool, Instant)>;

/// What one board saw and how long upserts took from the hub to it.
#[derive(Default)]
struct Watched {
    seen: Seen,
    /// Read time minus the item's `updated_ms` (when the hub took the change in), for
    /// upserts. Both are this machine's wall clock when client and server share it.
    from_hub: Latencies,
}

fn unix_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

fn ws_url(target: &str) -> String {
    let base = target.trim_end_matches('/');
    let base = base.replacen("https://", "wss://", 1).replacen("http://", "ws://", 1);
    format!("{base}/v1/dashboard/ws")
}

type Ws = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Opens a board and reads up to its snapshot.
async fn open_board(target: &str, token: &str) -> anyhow::Result<Ws> {
    let mut req = ws_url(target).into_client_request()?;
    req.headers_mut().insert("authorization", format!("Bearer {token}").parse()?);
    let (mut ws, _) = tokio::time::timeout(Duration::from_secs(20), tokio_tungstenite::connect_async(req))
        .await
        .map_err(|_| anyhow!("connect timed out"))??;
    ws.send(Message::text(json!({"t": "hello", "v": 1}).to_string())).await?;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let msg = tokio::time::timeout_at(deadline, ws.next()).await.map_err(|_| anyhow!("no snapshot"))?;
        match msg {
            Some(Ok(Message::Text(t))) if t.contains("\"snapshot\"") => return Ok(ws),
            Some(Ok(_)) => continue,
            Some(Err(e)) => return Err(e.into()),
            None => bail!("closed before the snapshot"),
        }
    }
}

/// Reads a board until `stop`, answering pings, recording every booking delta.
async fn watch(mut ws: Ws, stop: Instant) -> (Watched, Option<String>) {
    let mut seen = Watched::default();
    loop {
        let next = match tokio::time::timeout_at(stop, ws.next()).await {
            Err(_) => return (seen, None),
            Ok(None) => return (seen, Some("board_closed".into())),
            Ok(Some(Err(_))) => return (seen, Some("board_error".into())),
            Ok(Some(Ok(m))) => m,
        };
        let at = Instant::now();
        let Message::Text(t) = next else {
            if let Message::Close(f) = next {
                return (seen, Some(format!("board_close_{}", f.map_or(1005, |f| u16::from(f.code)))));
            }
            continue;
        };
        match serde_json::from_str::<ServerMsg>(&t) {
            Ok(ServerMsg::Delta(d)) => match d.change {
                Change::Upsert { item } if item.status == "booked" => {
                    let ms = (unix_ms() - item.updated_ms).max(0) as u64;
                    seen.from_hub.record(Duration::from_millis(ms));
                    seen.seen.push((item.id, true, at));
                }
                Change::Remove { id, .. } => seen.seen.push((id, false, at)),
                _ => {}
            },
            Ok(ServerMsg::Ping { .. }) if ws.send(Message::text(r#"{"t":"pong"}"#)).await.is_err() => {
                return (seen, Some("board_error".into()));
            }
            Ok(ServerMsg::Snapshot(_)) => return (seen, Some("board_resnapshot".into())),
            _ => {}
        }
    }
}

/// Puts `n` new patients in consults with the clinician and checks them in: they wait on
/// the boards. Returns the consults.
async fn check_in_patients(
    http: &reqwest::Client,
    target: &str,
    staff: &Staff,
    admin: &Staff,
    tag: &str,
    n: usize,
) -> anyhow::Result<Vec<String>> {
    let mut consults = Vec::new();
    for i in 0..n {
        let (token, patient_id) = api::patient(http, target, tag, 1000 + i).await.map_err(|e| e.error)?;
        let path = format!("/v1/patients/{patient_id}/care-team");
        api::call(http, target, &path, Some(&admin.token), &json!({"clinician_id": staff.user_id}))
            .await
            .map_err(|e| e.error.context("adding the clinician to the care team"))?;
        let c = api::call(http, target, "/v1/consults", Some(&staff.token), &json!({"patient_id": patient_id}))
            .await
            .map_err(|e| e.error.context("creating a consult"))?;
        let id = api::field(&c, "/id", "consult").map_err(|e| e.error)?.to_owned();
        api::call(http, target, &format!("/v1/consults/{id}/check-in"), Some(&token), &json!({}))
            .await
            .map_err(|e| e.error.context("checking in"))?;
        consults.push(id);
    }
    Ok(consults)
}

pub async fn run(args: &DashboardArgs) -> anyhow::Result<Report> {
    // Ctrl-C is caught from the start (a handler installed later would let an early one kill
    // the run before its waiting patients' consults are ended).
    let mut interrupt = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())?;
    let common = &args.common;
    let (target, http, staff) = api::start_as_clinician(common, &args.staff).await?;
    let (type_id, slots) = api::calendar(&http, &target, &staff, PATIENTS).await?;
    let tag = api::run_tag();
    let mut patients = Vec::new();
    for i in 0..PATIENTS {
        let at = api::target_for(&common.target, i);
        patients.push(api::patient(&http, at, &tag, i).await.map_err(|e| e.error)?);
    }
    let mut waiting = Vec::new();
    if args.waiting > 0 {
        let login = (args.admin_email.as_ref(), args.admin_password.as_ref(), args.admin_totp.as_deref());
        let admin = api::sign_in(&http, &target, args.admin_token.as_deref(), login)
            .await
            .context("--waiting needs an administrator: --admin-email and --admin-password, or --admin-token")?
            .map_err(|e| e.error.context("admin sign-in"))?;
        waiting = check_in_patients(&http, &target, &staff, &admin, &tag, args.waiting).await?;
    }

    // Open the boards, spread over the ramp-up and the targets.
    let mut errors = Errors::default();
    let ramp = common.ramp_up.0;
    let mut boards = Vec::with_capacity(args.sockets);
    let started = Instant::now();
    let mut opening = futures_util::stream::iter((0..args.sockets).map(|i| {
        let t = api::target_for(&common.target, i).to_owned();
        let token = staff.token.clone();
        let at = started + ramp.mul_f64(i as f64 / args.sockets.max(1) as f64);
        async move {
            tokio::time::sleep_until(at).await;
            open_board(&t, &token).await
        }
    }))
    .buffer_unordered(CONNECT_CONCURRENCY);
    while let Some(r) = opening.next().await {
        match r {
            Ok(ws) => boards.push(ws),
            Err(e) => {
                if !common.quiet {
                    eprintln!("loadtest: board: {e:#}");
                }
                errors.add("board_connect");
            }
        }
    }
    drop(opening);
    let open = boards.len();
    if !common.quiet {
        eprintln!("loadtest: {open} boards open in {:.1} s", started.elapsed().as_secs_f64());
    }

    // Watch while the driver changes the calendar.
    let duration = common.duration.map_or(Duration::from_secs(10), |d| d.0);
    let stop = Instant::now() + duration + DRAIN;
    let watchers: Vec<_> = boards.into_iter().map(|ws| tokio::spawn(watch(ws, stop))).collect();

    let mut made: Vec<Made> = Vec::new();
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / args.rate.max(0.1)));
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let driving = Instant::now();
    let mut held: Vec<Option<Uuid>> = vec![None; PATIENTS];
    let mut turn = 0usize;
    let mut change_call = Latencies::new();
    // Ctrl-C stops the driving early; the waiting patients' consults are still ended below
    // (unless --keep-waiting), so an interrupted demo leaves nobody in the waiting room.
    let mut interrupted = false;
    while driving.elapsed() < duration {
        tokio::select! {
            _ = tick.tick() => {}
            _ = interrupt.recv() => {
                interrupted = true;
                break;
            }
        }
        let (p, at) = (turn % PATIENTS, api::target_for(&common.target, turn));
        turn += 1;
        let (token, _) = &patients[p];
        let start = Instant::now();
        let res = match held[p].take() {
            None => {
                let slot = &slots[p];
                api::call(
                    &http,
                    at,
                    "/v1/appointments",
                    Some(token),
                    &json!({"clinician_id": staff.user_id, "type_id": type_id, "start": slot, "confirm": true}),
                )
                .await
                .and_then(|v| {
                    let id: Uuid = api::field(&v, "/id", "appointment")?.parse().map_err(|e| api::SetupError {
                        code: "bad_json".into(),
                        error: anyhow!("appointment id: {e}"),
                    })?;
                    Ok((id, true))
                })
            }
            Some(id) => api::call(
                &http,
                at,
                &format!("/v1/appointments/{id}/cancel"),
                Some(token),
                &json!({"reason": "load test"}),
            )
            .await
            .map(|_| (id, false)),
        };
        let end = Instant::now();
        match res {
            Ok((id, upsert)) => {
                change_call.record(end - start);
                if upsert {
                    held[p] = Some(id);
                }
                made.push(Made { id, upsert, start, end });
            }
            Err(e) => errors.add(e.code.replacen("setup_", "change_", 1)),
        }
    }
    let driven = driving.elapsed().as_secs_f64();
    if !args.keep_waiting {
        for id in &waiting {
            let ended =
                api::call(&http, &target, &format!("/v1/consults/{id}/end"), Some(&staff.token), &json!({})).await;
            if let Err(e) = ended {
                errors.add(e.code.replacen("setup_", "end_", 1));
            }
        }
    }
    if interrupted {
        for w in &watchers {
            w.abort();
        }
        let left = if args.keep_waiting { "left waiting" } else { "ended" };
        anyhow::bail!("interrupted after {driven:.1} s ({} waiting patients' consults {left})", waiting.len());
    }

    // Join what the boards saw with what was made.
    let mut delivery = Latencies::new();
    let mut after_answer = Latencies::new();
    let mut from_hub = Latencies::new();
    let index: HashMap<(Uuid, bool), &Made> = made.iter().map(|m| ((m.id, m.upsert), m)).collect();
    let mut delivered = 0u64;
    for w in watchers {
        let (watched, err) = w.await.unwrap_or_else(|_| (Watched::default(), Some("board_task".into())));
        if let Some(e) = err {
            errors.add(e);
        }
        from_hub.merge(&watched.from_hub);
        let mut got = 0u64;
        for (id, upsert, at) in watched.seen {
            if let Some(m) = index.get(&(id, upsert)) {
                delivery.record(at.saturating_duration_since(m.start));
                after_answer.record(at.saturating_duration_since(m.end));
                got += 1;
            }
        }
        delivered += got;
        let missed = made.len() as u64 - got.min(made.len() as u64);
        for _ in 0..missed {
            errors.add("delta_missed");
        }
    }

    let mut counts = std::collections::BTreeMap::new();
    counts.insert("sockets".into(), open as f64);
    counts.insert("waiting".into(), waiting.len() as f64);
    counts.insert("changes".into(), made.len() as f64);
    counts.insert("changes_per_s".into(), (made.len() as f64 / driven.max(1e-9) * 10.0).round() / 10.0);
    counts.insert("deliveries".into(), delivered as f64);
    counts.insert("deliveries_per_s".into(), (delivered as f64 / driven.max(1e-9)).round());
    let mut latencies = std::collections::BTreeMap::new();
    latencies.insert("delivery".into(), delivery.summary());
    latencies.insert("after_answer".into(), after_answer.summary());
    latencies.insert("change_call".into(), change_call.summary());
    latencies.insert("hub_to_board".into(), from_hub.summary());
    Ok(Report::named("dashboard", &common.target, ramp.as_secs_f64(), driven, latencies, counts, errors))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn board_urls_follow_the_scheme() {
        assert_eq!(ws_url("http://127.0.0.1:8080/"), "ws://127.0.0.1:8080/v1/dashboard/ws");
        assert_eq!(ws_url("https://clinic.example"), "wss://clinic.example/v1/dashboard/ws");
    }

    #[test]
    fn deltas_parse_as_the_server_sends_them() {
        let id = Uuid::now_v7();
        let t = json!({"t": "delta", "seq": 3, "op": "remove", "section": "bookings", "id": id}).to_string();
        let m: ServerMsg = serde_json::from_str(&t).unwrap_or_else(|e| panic!("{e}"));
        assert!(matches!(m, ServerMsg::Delta(d) if matches!(d.change, Change::Remove { id: x, .. } if x == id)));
    }
}
