//! The live board socket over real sockets: role scoping of booking deltas, resume after a
//! drop, and a fresh snapshot for a viewer too far behind.

use std::time::Duration;

use coherency::auth::Role;
use coherency_actors::dashboard::{Apply, BoardMirror, Status};
use coherency_protocol::dashboard::{Change, Item, Position, Section, ServerMsg};
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;
use uuid::Uuid;

use crate::helpers::{eventually, spawn_app, spawn_app_with, TestApp, User};

type Ws = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// A board socket and what it has seen.
struct Board {
    ws: Ws,
    mirror: BoardMirror,
    log: Vec<ServerMsg>,
}

impl Board {
    /// Opens a board; with `from`, resumes from that board's position and keeps its view.
    async fn open(app: &TestApp, user: &User, from: Option<BoardMirror>) -> Self {
        let resume: Option<Position> = from.as_ref().map(BoardMirror::position);
        let mut req = format!("ws://127.0.0.1:{}/v1/dashboard/ws", app.port).into_client_request().unwrap();
        req.headers_mut().insert("authorization", format!("Bearer {}", user.token).parse().unwrap());
        let (mut ws, _) = tokio_tungstenite::connect_async(req).await.expect("board socket opens");
        let hello = json!({"t": "hello", "v": 1, "resume": resume});
        ws.send(Message::text(hello.to_string())).await.unwrap();
        let mut b = Self { ws, mirror: from.unwrap_or_default(), log: Vec::new() };
        b.until("the start", |m| matches!(m, ServerMsg::Snapshot(_) | ServerMsg::Resumed { .. })).await;
        b
    }

    /// Reads until a message satisfies `done` (bounded).
    async fn until(&mut self, what: &str, mut done: impl FnMut(&ServerMsg) -> bool) -> ServerMsg {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let next = tokio::time::timeout_at(deadline, self.ws.next())
                .await
                .unwrap_or_else(|_| panic!("timed out waiting for {what}"));
            let Some(Ok(Message::Text(t))) = next else { continue };
            let msg: ServerMsg = serde_json::from_str(&t).expect("server message");
            self.mirror.apply(&msg);
            self.log.push(msg.clone());
            if done(&msg) {
                return msg;
            }
        }
    }

    /// Reads everything up to the hub's current sequence (a ping carries the position).
    async fn catch_up(&mut self, app: &TestApp) {
        let head = app.state.dashboard.send(Status).await.unwrap().seq;
        if self.mirror.seq >= head {
            return;
        }
        self.until("catching up", |m| match m {
            ServerMsg::Delta(d) => d.seq >= head,
            ServerMsg::Ping { seq } => *seq >= head,
            _ => false,
        })
        .await;
    }

    fn bookings(&self) -> Vec<&Item> {
        self.mirror.items.values().filter(|i| i.section == Section::Bookings).collect()
    }
}

/// A clinician with hours 08:00–18:00 UTC every day and a 30-minute telehealth type.
pub async fn clinician_with_calendar(app: &TestApp) -> (User, Uuid) {
    clinician_with_hours(app, "08:00", "18:00", 30).await
}

