//! A wound's tissue composition followed over time (issue #26): the trajectory's points carry
//! each measurement's tissue and granulation share, FHIR carries them as the Skin and Wound
//! Assessment IG's wound bed appearance `Observation`s (LOINC 72371-8, a SNOMED CT tissue,
//! the share as LOINC 72370-0 in %), and the wound report prints them. The compositions are
//! written into the measurements as the finish step stores them (`tests/api/colour.rs`
//! streams a real colour scan end to end).

use std::process::Command;

use serde_json::{json, Value};
use uuid::Uuid;

use crate::helpers::{spawn_app, TestApp};
use crate::wounds::{clinician_and_patient, measured_scan, new_wound};

const CLASSES: [&str; 5] = ["granulation", "slough", "eschar", "epithelial", "other"];

/// A stored composition: the shares (percent, ± points) of the five classes in order.
fn composition(shares: [(f64, f64); 5], area: f64) -> Value {
    let shares: Vec<Value> = CLASSES
        .iter()
        .zip(shares)
        .map(|(c, (p, pm))| json!({"class": c, "area_mm2": area * p / 100.0, "percent": p, "percent_pm": pm}))
        .collect();
    json!({
        "shares": shares,
        "wound_area_mm2": area,
        "coloured_fraction": 0.97,
        "calibration": {"source": "periwound", "gains": [1.02, 0.98, 1.05], "samples": 812},
        "classifier": "coherency-lab-logistic@1",
    })
}

async fn set_tissue(app: &TestApp, measurement: Uuid, tissue: Option<&Value>, reason: Option<&str>) {
    sqlx::query("UPDATE scan_measurements SET tissue = $2, tissue_reason = $3, tissue_at = now() WHERE id = $1")
        .bind(measurement)
        .bind(tissue)
        .bind(reason)
        .execute(&app.pg)
        .await
        .unwrap();
}

async fn fhir(app: &TestApp, token: &str, path: &str) -> (u16, Value) {
    let res = app.get_auth(path, token).await;
    let status = res.status().as_u16();
    (status, res.json().await.unwrap_or(Value::Null))
}

fn resources(bundle: &Value) -> Vec<Value> {
    bundle["entry"].as_array().map(|e| e.iter().map(|e| e["resource"].clone()).collect()).unwrap_or_default()
}

