//! Booking: no double booking by construction (one node or three), adjacency and buffers,
//! DST-correct slots, holds that expire, atomic reschedules, the waitlist, FHIR views and a
//! property test over random operation sequences.

use std::time::Duration;

use coherency::auth::Role;
use serde_json::{json, Value};
use uuid::Uuid;

use crate::helpers::{spawn_app, spawn_app_with, NodeProcess, TestApp, User};

/// A Tuesday far enough ahead that notice never bites and inside a 730-day horizon.
const DAY: &str = "2027-01-05";

struct Clinic {
    clin: User,
    ty: Uuid,
}

async fn put(app: &TestApp, path: &str, token: &str, body: &Value) -> reqwest::Response {
    app.client.put(app.url(path)).bearer_auth(token).json(body).send().await.unwrap()
}

async fn add_type(app: &TestApp, clin: &User, minutes: i32, before: i32, after: i32) -> Uuid {
    let res = app
        .post_auth(
            &format!("/v1/clinicians/{}/appointment-types", clin.id),
            &clin.token,
            &json!({"name": "Wound review", "duration_minutes": minutes, "buffer_before_minutes": before,
                    "buffer_after_minutes": after, "modality": "telehealth"}),
        )
        .await;
    assert_eq!(res.status(), 201, "{}", res.text().await.unwrap());
    res.json::<Value>().await.unwrap()["id"].as_str().unwrap().parse().unwrap()
}

async fn clinic_in(app: &TestApp, tz: &str, start: &str, end: &str) -> Clinic {
    let clin = app.staff(Role::Clinician, true).await;
    let weekly: Vec<Value> = (1..=7).map(|d| json!({"weekday": d, "start": start, "end": end})).collect();
    let res = put(
        app,
        &format!("/v1/clinicians/{}/schedule", clin.id),
        &clin.token,
        &json!({"time_zone": tz, "horizon_days": 730, "min_notice_minutes": 60, "weekly": weekly}),
    )
    .await;
    assert_eq!(res.status(), 200, "{}", res.text().await.unwrap());
    let ty = add_type(app, &clin, 30, 0, 0).await;
    Clinic { clin, ty }
}

async fn clinic(app: &TestApp) -> Clinic {
    clinic_in(app, "Europe/London", "09:00", "17:00").await
}

fn at(hhmm: &str) -> String {
    format!("{DAY}T{hhmm}:00Z")
}

async fn book(app: &TestApp, who: &User, c: &Clinic, ty: Uuid, start: &str, confirm: bool) -> (u16, Value) {
    let res = app
        .post_auth(
            "/v1/appointments",
            &who.token,
            &json!({"clinician_id": c.clin.id, "type_id": ty, "start": start, "confirm": confirm}),
        )
        .await;
    let s = res.status().as_u16();
    (s, res.json().await.unwrap_or(Value::Null))
}

async fn slots(
    app: &TestApp,
    who: &User,
    clinician: Uuid,
    ty: Uuid,
    from: &str,
    to: &str,
    tz: Option<&str>,
) -> Vec<String> {
    let mut q =
        vec![("clinician", clinician.to_string()), ("type", ty.to_string()), ("from", from.into()), ("to", to.into())];
    if let Some(tz) = tz {
        q.push(("tz", tz.into()));
    }
    let res = app.client.get(app.url("/v1/slots")).query(&q).bearer_auth(&who.token).send().await.unwrap();
    assert_eq!(res.status(), 200);
    let v: Value = res.json().await.unwrap();
    v["slots"].as_array().unwrap().iter().map(|s| s["start"].as_str().unwrap().to_string()).collect()
}

async fn overlaps(app: &TestApp) -> i64 {
    coherency::booking::overlaps(&app.pg).await.unwrap()
}

fn id(v: &Value) -> String {
    v["id"].as_str().unwrap().to_string()
}