/// A clinician working `start`–`end` UTC every day, with one telehealth appointment type of
/// `minutes` (no buffers, no notice).
pub async fn clinician_with_hours(app: &TestApp, start: &str, end: &str, minutes: u32) -> (User, Uuid) {
    let clin = app.staff(Role::Clinician, true).await;
    let weekly: Vec<Value> = (1..=7).map(|d| json!({"weekday": d, "start": start, "end": end})).collect();
    let res = app
        .client
        .put(app.url(&format!("/v1/clinicians/{}/schedule", clin.id)))
        .bearer_auth(&clin.token)
        .json(&json!({"time_zone": "UTC", "horizon_days": 30, "min_notice_minutes": 0, "weekly": weekly}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200, "{}", res.text().await.unwrap());
    let res = app
        .post_auth(
            &format!("/v1/clinicians/{}/appointment-types", clin.id),
            &clin.token,
            &json!({"name": "Wound review", "duration_minutes": minutes, "buffer_before_minutes": 0,
                    "buffer_after_minutes": 0, "modality": "telehealth"}),
        )
        .await;
    assert_eq!(res.status(), 201, "{}", res.text().await.unwrap());
    let ty = res.json::<Value>().await.unwrap()["id"].as_str().unwrap().parse().unwrap();
    (clin, ty)
}

/// Books `patient` with `clin` the day after tomorrow at `hour`:00 UTC (inside the board's
/// window, clear of any notice).
pub(crate) async fn book(app: &TestApp, patient: &User, clin: &User, ty: Uuid, hour: u32) -> Uuid {
    let day = (app.clock.now() + chrono::Duration::days(2)).date_naive();
    book_at(app, patient, clin, ty, &format!("{day}T{hour:02}:00:00Z")).await
}

/// Books (and confirms) `patient` with `clin` at `start` (RFC 3339).
pub(crate) async fn book_at(app: &TestApp, patient: &User, clin: &User, ty: Uuid, start: &str) -> Uuid {
    let res = app
        .post_auth(
            "/v1/appointments",
            &patient.token,
            &json!({"clinician_id": clin.id, "type_id": ty, "start": start, "confirm": true}),
        )
        .await;
    assert_eq!(res.status(), 201, "book: {}", res.text().await.unwrap());
    res.json::<Value>().await.unwrap()["id"].as_str().unwrap().parse().unwrap()
}

fn has_upsert(m: &ServerMsg, id: Uuid) -> bool {
    matches!(m, ServerMsg::Delta(d) if matches!(&d.change, Change::Upsert { item } if item.id == id))
}

#[actix_rt::test]
async fn a_booking_reaches_its_clinicians_board_and_never_another_clinicians() {
    let app = spawn_app().await;
    let (alice, alice_ty) = clinician_with_calendar(&app).await;
    let (bob, bob_ty) = clinician_with_calendar(&app).await;
    let patient = app.patient().await;
    let mut alice_board = Board::open(&app, &alice, None).await;
    let mut bob_board = Board::open(&app, &bob, None).await;

    let for_alice = book(&app, &patient, &alice, alice_ty, 10).await;
    let msg = alice_board.until("alice's booking", |m| has_upsert(m, for_alice)).await;
    let ServerMsg::Delta(d) = msg else { unreachable!() };
    let Change::Upsert { item } = d.change else { unreachable!() };
    assert_eq!((item.status.as_str(), item.clinician_id), ("booked", Some(alice.id)));
    assert_eq!(item.patient_name.as_deref(), Some("Ada Lovelace"), "the name is added for the viewer");

    // Bob's own booking arrives after Alice's on the hub: by then Alice's would have too.
    let for_bob = book(&app, &patient, &bob, bob_ty, 11).await;
    bob_board.until("bob's booking", |m| has_upsert(m, for_bob)).await;
    bob_board.catch_up(&app).await;
    alice_board.catch_up(&app).await;
    let seen_by_bob: Vec<Uuid> = bob_board.bookings().iter().map(|i| i.id).collect();
    assert_eq!(seen_by_bob, vec![for_bob]);
    assert!(!bob_board.log.iter().any(|m| has_upsert(m, for_alice)), "bob never saw alice's booking");
    assert!(!alice_board.log.iter().any(|m| has_upsert(m, for_bob)), "alice never saw bob's booking");

    // A patient sees their own appointments; a stranger sees none.
    let patient_board = Board::open(&app, &patient, None).await;
    assert_eq!(patient_board.bookings().len(), 2);
    let stranger = app.patient().await;
    let stranger_board = Board::open(&app, &stranger, None).await;
    assert!(stranger_board.bookings().is_empty());
}

/// A consult only its host is in (ad hoc, or an appointment's opened early) is on the
/// patient's board while the host is in the room, for them to join; once the host leaves it
/// is gone again.
#[actix_rt::test]
async fn a_consult_the_host_waits_in_is_on_the_patients_board_until_the_host_leaves() {
    let app = spawn_app().await;
    let s = crate::consults::setup(&app).await;
    let mut board = Board::open(&app, &s.patient, None).await;
    board.catch_up(&app).await;
    assert!(!board.mirror.items.values().any(|i| i.id == s.consult), "a consult nobody is in is not in progress");
    let mut host = crate::consults::connect(&app, s.consult, &s.clin).await.expect("the host connects");
    crate::consults::until(&mut host, "welcome").await;
    board.until("the open consult", |m| has_upsert(m, s.consult)).await;
    let item = board.mirror.items.values().find(|i| i.id == s.consult).unwrap();
    assert_eq!((item.section, item.status.as_str()), (Section::Consults, "open"));
    assert_eq!(item.patient_id, s.patient.patient_id);
    crate::consults::send(&mut host, json!({"type": "leave"})).await;
    board
        .until(
            "the consult gone once the host left",
            |m| matches!(m, ServerMsg::Delta(d) if matches!(&d.change, Change::Remove { id, .. } if *id == s.consult)),
        )
        .await;
}

#[actix_rt::test]
async fn a_checked_in_patient_waits_on_their_clinicians_board_then_moves_to_in_consult() {
    let app = spawn_app().await;
    let s = crate::consults::setup(&app).await;
    let other = app.staff(Role::Clinician, true).await;
    let admin = app.staff(Role::Admin, true).await;
    let mut board = Board::open(&app, &s.clin, None).await;
    let mut other_board = Board::open(&app, &other, None).await;

    let res = app.post_auth(&format!("/v1/consults/{}/check-in", s.consult), &s.patient.token, &json!({})).await;
    assert_eq!(res.status(), 200, "{}", res.text().await.unwrap());
    let checked_in = std::time::Instant::now();
    let pid: Uuid = res.json::<Value>().await.unwrap()["participant_id"].as_str().unwrap().parse().unwrap();
    board.until("the waiting patient", |m| has_upsert(m, pid)).await;
    let waited = checked_in.elapsed();
    assert!(waited < Duration::from_secs(1), "on the board {waited:?} after check-in");
    let item = board.mirror.items.values().find(|i| i.id == pid).unwrap().clone();
    assert_eq!((item.section, item.status.as_str()), (Section::Waiting, "waiting"));
    assert_eq!(item.patient_id, s.patient.patient_id);
    assert_eq!(item.data["consult_id"], s.consult.to_string());
    assert_eq!(item.patient_name.as_deref(), Some("Ada Lovelace"));

    let res =
        app.post_auth(&format!("/v1/consults/{}/participants/{pid}/admit", s.consult), &s.clin.token, &json!({})).await;
    assert_eq!(res.status(), 200, "{}", res.text().await.unwrap());
    board.until("the consult", |m| has_upsert(m, s.consult)).await;
    board.catch_up(&app).await;
    let sections: Vec<(Section, &str)> = board.mirror.items.values().map(|i| (i.section, i.status.as_str())).collect();
    assert_eq!(sections, vec![(Section::Consults, "in_consult")], "the patient moved from waiting to in consult");
    let consult = board.mirror.items.values().next().unwrap();
    assert_eq!(consult.data["participants"], json!(["host", "patient"]));
    assert_eq!(consult.data["connected"], json!([]), "admitted, but nobody's connection is in the room");

    // A board opened now (snapshot from the hub) and one rebuilt from the database agree.
    let admin_board = Board::open(&app, &admin, None).await;
    assert!(admin_board.mirror.items.values().any(|i| i.id == s.consult && i.section == Section::Consults));
    let reloaded = coherency::dashboard::reload(&app.pg, &app.state.clock).await.unwrap();
    let live: Vec<&Item> = reloaded.items.iter().filter(|i| i.id == s.consult || i.id == pid).collect();
    assert_eq!(live.len(), 1, "the database has the consult in progress and nobody waiting");
    assert_eq!(live[0].data["participants"], consult.data["participants"]);

    // Her signalling connection joins the room: now she is in the call.
    let _ws = crate::consults::connect(&app, s.consult, &s.patient).await.expect("the admitted patient connects");
    board
        .until("her connection in the room", |m| {
            matches!(m, ServerMsg::Delta(d) if matches!(&d.change,
                Change::Upsert { item } if item.id == s.consult && item.data["connected"] == json!(["patient"])))
        })
        .await;

    // Ending the consult takes it off the board.
    let res = app.post_auth(&format!("/v1/consults/{}/end", s.consult), &s.clin.token, &json!({})).await;
    assert_eq!(res.status(), 200, "{}", res.text().await.unwrap());
    board
        .until(
            "the consult's end",
            |m| matches!(m, ServerMsg::Delta(d) if matches!(&d.change, Change::Remove { id, .. } if *id == s.consult)),
        )
        .await;

    other_board.catch_up(&app).await;
    assert!(
        !other_board.log.iter().any(|m| has_upsert(m, pid) || has_upsert(m, s.consult)),
        "another clinician never sees this patient waiting or in consult"
    );
}

#[actix_rt::test]
async fn a_board_that_drops_and_resumes_ends_like_one_that_never_dropped() {
    let app = spawn_app().await;
    let admin = app.staff(Role::Admin, true).await;
    let (clin, ty) = clinician_with_calendar(&app).await;
    let patient = app.patient().await;
    let mut steady = Board::open(&app, &admin, None).await;
    let mut flaky = Board::open(&app, &admin, None).await;
    let first = book(&app, &patient, &clin, ty, 9).await;
    flaky.until("the first booking", |m| has_upsert(m, first)).await;
    let left_with = flaky.mirror.clone();
    drop(flaky);

    // Missed while away: a booking, a cancellation, a second booking.
    let second = book(&app, &patient, &clin, ty, 12).await;
    let res =
        app.post_auth(&format!("/v1/appointments/{first}/cancel"), &patient.token, &json!({"reason": "ill"})).await;
    assert!(res.status().is_success(), "cancel: {}", res.text().await.unwrap());
    let third = book(&app, &patient, &clin, ty, 14).await;
    steady.until("the third booking", |m| has_upsert(m, third)).await;

    let mut resumed = Board::open(&app, &admin, Some(left_with)).await;
    assert!(matches!(resumed.log[0], ServerMsg::Resumed { .. }), "resumed, not a new snapshot: {:?}", resumed.log[0]);
    resumed.catch_up(&app).await;
    steady.catch_up(&app).await;
    assert_eq!(resumed.mirror.items, steady.mirror.items);
    let ids: Vec<Uuid> = steady.bookings().iter().map(|i| i.id).collect();
    assert!(ids.contains(&second) && ids.contains(&third) && !ids.contains(&first));
}

#[actix_rt::test]
async fn a_board_too_far_behind_gets_a_fresh_snapshot() {
    let app = spawn_app().await;
    let admin = app.staff(Role::Admin, true).await;
    let board = Board::open(&app, &admin, None).await;
    let left_with = board.mirror.clone();
    let pos = left_with.position();
    drop(board);
    // More changes than the ring keeps.
    let id = Uuid::now_v7();
    let changes: Vec<Change> = (0..5000)
        .map(|n| Change::Upsert {
            item: Item {
                section: Section::Scans,
                id,
                patient_id: None,
                clinician_id: None,
                status: "streaming".into(),
                since_ms: 0,
                updated_ms: n,
                data: Default::default(),
                patient_name: None,
                wound: None,
            },
        })
        .collect();
    app.state.dashboard.send(Apply(changes)).await.unwrap();
    let status = app.state.dashboard.send(Status).await.unwrap();
    assert!(status.oldest > pos.seq + 1, "the ring no longer holds the position");
    let back = Board::open(&app, &admin, Some(left_with)).await;
    let ServerMsg::Snapshot(s) = &back.log[0] else { panic!("expected a snapshot, got {:?}", back.log[0]) };
    assert_eq!(s.seq, status.seq);
    assert_eq!(s.items.iter().find(|i| i.id == id).map(|i| i.updated_ms), Some(4999));
}

/// Benchmark (ignored by default): 1,000 dashboard sockets, deltas applied on the hub,
/// delivery latency from `Apply` to each socket reading the delta. Run with
/// `cargo nextest run -p coherency --run-ignored only dashboard_delivery --no-capture`.
#[actix_rt::test]
#[ignore = "benchmark"]
async fn dashboard_delivery_p99_with_1000_sockets() {
    const SOCKETS: usize = 1000;
    const DELTAS: u64 = 20;
    // A thousand boards from one address and one token: over the per-address connection cap
    // and the per-caller request rate (a ticket each).
    let app = spawn_app_with(|mut c| {
        c.connections_per_address = 0;
        c.api_rate_per_sec = 1_000_000;
        c.api_rate_burst = 1_000_000;
        c
    })
    .await;
    let admin = app.staff(Role::Admin, true).await;
    let epoch = std::time::Instant::now();
    let mut tasks = Vec::new();
    let (ready_tx, mut ready_rx) = tokio::sync::mpsc::channel::<()>(SOCKETS);
    for _ in 0..SOCKETS {
        let mut board = Board::open(&app, &admin, None).await;
        let ready = ready_tx.clone();
        tasks.push(tokio::spawn(async move {
            let _ = ready.send(()).await;
            let mut lat = Vec::new();
            while lat.len() < DELTAS as usize {
                let Ok(Some(Ok(Message::Text(t)))) =
                    tokio::time::timeout(Duration::from_secs(30), board.ws.next()).await
                else {
                    break;
                };
                if let Ok(ServerMsg::Delta(d)) = serde_json::from_str::<ServerMsg>(&t) {
                    if let Change::Upsert { item } = d.change {
                        let sent = item.data["sent_us"].as_u64().unwrap_or(0);
                        lat.push(epoch.elapsed().as_micros() as u64 - sent);
                    }
                }
            }
            lat
        }));
    }
    for _ in 0..SOCKETS {
        ready_rx.recv().await.unwrap();
    }
    for n in 0..DELTAS {
        let mut data = serde_json::Map::new();
        data.insert("sent_us".into(), (epoch.elapsed().as_micros() as u64).into());
        let item = Item {
            section: Section::Scans,
            id: Uuid::from_u128(u128::from(n % 4) + 1),
            patient_id: None,
            clinician_id: None,
            status: "streaming".into(),
            since_ms: 0,
            updated_ms: n as i64,
            data,
            patient_name: None,
            wound: None,
        };
        app.state.dashboard.do_send(Apply(vec![Change::Upsert { item }]));
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    all.sort_unstable();
    let pct = |p: f64| all[((all.len() as f64 * p) as usize).min(all.len() - 1)] as f64 / 1000.0;
    println!(
        "dashboard delivery: {} sockets, {} deltas, {} deliveries: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        SOCKETS,
        DELTAS,
        all.len(),
        pct(0.5),
        pct(0.99),
        pct(1.0)
    );
    assert_eq!(all.len(), SOCKETS * DELTAS as usize, "every socket got every delta");
}

/// The `loadtest` binary (built by `scripts/test` before the suite, beside this test binary).
pub fn loadtest_bin() -> std::path::PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    // target/debug/deps/api-… → target/debug/loadtest
    let bin = exe.parent().and_then(|d| d.parent()).map(|d| d.join("loadtest")).expect("target dir");
    assert!(bin.is_file(), "{} is missing: run `cargo build -p coherency-loadtest` (scripts/test does)", bin.display());
    bin
}

/// Runs the `loadtest` binary against `app` with `args` and `env`, bounded to 2 minutes;
/// panics with its output unless it exits 0. Returns its JSON report.
pub async fn run_loadtest(app: &TestApp, args: &[&str], env: &[(&str, &str)]) -> Value {
    run_loadtest_on(&[&app.address], args, env).await
}

/// [`run_loadtest`] against several nodes, given in this order as `--target`s.
pub async fn run_loadtest_on(targets: &[&str], args: &[&str], env: &[(&str, &str)]) -> Value {
    let json = std::env::temp_dir().join(format!("loadtest-{}.json", Uuid::now_v7()));
    let out = tokio::process::Command::new(loadtest_bin())
        .args(args)
        .arg("-q")
        .args(targets.iter().flat_map(|t| ["--target", t]))
        .arg("--json")
        .arg(&json)
        .envs(env.iter().copied())
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(120), out).await.expect("loadtest finishes").unwrap();
    let report: Value = serde_json::from_slice(&std::fs::read(&json).unwrap_or_default()).unwrap_or(Value::Null);
    let _ = std::fs::remove_file(&json);
    // What the loadtest said (a failed part's cause, even with -q) goes to the test's own
    // output, which the runner shows when the test fails on the report.
    if !out.stderr.is_empty() {
        eprintln!("loadtest stderr:\n{}", String::from_utf8_lossy(&out.stderr));
    }
    assert!(
        out.status.success(),
        "loadtest failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    report
}

#[actix_rt::test]
async fn the_loadtest_dashboard_scenario_delivers_every_change_to_every_board() {
    let app = spawn_app().await;
    let (clin, _) = clinician_with_calendar(&app).await;
    let admin = app.staff(Role::Admin, true).await;
    let args = ["dashboard", "--sockets", "20", "--rate", "8", "--duration", "3s", "--waiting", "2"];
    let slo = ["--slo", "max_errors=0", "--slo", "delivery_p99_ms=5000"];
    let env = [("LOADTEST_STAFF_TOKEN", clin.token.as_str()), ("LOADTEST_ADMIN_TOKEN", admin.token.as_str())];
    let report = run_loadtest(&app, &[&args[..], &slo[..]].concat(), &env).await;
    let changes = report["counts"]["changes"].as_f64().unwrap();
    assert!(changes >= 10.0, "the driver made changes: {report}");
    assert_eq!(report["counts"]["sockets"], 20.0);
    assert_eq!(report["counts"]["deliveries"].as_f64(), Some(changes * 20.0), "every board saw every change");
    assert_eq!(report["latencies"]["delivery"]["count"].as_f64(), Some(changes * 20.0));
    // The driver's bookings and cancellations are real: all of them are in the database.
    let n: i64 = sqlx::query_scalar!(r#"SELECT count(*) AS "n!" FROM appointments WHERE clinician_id = $1"#, clin.id)
        .fetch_one(&app.pg)
        .await
        .unwrap();
    assert!(n >= 1 && n as f64 <= changes, "{n} appointments for {changes} changes");
    // Two patients waited in the clinician's consults during the run, which then ended.
    assert_eq!(report["counts"]["waiting"], 2.0);
    let ended: Vec<String> = sqlx::query_scalar!("SELECT status FROM consults WHERE clinician_id = $1", clin.id)
        .fetch_all(&app.pg)
        .await
        .unwrap();
    assert_eq!(ended, vec!["ended".to_string(); 2]);
}

#[actix_rt::test]
async fn an_interrupted_loadtest_leaves_nobody_in_the_waiting_room() {
    let app = spawn_app().await;
    let (clin, _) = clinician_with_calendar(&app).await;
    let admin = app.staff(Role::Admin, true).await;
    let child = tokio::process::Command::new(loadtest_bin())
        .args(["dashboard", "-q", "--sockets", "2", "--rate", "1", "--duration", "120s", "--waiting", "2"])
        .args(["--target", &app.address])
        .env("LOADTEST_STAFF_TOKEN", &clin.token)
        .env("LOADTEST_ADMIN_TOKEN", &admin.token)
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let pg = app.pg.clone();
    let waiting = || {
        let pg = pg.clone();
        async move {
            sqlx::query_scalar::<_, i64>(
                "SELECT count(*) FROM consult_participants p JOIN consults c ON c.id = p.consult_id
                  WHERE c.clinician_id = $1 AND p.state = 'waiting'",
            )
            .bind(clin.id)
            .fetch_one(&pg)
            .await
            .unwrap()
        }
    };
    eventually(Duration::from_secs(60), "two patients waiting", || {
        let w = waiting();
        async move { (w.await == 2).then_some(()) }
    })
    .await;
    // Ctrl-C, as in a terminal running scripts/demo-load.
    let pid = nix::unistd::Pid::from_raw(child.id().unwrap() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT).unwrap();
    let out = tokio::time::timeout(Duration::from_secs(30), child.wait_with_output()).await.expect("it stops").unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && stderr.contains("interrupted"), "{stderr}");
    assert_eq!(waiting().await, 0, "nobody is left waiting: {stderr}");
    let ended: Vec<String> = sqlx::query_scalar!("SELECT status FROM consults WHERE clinician_id = $1", clin.id)
        .fetch_all(&app.pg)
        .await
        .unwrap();
    assert_eq!(ended, vec!["ended".to_string(); 2]);
}

#[actix_rt::test]
async fn the_loadtest_booking_storm_never_double_books_and_leaves_every_slot_free() {
    let app = spawn_app_with(|mut c| {
        // The storm is the point: 16 patients hammering one calendar.
        c.api_rate_per_sec = 10_000;
        c.api_rate_burst = 10_000;
        c
    })
    .await;
    let (clin, _) = clinician_with_calendar(&app).await;
    let args = ["booking", "--concurrency", "16", "--slots", "3", "--duration", "3s", "--slo", "max_errors=0"];
    let report = run_loadtest(&app, &args, &[("LOADTEST_STAFF_TOKEN", clin.token.as_str())]).await;
    let c = &report["counts"];
    assert!(c["booked"].as_f64().unwrap() >= 3.0, "{report}");
    assert!(c["refused_409"].as_f64().unwrap() >= 1.0, "16 patients on 3 slots collide: {report}");
    assert_eq!(c["double_bookings"], 0.0);
    assert_eq!(c["booked_at_end"], 0.0, "every winner cancelled");
    assert_eq!(c["attempts"], c["booked"].as_f64().unwrap() + c["refused_409"].as_f64().unwrap());
    // The database agrees: no two live bookings of this clinician ever overlap now, and
    // every win is a row.
    let rows: i64 =
        sqlx::query_scalar!(r#"SELECT count(*) AS "n!" FROM appointments WHERE clinician_id = $1"#, clin.id)
            .fetch_one(&app.pg)
            .await
            .unwrap();
    assert_eq!(rows as f64, c["booked"].as_f64().unwrap());
}

#[actix_web::test]
async fn a_board_message_breaking_the_character_rule_is_refused_naming_the_field_then_closed() {
    let app = spawn_app().await;
    let (clin, _) = clinician_with_calendar(&app).await;
    let mut board = Board::open(&app, &clin, None).await;
    board.ws.send(Message::text(json!({"t": "ping\u{0}"}).to_string())).await.unwrap();
    let error = board.until("the error", |m| matches!(m, ServerMsg::Error { .. })).await;
    let ServerMsg::Error { code, message } = error else { unreachable!() };
    assert_eq!(code, "invalid_field");
    assert!(message.starts_with("`t`: must not contain control characters (U+0000)"), "{message}");
    // The board's protocol closes on a refused message (1008).
    let close = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match board.ws.next().await {
                Some(Ok(Message::Close(frame))) => return frame.map(|f| u16::from(f.code)),
                Some(Ok(_)) => continue,
                _ => return None,
            }
        }
    })
    .await
    .expect("the socket closes");
    assert_eq!(close, Some(1008));
}