#[actix_web::test]
async fn a_wounds_tissue_is_followed_in_its_trajectory_in_fhir_and_in_its_report() {
    let app = spawn_app().await;
    let (clin, patient, pid) = clinician_and_patient(&app).await;
    let wound = new_wound(
        &app,
        &clin,
        pid,
        json!({"site_code": "116315002", "site_display": "Heel", "laterality": "left", "aetiology": "diabetic_foot"}),
    )
    .await;
    let wid = wound["id"].as_str().unwrap().to_string();
    // The bed granulates over four weeks; the last scan had no colour.
    let stages = [
        (28, 510.0, [(40.0, 5.0), (35.0, 5.0), (20.0, 4.0), (0.0, 1.0), (5.0, 2.0)]),
        (14, 430.0, [(55.0, 4.0), (30.0, 4.0), (8.0, 3.0), (2.0, 1.0), (5.0, 2.0)]),
        (3, 350.0, [(72.0, 4.0), (18.0, 4.0), (0.0, 1.0), (7.0, 2.0), (3.0, 2.0)]),
    ];
    let mut measured = Vec::new();
    for (days_ago, area, shares) in stages {
        let (_, m) = measured_scan(&app, &clin, pid, &wid, days_ago, area, 12.0).await;
        set_tissue(&app, m, Some(&composition(shares, area * 1.1)), None).await;
        measured.push((m, shares));
    }
    let (_, colourless) = measured_scan(&app, &clin, pid, &wid, 1, 340.0, 12.0).await;
    set_tissue(&app, colourless, None, Some("no_colour_frames")).await;

    // The trajectory: each point's tissue, and the granulation series.
    let t: Value = app.get_auth(&format!("/v1/wounds/{wid}/trajectory"), &clin.token).await.json().await.unwrap();
    let points = t["points"].as_array().unwrap();
    assert_eq!(points.len(), 4, "{t}");
    for (p, (m, shares)) in points.iter().zip(&measured) {
        assert_eq!(p["id"], m.to_string());
        assert_eq!(p["granulation_pct"], json!({"value": shares[0].0, "uncertainty": shares[0].1}), "{p}");
        let got: Vec<f64> =
            p["tissue"]["shares"].as_array().unwrap().iter().map(|s| s["percent"].as_f64().unwrap()).collect();
        assert_eq!(got, shares.map(|s| s.0).to_vec(), "{p}");
        assert!(p.get("tissue_unavailable").is_none(), "{p}");
    }
    assert!(points[3]["tissue"].is_null() && points[3]["granulation_pct"].is_null(), "{}", points[3]);
    assert_eq!(points[3]["tissue_unavailable"], "no_colour_frames");
    let assessments: Value =
        app.get_auth(&format!("/v1/wounds/{wid}/assessments"), &clin.token).await.json().await.unwrap();
    assert_eq!(assessments["assessments"][2]["tissue"], points[2]["tissue"]);

    // FHIR: each panel is followed by its four coded tissue shares (`other` has no code).
    let (s, all) = fhir(&app, &patient.token, &format!("/fhir/Observation?patient={pid}")).await;
    assert_eq!(s, 200, "{all}");
    let all = resources(&all);
    assert_eq!(all.len(), 4 + 3 * 4, "{all:?}");
    let (latest, shares) = measured[2];
    let panel = all.iter().find(|r| r["id"] == latest.to_string()).unwrap();
    let members: Vec<&str> =
        panel["hasMember"].as_array().unwrap().iter().map(|m| m["reference"].as_str().unwrap()).collect();
    let want: Vec<String> = CLASSES[..4].iter().map(|c| format!("Observation/{latest}-{c}")).collect();
    assert_eq!(members, want, "{panel}");
    let colourless_panel = all.iter().find(|r| r["id"] == colourless.to_string()).unwrap();
    assert!(colourless_panel.get("hasMember").is_none(), "{colourless_panel}");
    for (class, snomed, (percent, pm)) in [
        ("granulation", "225541009", shares[0]),
        ("slough", "449746002", shares[1]),
        ("eschar", "421306004", shares[2]),
        ("epithelial", "449743005", shares[3]),
    ] {
        let (s, obs) = fhir(&app, &patient.token, &format!("/fhir/Observation/{latest}-{class}")).await;
        assert_eq!(s, 200, "{obs}");
        assert!(all.contains(&obs), "the read equals the searched: {obs}");
        assert_eq!(
            obs["code"]["coding"][0],
            json!({"system": "http://loinc.org", "code": "72371-8", "display": "Appearance of Wound base"})
        );
        assert_eq!(obs["valueCodeableConcept"]["coding"][0]["system"], "http://snomed.info/sct");
        assert_eq!(obs["valueCodeableConcept"]["coding"][0]["code"], snomed);
        let c = &obs["component"][0];
        assert_eq!(c["code"]["coding"][0]["code"], "72370-0");
        assert_eq!(
            c["valueQuantity"],
            json!({"value": percent, "unit": "%", "system": "http://unitsofmeasure.org", "code": "%"})
        );
        let range = &c["extension"][0]["valueRange"];
        assert_eq!(range["low"]["value"].as_f64().unwrap(), (percent - pm).max(0.0));
        assert_eq!(range["high"]["value"].as_f64().unwrap(), (percent + pm).min(100.0));
        assert_eq!(obs["focus"][0]["reference"], format!("Condition/{wid}"));
        assert_eq!(obs["derivedFrom"][0]["reference"], format!("Observation/{latest}"));
        assert_eq!(obs["subject"]["reference"], format!("Patient/{pid}"));
    }
    for bad in ["other", "bogus", "granulation-x"] {
        let (s, outcome) = fhir(&app, &patient.token, &format!("/fhir/Observation/{latest}-{bad}")).await;
        assert_eq!((s, outcome["resourceType"].as_str()), (404, Some("OperationOutcome")), "{bad}");
    }
    for (code, n) in [
        ("72371-8", 12),
        ("http://loinc.org|72371-8", 12),
        ("72287-6", 4),
        ("72287-6,72371-8", 16),
        ("72287-6&code=72371-8", 0),
        ("12345-6", 0),
    ] {
        let (s, b) = fhir(&app, &clin.token, &format!("/fhir/Observation?patient={pid}&code={code}")).await;
        assert_eq!((s, b["total"].as_u64()), (200, Some(n)), "code={code}: {b}");
    }
    let (_, everything) = fhir(&app, &patient.token, &format!("/fhir/Patient/{pid}/$everything")).await;
    let exported: Vec<Value> =
        resources(&everything).into_iter().filter(|r| r["resourceType"] == "Observation").collect();
    assert_eq!(exported.len(), all.len(), "{everything}");
    let stranger = app.patient().await;
    let (s, _) = fhir(&app, &stranger.token, &format!("/fhir/Observation/{latest}-granulation")).await;
    assert_eq!(s, 404);
    let read_audits: i64 =
        sqlx::query_scalar("SELECT count(*) FROM audit_log WHERE action = 'fhir.observation.read' AND details LIKE $1")
            .bind(format!("%{latest}-%"))
            .fetch_one(&app.pg)
            .await
            .unwrap();
    assert_eq!(read_audits, 4, "each read is audited, a 404 is not");
    let mut emitted = all.clone();
    emitted.push(everything);
    crate::fhir::validate(&emitted);

    // The report: each assessment's wound bed, and the granulation share over time.
    let res = app.get_auth(&format!("/v1/wounds/{wid}/report.pdf"), &clin.token).await;
    assert_eq!(res.status(), 200);
    let pdf = res.bytes().await.unwrap();
    let dir = std::env::temp_dir().join(format!("coherency-tissue-report-{}", Uuid::now_v7()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("report.pdf");
    std::fs::write(&file, &pdf).unwrap();
    let out = Command::new("pdftotext").args([file.to_str().unwrap(), "-"]).output().expect("pdftotext (poppler)");
    let text = String::from_utf8(out.stdout).unwrap().split_whitespace().collect::<Vec<_>>().join(" ");
    std::fs::remove_dir_all(&dir).ok();
    let day = |i: usize| points[i]["taken_at"].as_str().unwrap()[..10].to_string();
    for needle in [
        format!("Granulation: 40 ± 5 % of the wound bed on {}, 72 ± 4 % on {}.", day(0), day(2)),
        "Wound bed: granulation 40 ± 5 %, slough 35 ± 5 %, eschar 20 ± 4 %, epithelial 0 ± 1 %, other 5 ± 2 %."
            .to_string(),
        "Wound bed: granulation 72 ± 4 %, slough 18 ± 4 %, eschar 0 ± 1 %, epithelial 7 ± 2 %, other 3 ± 2 %."
            .to_string(),
    ] {
        assert!(text.contains(&needle), "{needle:?} not in the report: {text}");
    }
}

/// The bounding box of `outline` grown by `margin` pixels, cut at `u_max`, as a polygon.
fn box_around(outline: &[[f64; 2]], margin: f64, u_max: Option<f64>) -> Vec<[f64; 2]> {
    let (mut lo, mut hi) = ([f64::MAX; 2], [f64::MIN; 2]);
    for p in outline {
        for k in 0..2 {
            lo[k] = lo[k].min(p[k] - margin);
            hi[k] = hi[k].max(p[k] + margin);
        }
    }
    let (lo, hi) = (lo.map(|v| v.max(0.0)), [hi[0].min(255.0), hi[1].min(191.0)]);
    let right = u_max.map_or(hi[0], |u| u.min(hi[0]));
    vec![[lo[0], lo[1]], [right, lo[1]], [right, hi[1]], [lo[0], hi[1]]]
}

fn share(tissue: &Value, class: &str) -> f64 {
    tissue["shares"].as_array().unwrap().iter().find(|s| s["class"] == class).unwrap()["percent"].as_f64().unwrap()
}

#[actix_web::test]
async fn a_clinician_corrects_a_regions_tissue_class_and_the_corrections_are_kept_audited_and_exported() {
    use coherency::auth::Role;
    use coherency_recon::phantom::{presets, Phantom, ScanConfig};
    let app = spawn_app().await;
    let (alice, ada, scan) = crate::colour::clinician_and_scan(&app).await;
    let ada_id = ada.patient_id.unwrap();
    let admin = app.staff(Role::Admin, true).await;
    let phantom = Phantom::new(presets::spherical_cap(false));
    let list = crate::colour::stream_colour_scan(&app, &ada, scan, &phantom, 6).await;
    let m = &list["measurements"][0];
    let mid = m["id"].as_str().unwrap().to_string();
    assert!(share(&m["tissue"], "granulation") > 80.0, "the red bed reads as granulation: {m}");
    let seq = list["outcome"]["suggested_keyframe"]["seq"].as_u64().expect("a keyframe");
    let rendered = phantom.scan(&ScanConfig::iphone(3));
    let f = &rendered.frames[seq as usize - 1];
    let outline = phantom.outline_in_image(&f.intrinsics, &f.pose, 32);
    let centre_u = outline.iter().map(|p| p[0]).sum::<f64>() / outline.len() as f64;
    let path = format!("/v1/scans/{scan}/measurements/{mid}/tissue-corrections");

    // The whole bed is slough, says the clinician; then the left half is granulation after all.
    let whole = json!({"keyframe_seq": seq, "polygon": box_around(&outline, 6.0, None), "class": "slough"});
    let res = app.post_auth(&path, &alice.token, &whole).await;
    assert_eq!(res.status(), 201, "{}", res.text().await.unwrap_or_default());
    let first: Value = res.json().await.unwrap();
    assert_eq!(first["correction"]["class"], "slough");
    assert!(share(&first["tissue"], "slough") > 95.0, "{first}");
    let half =
        json!({"keyframe_seq": seq, "polygon": box_around(&outline, 6.0, Some(centre_u)), "class": "granulation"});
    let res = app.post_auth(&path, &alice.token, &half).await;
    assert_eq!(res.status(), 201);
    let second: Value = res.json().await.unwrap();
    let (g, s) = (share(&second["tissue"], "granulation"), share(&second["tissue"], "slough"));
    assert!(
        (30.0..70.0).contains(&g) && (30.0..70.0).contains(&s) && g + s > 97.0,
        "a later correction wins: {second}"
    );

    // The measurement carries the corrected composition; both corrections are listed in order.
    let now: Value = app.get_auth(&format!("/v1/scans/{scan}/measurements"), &alice.token).await.json().await.unwrap();
    assert_eq!(now["measurements"][0]["tissue"], second["tissue"]);
    assert_eq!(now["measurements"][0]["outline_area_mm2"], m["outline_area_mm2"], "the figures stay");
    let listed: Value = app.get_auth(&path, &ada.token).await.json().await.unwrap();
    let classes: Vec<&str> =
        listed["corrections"].as_array().unwrap().iter().map(|c| c["class"].as_str().unwrap()).collect();
    assert_eq!(classes, ["slough", "granulation"], "{listed}");
    assert_eq!(listed["corrections"][0]["created_by"], alice.id.to_string());

    // Refusals: a patient may not correct, a stranger sees nothing, bad bodies name the field.
    let res = app.post_auth(&path, &ada.token, &whole).await;
    assert_eq!(res.status(), 403);
    let stranger = app.staff(Role::Clinician, true).await;
    assert_eq!(app.post_auth(&path, &stranger.token, &whole).await.status(), 404);
    assert_eq!(app.get_auth(&path, &stranger.token).await.status(), 404);
    for (body, field) in [
        (json!({"keyframe_seq": seq, "polygon": box_around(&outline, 6.0, None), "class": "necrosis"}), "class"),
        (json!({"keyframe_seq": seq, "polygon": [[1, 1], [2, 1]], "class": "slough"}), "polygon"),
        (json!({"keyframe_seq": seq, "polygon": [[1, 1], [900, 1], [900, 900]], "class": "slough"}), "polygon"),
        (
            json!({"keyframe_seq": 100_000, "polygon": box_around(&outline, 6.0, None), "class": "slough"}),
            "keyframe_seq",
        ),
    ] {
        let res = app.post_auth(&path, &alice.token, &body).await;
        assert_eq!(res.status(), 400, "{body}");
        let e: Value = res.json().await.unwrap();
        assert_eq!(e["error"]["field"], field, "{e}");
    }
    let other = format!("/v1/scans/{scan}/measurements/{}/tissue-corrections", Uuid::now_v7());
    assert_eq!(app.post_auth(&other, &alice.token, &whole).await.status(), 404);
    let corrected: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM audit_log WHERE action = 'scan.tissue.correct' AND outcome = 'success'",
    )
    .fetch_one(&app.pg)
    .await
    .unwrap();
    assert_eq!(corrected, 2);

    // The export: one line per correction, the classifier's view of the region inside it.
    let res = app.get_auth("/v1/admin/tissue-corrections.ndjson", &admin.token).await;
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["content-type"], "application/x-ndjson");
    let text = res.text().await.unwrap();
    let lines: Vec<Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 2, "{text}");
    assert_eq!(lines[0]["class"], "slough");
    assert_eq!(lines[0]["scan_id"], scan.to_string());
    assert!(!text.contains(&ada_id.to_string()), "no patient id in the export");
    let samples = lines[0]["samples"].as_array().unwrap();
    assert!(samples.len() > 20, "{}", lines[0]);
    let red = samples.iter().filter(|s| s["lab"][1].as_f64().unwrap() > 20.0).count();
    assert!(red * 2 > samples.len(), "the region's samples are the red bed: {red} of {}", samples.len());
    assert!(lines[0]["region_world"].as_array().unwrap().len() >= 4);
    // What the export is for: every sample becomes a training row with its correction's class
    // (`recon/train/train.sh` with `CORRECTIONS`), the classifier's own features of it.
    let rows = coherency_recon::colour::correction_rows(&text);
    let sent: usize = lines.iter().map(|l| l["samples"].as_array().unwrap().len()).sum();
    assert_eq!((rows.rows.len(), rows.skipped_corrections, rows.skipped_samples), (sent, 0, 0));
    let first = coherency_recon::colour::sample_of_json(&samples[0]).expect("a sample");
    assert_eq!(rows.rows[0], (coherency_recon::colour::features(&first), coherency_recon::colour::TissueClass::Slough));
    let first_id = lines[0]["correction_id"].as_str().unwrap();
    let page: String = app
        .get_auth(&format!("/v1/admin/tissue-corrections.ndjson?after={first_id}"), &admin.token)
        .await
        .text()
        .await
        .unwrap();
    assert_eq!(page.lines().count(), 1);
    assert_eq!(app.get_auth("/v1/admin/tissue-corrections.ndjson", &alice.token).await.status(), 403);
    let exported: i64 = sqlx::query_scalar("SELECT count(*) FROM audit_log WHERE action = 'tissue.corrections.export'")
        .fetch_one(&app.pg)
        .await
        .unwrap();
    assert_eq!(exported, 2);

    // A measurement without a composition has nothing to correct.
    let bare = crate::scan_stream::create_scan(&app, &ada, ada_id).await;
    let bare_list = crate::colour::stream_colour_scan(&app, &ada, bare, &phantom, 0).await;
    let bare_m = bare_list["measurements"][0]["id"].as_str().unwrap();
    let res = app
        .post_auth(&format!("/v1/scans/{bare}/measurements/{bare_m}/tissue-corrections"), &alice.token, &whole)
        .await;
    assert_eq!(res.status(), 409);

    // Two corrections at once (two clinicians): each is either stored with the composition of
    // every stored correction, or sent back 409 to retry; none is lost silently and the
    // measurement never shows a composition without the correction that made it.
    let body = |class: &str| json!({"keyframe_seq": seq, "polygon": box_around(&outline, 6.0, None), "class": class});
    let (eschar, granulation) = (body("eschar"), body("granulation"));
    let (ra, rb) =
        tokio::join!(app.post_auth(&path, &alice.token, &eschar), app.post_auth(&path, &alice.token, &granulation));
    let mut stored = 0;
    for (res, class) in [(ra, "eschar"), (rb, "granulation")] {
        let status = res.status().as_u16();
        let v: Value = res.json().await.unwrap();
        match status {
            201 => stored += 1,
            409 => {
                assert_eq!(v["error"]["code"], "conflict", "{v}");
                // Its retry is stored on top of the one that won.
                let res = app.post_auth(&path, &alice.token, &body(class)).await;
                assert_eq!(res.status(), 201, "the retry of a correction sent back");
                stored += 1;
            }
            other => panic!("a concurrent correction answered {other}: {v}"),
        }
    }
    assert_eq!(stored, 2);
    let listed: Value = app.get_auth(&path, &alice.token).await.json().await.unwrap();
    let listed = listed["corrections"].as_array().unwrap();
    assert_eq!(listed.len(), 4, "every correction stored once: {listed:?}");
    let last = listed[3]["class"].as_str().unwrap();
    let now: Value = app.get_auth(&format!("/v1/scans/{scan}/measurements"), &alice.token).await.json().await.unwrap();
    assert!(share(&now["measurements"][0]["tissue"], last) > 95.0, "the newest correction ({last}) shows: {now}");
}