#[actix_web::test]
async fn two_hundred_attempts_at_one_slot_over_three_nodes_book_it_once() {
    let app = spawn_app().await;
    let c = clinic(&app).await;
    let patients = [app.patient().await, app.patient().await, app.patient().await, app.patient().await];
    let nodes = [NodeProcess::start(&app.config, &[]), NodeProcess::start(&app.config, &[])];
    let bases = [app.url(""), nodes[0].url(""), nodes[1].url("")];
    let start = at("10:00");
    let mut tasks = Vec::new();
    for i in 0..200 {
        let url = format!("{}/v1/appointments", bases[i % 3]);
        let p = &patients[i % patients.len()];
        let body = json!({"clinician_id": c.clin.id, "type_id": c.ty, "start": start, "confirm": i % 2 == 0});
        let req = app.client.post(url).bearer_auth(&p.token).json(&body);
        tasks.push(tokio::spawn(async move {
            let res = req.send().await.unwrap();
            let s = res.status().as_u16();
            let v: Value = res.json().await.unwrap_or(Value::Null);
            (s, v["error"]["code"].as_str().unwrap_or_default().to_string())
        }));
    }
    let mut won = 0;
    let mut lost = 0;
    for t in tasks {
        match t.await.unwrap() {
            (201, _) => won += 1,
            (409, code) if code == "slot_taken" => lost += 1,
            other => panic!("unexpected answer {other:?}"),
        }
    }
    assert_eq!((won, lost), (1, 199));
    assert_eq!(overlaps(&app).await, 0);
    let live: i64 =
        sqlx::query_scalar!(r#"SELECT count(*) AS "n!" FROM appointments WHERE status IN ('held','booked')"#)
            .fetch_one(&app.pg)
            .await
            .unwrap();
    assert_eq!(live, 1);
}

#[actix_web::test]
async fn a_time_cancelled_on_another_node_is_bookable_here_at_once() {
    // Neither node rereads its calendar view during the test, so only the booking bus can
    // tell this node that the time came free.
    let app = spawn_app_with(|mut c| {
        c.booking_view_max_age_ms = 60_000;
        c
    })
    .await;
    let c = clinic(&app).await;
    let other = NodeProcess::start(&app.config, &[("COHERENCY_BOOKING_VIEW_MAX_AGE_MS", "60000")]);
    let (p1, p2) = (app.patient().await, app.patient().await);
    let (s, a) = book(&app, &p1, &c, c.ty, &at("09:00"), true).await;
    assert_eq!(s, 201);
    let (s, v) = book(&app, &p2, &c, c.ty, &at("09:00"), true).await;
    assert_eq!((s, v["error"]["code"].as_str()), (409, Some("slot_taken")));
    let res = app
        .client
        .post(other.url(&format!("/v1/appointments/{}/cancel", id(&a))))
        .bearer_auth(&p1.token)
        .json(&json!({"reason": "cannot make it"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    // The cancel's bus message takes milliseconds; 50 tries over 10 s leave room for a slow
    // machine without waiting out the 60 s view.
    let mut rebooked = false;
    for _ in 0..50 {
        match book(&app, &p2, &c, c.ty, &at("09:00"), true).await {
            (201, _) => {
                rebooked = true;
                break;
            }
            (409, _) => tokio::time::sleep(Duration::from_millis(200)).await,
            other => panic!("unexpected answer {other:?}"),
        }
    }
    assert!(rebooked, "a time cancelled on another node stayed taken on this one");
    assert_eq!(overlaps(&app).await, 0);
}

#[actix_web::test]
async fn adjacent_bookings_both_succeed_and_buffers_are_respected() {
    let app = spawn_app().await;
    let c = clinic(&app).await;
    let p = app.patient().await;
    assert_eq!(book(&app, &p, &c, c.ty, &at("09:00"), true).await.0, 201);
    assert_eq!(book(&app, &p, &c, c.ty, &at("09:30"), true).await.0, 201, "[a,b) and [b,c) do not overlap");
    let buffered = add_type(&app, &c.clin, 30, 0, 10).await; // grid 09:00, 09:40, 10:20, 11:00 …
    assert_eq!(book(&app, &p, &c, c.ty, &at("10:30"), true).await.0, 201);
    let (s, v) = book(&app, &p, &c, buffered, &at("10:20"), true).await;
    assert_eq!((s, v["error"]["code"].as_str()), (409, Some("slot_taken")));
    assert_eq!(book(&app, &p, &c, buffered, &at("11:00"), true).await.0, 201);
    // The 10-minute buffer after 11:00–11:30 blocks an 11:30 start, not 11:40 … which is off
    // the 30-minute grid, so take 12:00 and check 11:30 directly.
    let (s, _) = book(&app, &p, &c, c.ty, &at("11:30"), true).await;
    assert_eq!(s, 409, "inside the buffer");
    assert_eq!(book(&app, &p, &c, c.ty, &at("12:00"), true).await.0, 201);
    let free = slots(&app, &p, c.clin.id, c.ty, &at("09:00"), &at("13:00"), Some("UTC")).await;
    assert_eq!(free, ["2027-01-05T10:00:00+00:00", "2027-01-05T12:30:00+00:00"], "10:00 fits before 10:30");
    let free_buffered = slots(&app, &p, c.clin.id, buffered, &at("09:00"), &at("13:00"), Some("UTC")).await;
    assert!(free_buffered.is_empty(), "{free_buffered:?}");
    assert_eq!(overlaps(&app).await, 0);
}

#[actix_web::test]
async fn slots_are_right_on_dst_days_in_london_and_new_york() {
    let app = spawn_app().await;
    let p = app.patient().await;
    for (tz, days, nine) in [
        (
            "Europe/London",
            [("2027-03-20", "2027-03-21", 8), ("2027-03-27", "2027-03-28", 6), ("2027-10-30", "2027-10-31", 10)],
            [("2027-03-21", "09:00"), ("2027-03-29", "08:00")],
        ),
        (
            "America/New_York",
            [("2027-03-06", "2027-03-07", 8), ("2027-03-13", "2027-03-14", 6), ("2027-11-06", "2027-11-07", 10)],
            [("2027-03-07", "14:00"), ("2027-03-15", "13:00")],
        ),
    ] {
        let c = clinic_in(&app, tz, "00:00", "04:00").await;
        for (prev, day, want) in days {
            let got =
                slots(&app, &p, c.clin.id, c.ty, &format!("{prev}T12:00:00Z"), &format!("{day}T12:00:00Z"), None).await;
            assert_eq!(got.len(), want, "{tz} {day}: {got:?}");
            let mut dedup = got.clone();
            dedup.dedup();
            assert_eq!(dedup.len(), got.len());
            assert!(got[0].contains("T00:00:00"), "the first slot is local midnight: {got:?}");
        }
        // Nine in the morning stays nine on the wall clock, so its UTC instant moves.
        let c9 = clinic_in(&app, tz, "09:00", "09:30").await;
        for (day, utc) in nine {
            let got = slots(
                &app,
                &p,
                c9.clin.id,
                c9.ty,
                &format!("{day}T00:00:00Z"),
                &format!("{day}T23:00:00Z"),
                Some("UTC"),
            )
            .await;
            assert_eq!(got, vec![format!("{day}T{utc}:00+00:00")], "{tz}");
        }
    }
    // The caller's zone: London 09:00 in winter is 04:00 in New York.
    let c = clinic_in(&app, "Europe/London", "09:00", "09:30").await;
    let ny = slots(&app, &p, c.clin.id, c.ty, &at("00:00"), &at("23:00"), Some("America/New_York")).await;
    assert_eq!(ny, vec!["2027-01-05T04:00:00-05:00".to_string()]);
}

#[actix_web::test]
async fn two_reschedules_racing_into_one_slot_one_wins() {
    let app = spawn_app().await;
    let c = clinic(&app).await;
    let (p1, p2) = (app.patient().await, app.patient().await);
    let (_, a) = book(&app, &p1, &c, c.ty, &at("09:00"), true).await;
    let (_, b) = book(&app, &p2, &c, c.ty, &at("09:30"), true).await;
    let target = json!({"start": at("11:00")});
    let (path_a, path_b) =
        (format!("/v1/appointments/{}/reschedule", id(&a)), format!("/v1/appointments/{}/reschedule", id(&b)));
    let (ra, rb) = tokio::join!(app.post_auth(&path_a, &p1.token, &target), app.post_auth(&path_b, &p2.token, &target));
    let mut statuses = [ra.status().as_u16(), rb.status().as_u16()];
    statuses.sort_unstable();
    assert_eq!(statuses, [200, 409]);
    let booked: Vec<String> = sqlx::query_scalar!(
        r#"SELECT to_char(start_at AT TIME ZONE 'UTC', 'HH24:MI') AS "t!" FROM appointments WHERE status = 'booked' ORDER BY start_at"#,
    )
    .fetch_all(&app.pg)
    .await
    .unwrap();
    assert!(booked == ["09:00", "11:00"] || booked == ["09:30", "11:00"], "the loser keeps its time: {booked:?}");
    assert_eq!(overlaps(&app).await, 0);
}

#[actix_web::test]
async fn a_hold_expires_and_frees_its_slot() {
    let app = spawn_app().await;
    let c = clinic(&app).await;
    let (p1, p2) = (app.patient().await, app.patient().await);
    let (s, held) = book(&app, &p1, &c, c.ty, &at("09:00"), false).await;
    assert_eq!((s, held["status"].as_str()), (201, Some("held")));
    assert_eq!(book(&app, &p2, &c, c.ty, &at("09:00"), false).await.0, 409);
    assert!(!slots(&app, &p2, c.clin.id, c.ty, &at("09:00"), &at("09:30"), None).await.iter().any(|_| true));
    app.clock.advance(Duration::from_secs(301));
    assert_eq!(slots(&app, &p2, c.clin.id, c.ty, &at("09:00"), &at("09:30"), None).await.len(), 1);
    let (s, _) = book(&app, &p2, &c, c.ty, &at("09:00"), false).await;
    assert_eq!(s, 201, "the expired hold no longer blocks");
    let res = app.post_auth(&format!("/v1/appointments/{}/confirm", id(&held)), &p1.token, &json!({})).await;
    assert_eq!(res.status(), 409);
    assert_eq!(res.json::<Value>().await.unwrap()["error"]["code"], "hold_expired");
    assert_eq!(overlaps(&app).await, 0);
}

#[actix_web::test]
async fn a_patient_may_hold_at_most_three_slots_at_once() {
    let app = spawn_app().await;
    let c = clinic(&app).await;
    let p = app.patient().await;
    for t in ["09:00", "09:30", "10:00"] {
        assert_eq!(book(&app, &p, &c, c.ty, &at(t), false).await.0, 201);
    }
    let (s, v) = book(&app, &p, &c, c.ty, &at("10:30"), false).await;
    assert_eq!((s, v["error"]["code"].as_str()), (429, Some("too_many_holds")));
}

#[actix_web::test]
async fn a_cancelled_time_can_be_booked_again() {
    let app = spawn_app().await;
    let c = clinic(&app).await;
    let (p1, p2) = (app.patient().await, app.patient().await);
    let (_, a) = book(&app, &p1, &c, c.ty, &at("09:00"), true).await;
    let res = app
        .post_auth(&format!("/v1/appointments/{}/cancel", id(&a)), &p1.token, &json!({"reason": "feeling better"}))
        .await;
    assert_eq!(res.status(), 200);
    let v: Value = res.json().await.unwrap();
    assert_eq!((v["status"].as_str(), v["cancel_reason"].as_str()), (Some("cancelled"), Some("feeling better")));
    assert_eq!(book(&app, &p2, &c, c.ty, &at("09:00"), true).await.0, 201);
    let kinds: Vec<String> =
        sqlx::query_scalar!("SELECT kind FROM booking_outbox ORDER BY seq").fetch_all(&app.pg).await.unwrap();
    assert_eq!(kinds, ["booked", "cancelled", "booked"]);
    let audited: i64 = sqlx::query_scalar!(
        r#"SELECT count(*) AS "n!" FROM audit_log WHERE action IN ('booking.book','booking.cancel')"#
    )
    .fetch_one(&app.pg)
    .await
    .unwrap();
    assert_eq!(audited, 3);
}

#[actix_web::test]
async fn an_idempotency_key_replays_the_first_answer() {
    let app = spawn_app().await;
    let c = clinic(&app).await;
    let p = app.patient().await;
    let body = json!({"clinician_id": c.clin.id, "type_id": c.ty, "start": at("09:00"), "confirm": true});
    let send = || {
        app.client
            .post(app.url("/v1/appointments"))
            .bearer_auth(&p.token)
            .header("Idempotency-Key", "k-1")
            .json(&body)
            .send()
    };
    let first = send().await.unwrap();
    assert_eq!(first.status(), 201);
    let second = send().await.unwrap();
    assert_eq!(second.status(), 200);
    assert_eq!(id(&first.json().await.unwrap()), id(&second.json().await.unwrap()));
}

#[actix_web::test]
async fn the_waitlist_offers_a_freed_slot_and_passes_on_an_unclaimed_offer() {
    let app = spawn_app().await;
    let c = clinic(&app).await;
    let (p1, p2, p3) = (app.patient().await, app.patient().await, app.patient().await);
    let (_, a) = book(&app, &p1, &c, c.ty, &at("09:00"), true).await;
    let mut entries = Vec::new();
    for p in [&p2, &p3] {
        let res = app
            .post_auth(
                "/v1/waitlist",
                &p.token,
                &json!({"clinician_id": c.clin.id, "type_id": c.ty, "from": at("08:00"), "to": at("12:00")}),
            )
            .await;
        assert_eq!(res.status(), 201);
        entries.push(id(&res.json().await.unwrap()));
    }
    app.post_auth(&format!("/v1/appointments/{}/cancel", id(&a)), &p1.token, &json!({"reason": "travel"})).await;
    let w2: Value = app.get_auth(&format!("/v1/waitlist/{}", entries[0]), &p2.token).await.json().await.unwrap();
    assert_eq!(w2["status"], "offered");
    // The offered time is held for p2: nobody else can take it.
    assert_eq!(book(&app, &p1, &c, c.ty, &at("09:00"), true).await.0, 409);
    // p2 lets the offer lapse; the sweeper passes it to p3.
    app.clock.advance(Duration::from_secs(301));
    coherency::booking::sweep(&app.state.calendars).await.unwrap();
    let w2: Value = app.get_auth(&format!("/v1/waitlist/{}", entries[0]), &p2.token).await.json().await.unwrap();
    assert_eq!(w2["status"], "waiting");
    let w3: Value = app.get_auth(&format!("/v1/waitlist/{}", entries[1]), &p3.token).await.json().await.unwrap();
    assert_eq!(w3["status"], "offered");
    let offer = w3["offered_appointment_id"].as_str().unwrap();
    let res = app.post_auth(&format!("/v1/appointments/{offer}/confirm"), &p3.token, &json!({})).await;
    assert_eq!(res.status(), 200);
    assert_eq!(res.json::<Value>().await.unwrap()["status"], "booked");
    let w3: Value = app.get_auth(&format!("/v1/waitlist/{}", entries[1]), &p3.token).await.json().await.unwrap();
    assert_eq!(w3["status"], "claimed");
    let offered: i64 = sqlx::query_scalar!(r#"SELECT count(*) AS "n!" FROM booking_outbox WHERE kind = 'offered'"#)
        .fetch_one(&app.pg)
        .await
        .unwrap();
    assert_eq!(offered, 2);
    assert_eq!(overlaps(&app).await, 0);
}

#[actix_web::test]
async fn booking_resources_pass_the_fhir_r4_validator() {
    let app = spawn_app().await;
    let c = clinic(&app).await;
    let p = app.patient().await;
    let (_, a) = book(&app, &p, &c, c.ty, &at("09:00"), true).await;
    let (_, h) = book(&app, &p, &c, c.ty, &at("10:00"), false).await;
    let (_, x) = book(&app, &p, &c, c.ty, &at("11:00"), true).await;
    app.post_auth(&format!("/v1/appointments/{}/cancel", id(&x)), &p.token, &json!({"reason": "clash"})).await;
    let mut resources = Vec::new();
    for path in [
        format!("/fhir/Appointment/{}", id(&a)),
        format!("/fhir/Appointment/{}", id(&h)),
        format!("/fhir/Appointment/{}", id(&x)),
        format!("/fhir/Appointment?patient=Patient/{}", p.patient_id.unwrap()),
        format!("/fhir/Appointment?practitioner={}&date={DAY}", c.clin.id),
        format!("/fhir/Schedule/{}", c.clin.id),
        format!("/fhir/Slot?schedule=Schedule/{}&service-type={}&start={DAY}", c.clin.id, c.ty),
    ] {
        let who = if path.contains("practitioner") { &c.clin } else { &p };
        let res = app.get_auth(&path, &who.token).await;
        assert_eq!(res.status(), 200, "{path}");
        resources.push(res.json::<Value>().await.unwrap());
    }
    let statuses: Vec<&str> =
        resources[6]["entry"].as_array().unwrap().iter().filter_map(|e| e["resource"]["status"].as_str()).collect();
    assert!(statuses.contains(&"free") && statuses.contains(&"busy") && statuses.contains(&"busy-tentative"));
    assert_eq!(resources[3]["total"], 3);
    assert_eq!(resources[1]["status"], "pending");
    assert_eq!(resources[2]["status"], "cancelled");
    crate::fhir::validate(&resources);
}

#[actix_web::test]
async fn a_fhir_client_books_a_free_slot_with_the_book_operation() {
    let app = spawn_app().await;
    let c = clinic(&app).await;
    let (p, other) = (app.patient().await, app.patient().await);
    let res = app
        .get_auth(&format!("/fhir/Slot?schedule=Schedule/{}&service-type={}&start={DAY}", c.clin.id, c.ty), &p.token)
        .await;
    let bundle: Value = res.json().await.unwrap();
    let slot =
        bundle["entry"].as_array().unwrap().iter().map(|e| &e["resource"]).find(|r| r["status"] == "free").unwrap();
    let appointment = |status: &str| {
        json!({"resourceType": "Appointment", "status": status,
               "slot": [{"reference": format!("Slot/{}", slot["id"].as_str().unwrap())}],
               "participant": [{"actor": {"reference": format!("Patient/{}", p.patient_id.unwrap())}, "status": "accepted"}]})
    };
    let post = |who: &User, body: Value| {
        let req = app.client.post(app.url("/fhir/Appointment/$book")).bearer_auth(&who.token).json(&body);
        async move {
            let res = req.send().await.unwrap();
            (res.status().as_u16(), res.json::<Value>().await.unwrap())
        }
    };
    let (status, booked) = post(&p, appointment("booked")).await;
    assert_eq!(status, 201, "{booked}");
    assert_eq!((booked["status"].as_str(), booked["start"].as_str()), (Some("booked"), slot["start"].as_str()));
    let read = app.get_auth(&format!("/fhir/Appointment/{}", id(&booked)), &p.token).await;
    assert_eq!(read.status(), 200);
    crate::fhir::validate(&[booked.clone(), read.json().await.unwrap()]);
    // The slot is now busy: a second booking is a 409 OperationOutcome naming the code.
    let (status, taken) = post(&p, appointment("booked")).await;
    assert_eq!(status, 409);
    assert_eq!(taken["resourceType"], "OperationOutcome");
    assert!(taken.to_string().contains("slot_taken"), "{taken}");
    // A patient cannot book for someone else, and a malformed reference names its field.
    let (status, _) = post(&other, appointment("proposed")).await;
    assert_eq!(status, 404);
    let (status, bad) =
        post(&p, json!({"resourceType": "Appointment", "status": "booked", "slot": [{"reference": "Slot/x"}]})).await;
    assert_eq!(status, 400);
    assert!(bad.to_string().contains("slot"), "{bad}");
    assert_eq!(overlaps(&app).await, 0);
}

/// Random hold / confirm / cancel / reschedule from several patients at a handful of
/// overlapping times; after every step no two live rows overlap and each answer agrees
/// with what the calendar allowed.
#[actix_web::test]
async fn random_operation_sequences_keep_the_invariant() {
    use proptest::strategy::{Strategy, ValueTree};
    use proptest::test_runner::TestRunner;

    let app = spawn_app().await;
    let c = clinic(&app).await;
    let buffered = add_type(&app, &c.clin, 30, 5, 5).await;
    let mut patients = Vec::new();
    for _ in 0..4 {
        patients.push(app.patient().await);
    }
    let times = ["09:00", "09:30", "09:40", "10:00", "10:20", "10:30", "11:00"];
    let op = (0usize..4, 0usize..4, 0usize..times.len(), 0usize..2, 0usize..64);
    let mut runner = TestRunner::deterministic();
    let seq = proptest::collection::vec(op, 60..120).new_tree(&mut runner).unwrap().current();
    let mut mine: Vec<Vec<String>> = vec![Vec::new(); patients.len()];
    for (kind, who, t, ty, pick) in seq {
        let p = &patients[who];
        let ty = if ty == 0 { c.ty } else { buffered };
        match kind {
            0 => {
                let (s, v) = book(&app, p, &c, ty, &at(times[t]), pick % 2 == 0).await;
                assert!([201, 400, 409, 429].contains(&s), "{s} {v}");
                if s == 201 {
                    mine[who].push(id(&v));
                }
                if v["error"]["code"] == "slot_taken" {
                    // A refusal (answered from the node's calendar view when it can) is
                    // only right when a live row really blocks the range.
                    let start: chrono::DateTime<chrono::Utc> = at(times[t]).parse().unwrap();
                    let pad = chrono::Duration::minutes(if ty == buffered { 5 } else { 0 });
                    let (bs, be) = (start - pad, start + chrono::Duration::minutes(30) + pad);
                    let now = app.clock.now();
                    assert!(
                        coherency::booking::taken(&app.pg, c.clin.id, bs, be, now).await.unwrap(),
                        "slot_taken at {} with nothing live there",
                        times[t]
                    );
                }
            }
            _ if mine[who].is_empty() => continue,
            1 => {
                let a = &mine[who][pick % mine[who].len()];
                let res = app.post_auth(&format!("/v1/appointments/{a}/confirm"), &p.token, &json!({})).await;
                assert!([200, 409].contains(&res.status().as_u16()));
            }
            2 => {
                let a = &mine[who][pick % mine[who].len()];
                let res = app
                    .post_auth(&format!("/v1/appointments/{a}/cancel"), &p.token, &json!({"reason": "random"}))
                    .await;
                assert!([200, 409].contains(&res.status().as_u16()));
            }
            _ => {
                let a = mine[who][pick % mine[who].len()].clone();
                let res = app
                    .post_auth(
                        &format!("/v1/appointments/{a}/reschedule"),
                        &p.token,
                        &json!({"start": at(times[t]), "type_id": ty}),
                    )
                    .await;
                let s = res.status().as_u16();
                let v: Value = res.json().await.unwrap();
                assert!([200, 400, 409].contains(&s), "{s} {v}");
                if s == 200 {
                    mine[who].push(id(&v));
                }
            }
        }
        if pick == 0 {
            app.clock.advance(Duration::from_secs(120));
        }
        assert_eq!(overlaps(&app).await, 0);
    }
}

/// One hot clinician, 64 callers, random slots over 20 days (most attempts collide): booking
/// attempts per second and latency with 1 and 3 nodes. Run in release:
/// `cargo test --release -p coherency --test api booking::benchmark -- --ignored --nocapture`.
#[actix_web::test]
#[ignore = "benchmark; run in release with --ignored --nocapture"]
async fn benchmark_attempts_per_second_on_one_hot_clinician() {
    use rand::Rng;
    const ATTEMPTS: usize = 4000;
    const CONCURRENCY: usize = 64;
    // Many requests per token per second: lift the per-caller limit on every node.
    let app = crate::helpers::spawn_app_with(|mut c| {
        c.api_rate_per_sec = 1_000_000;
        c.api_rate_burst = 1_000_000;
        c
    })
    .await;
    let mut patients = Vec::new();
    for _ in 0..8 {
        patients.push(app.patient().await);
    }
    let unlimited = [("COHERENCY_API_RATE_PER_SEC", "1000000"), ("COHERENCY_API_RATE_BURST", "1000000")];
    let extra = [NodeProcess::start(&app.config, &unlimited), NodeProcess::start(&app.config, &unlimited)];
    for nodes in [1usize, 3] {
        let c = clinic(&app).await;
        let bases: Vec<String> = [app.url(""), extra[0].url(""), extra[1].url("")].into_iter().take(nodes).collect();
        let day0 = chrono::NaiveDate::from_ymd_opt(2027, 1, 5).unwrap();
        let queue = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let started = std::time::Instant::now();
        let mut workers = Vec::new();
        for w in 0..CONCURRENCY {
            let (queue, bases, client) = (queue.clone(), bases.clone(), app.client.clone());
            let token = patients[w % patients.len()].token.clone();
            let (clin, ty) = (c.clin.id, c.ty);
            workers.push(tokio::spawn(async move {
                let mut lat = Vec::new();
                let (mut won, mut lost) = (0usize, 0usize);
                loop {
                    let i = queue.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    if i >= ATTEMPTS {
                        break;
                    }
                    let (d, s) = {
                        let mut rng = rand::thread_rng();
                        (rng.gen_range(0..20i64), rng.gen_range(0..16i64))
                    };
                    let start = (day0 + chrono::Duration::days(d)).and_hms_opt(9, 0, 0).unwrap().and_utc()
                        + chrono::Duration::minutes(30 * s);
                    let body =
                        json!({"clinician_id": clin, "type_id": ty, "start": start.to_rfc3339(), "confirm": true});
                    let t = std::time::Instant::now();
                    let res = client
                        .post(format!("{}/v1/appointments", bases[i % bases.len()]))
                        .bearer_auth(&token)
                        .json(&body)
                        .send()
                        .await
                        .unwrap();
                    let status = res.status().as_u16();
                    let _ = res.bytes().await;
                    lat.push(t.elapsed());
                    match status {
                        201 => won += 1,
                        409 => lost += 1,
                        other => panic!("unexpected {other}"),
                    }
                }
                (lat, won, lost)
            }));
        }
        let mut lat = Vec::new();
        let (mut won, mut lost) = (0, 0);
        for w in workers {
            let (l, a, b) = w.await.unwrap();
            lat.extend(l);
            won += a;
            lost += b;
        }
        let secs = started.elapsed().as_secs_f64();
        lat.sort_unstable();
        let pct = |q: f64| lat[((lat.len() as f64 * q) as usize).min(lat.len() - 1)].as_secs_f64() * 1000.0;
        println!(
            "{}",
            json!({"nodes": nodes, "attempts": ATTEMPTS, "concurrency": CONCURRENCY, "booked": won, "conflicts": lost,
                   "attempts_per_s": (ATTEMPTS as f64 / secs).round(), "p50_ms": pct(0.50), "p99_ms": pct(0.99),
                   "overlaps": overlaps(&app).await})
        );
        assert_eq!(overlaps(&app).await, 0);
        assert_eq!(won, 320.min(won), "at most one booking per slot");
    }
}