#[actix_rt::test]
async fn a_scan_on_the_board_names_its_wound_and_site_and_never_the_other_wound() {
    use crate::wounds::{clinician_and_patient, heel, new_wound};
    let app = spawn_app().await;
    let (clin, patient, pid) = clinician_and_patient(&app).await;
    let h = new_wound(&app, &clin, pid, heel()).await;
    let s = new_wound(&app, &clin, pid, json!({"site_display": "Sacrum", "aetiology": "pressure", "stage": "3"})).await;
    let mut board = Board::open(&app, &clin, None).await;
    let mut scans = vec![];
    for w in [&h, &s] {
        let res = app
            .post_auth("/v1/scans", &clin.token, &json!({"patient_id": pid, "body_site": "skin", "wound_id": w["id"]}))
            .await;
        assert_eq!(res.status(), 201, "scan: {}", res.text().await.unwrap_or_default());
        let id: Uuid = res.json::<Value>().await.unwrap()["id"].as_str().unwrap().parse().unwrap();
        board.until("the scan", |m| has_upsert(m, id)).await;
        scans.push((id, w["id"].as_str().unwrap().parse::<Uuid>().unwrap()));
    }
    for ((scan, wound), (site, lat, aetiology)) in
        scans.iter().zip([("Heel", "left", "diabetic_foot"), ("Sacrum", "unspecified", "pressure")])
    {
        let item = board.mirror.items.values().find(|i| i.id == *scan).unwrap();
        assert_eq!(item.section, Section::Scans);
        let label = item.wound.as_ref().expect("the scan's wound is named");
        assert_eq!(
            (label.id, label.site.as_str(), label.laterality.as_str(), label.aetiology.as_str()),
            (*wound, site, lat, aetiology)
        );
        assert_eq!(item.patient_name.as_deref(), Some("Ada Lovelace"));
    }
    // The patient's own board names the wound too; a stranger's board has no such item.
    let own = Board::open(&app, &patient, None).await;
    let item = own.mirror.items.values().find(|i| i.id == scans[0].0).expect("the patient sees their scan");
    assert_eq!(item.wound.as_ref().map(|w| w.site.as_str()), Some("Heel"));
    let stranger = Board::open(&app, &app.patient().await, None).await;
    assert!(stranger.mirror.items.values().all(|i| i.wound.is_none() && i.patient_id != Some(pid)));
}
