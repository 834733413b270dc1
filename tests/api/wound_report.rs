//! The wound report (`GET /v1/wounds/{id}/report.pdf`, issue #24), read back as a clinician's
//! PDF reader would: poppler's `pdftotext` finds the patient, the wound, the figures, the
//! verdict and every assessment, and nothing of the patient's other wound; `pdftoppm` draws
//! page 1 and the latest scan's mesh is on it (wound-red pixels). Access and audit as for the
//! patient record. `scripts/services` installs poppler.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use coherency::auth::Role;
use coherency_protocol::ids::ScanId;
use serde_json::{json, Value};

use crate::helpers::spawn_app;
use crate::wounds::{clinician_and_patient, measured_scan, new_wound};

fn tool(name: &str, args: &[&str]) -> std::process::Output {
    let out = Command::new(name)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{name} ({e}): poppler-utils is missing; scripts/services installs it"));
    assert!(out.status.success(), "{name}: {}", String::from_utf8_lossy(&out.stderr));
    out
}

/// Page 1 drawn by `pdftoppm` at `dpi` as RGB rows (`P6` PPM).
fn page_one(pdf: &Path, dpi: u32) -> (usize, usize, Vec<u8>) {
    let out = tool("pdftoppm", &["-r", &dpi.to_string(), "-f", "1", "-l", "1", pdf.to_str().unwrap()]);
    let b = out.stdout;
    // "P6\n<w> <h>\n255\n" then the pixels.
    let mut fields = Vec::new();
    let mut i = 0;
    while fields.len() < 4 {
        while b[i].is_ascii_whitespace() {
            i += 1;
        }
        let start = i;
        while !b[i].is_ascii_whitespace() {
            i += 1;
        }
        fields.push(String::from_utf8_lossy(&b[start..i]).to_string());
    }
    assert_eq!(fields[0], "P6");
    let (w, h): (usize, usize) = (fields[1].parse().unwrap(), fields[2].parse().unwrap());
    let pixels = b[i + 1..].to_vec();
    assert_eq!(pixels.len(), w * h * 3);
    (w, h, pixels)
}

#[actix_web::test]
async fn the_wound_report_names_the_patient_wound_figures_and_verdict_and_shows_the_latest_mesh() {
    let app = spawn_app().await;
    let (clin, patient, pid) = clinician_and_patient(&app).await;
    let sacrum = new_wound(
        &app,
        &clin,
        pid,
        json!({"site_code": "54735007", "site_display": "Sacrum", "laterality": "midline", "aetiology": "pressure", "stage": "3"}),
    )
    .await;
    let heel = new_wound(
        &app,
        &clin,
        pid,
        json!({"site_code": "116315002", "site_display": "Heel", "laterality": "left", "aetiology": "diabetic_foot"}),
    )
    .await;
    let (s, h) = (sacrum["id"].as_str().unwrap().to_string(), heel["id"].as_str().unwrap().to_string());
    // The sacrum stalls over six weeks; one scan is excluded with a reason.
    let mut excluded = None;
    for (days_ago, area) in [(44, 486.0), (37, 479.0), (30, 482.0), (23, 468.0), (16, 471.0), (9, 459.0)] {
        let (_, m) = measured_scan(&app, &clin, pid, &s, days_ago, area, 18.0).await;
        if days_ago == 23 {
            excluded = Some(m);
        }
    }
    let res = app
        .client
        .patch(app.url(&format!("/v1/wounds/{s}/assessments/{}", excluded.unwrap())))
        .bearer_auth(&clin.token)
        .json(&json!({"excluded": true, "reason": "the dressing hid the lower edge"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200, "{}", res.text().await.unwrap_or_default());
    // The heel has figures the sacrum's report must not show.
    for (days_ago, area) in [(20, 777.7), (6, 612.3)] {
        measured_scan(&app, &clin, pid, &h, days_ago, area, 21.0).await;
    }
    // The latest sacrum scan is a real one: streamed, fused and meshed.
    let res = app
        .post_auth("/v1/scans", &patient.token, &json!({"patient_id": pid, "body_site": "sacrum", "wound_id": s}))
        .await;
    assert_eq!(res.status(), 201, "{}", res.text().await.unwrap_or_default());
    let scan: ScanId = res.json::<Value>().await.unwrap()["id"].as_str().unwrap().parse().unwrap();
    crate::dashboard_browser::stream_scan(&app, &patient, scan, Duration::ZERO).await;

    let res = app.get_auth(&format!("/v1/wounds/{s}/report.pdf"), &clin.token).await;
    assert_eq!(res.status(), 200, "{}", res.text().await.unwrap_or_default());
    assert_eq!(res.headers()["content-type"], "application/pdf");
    let disposition = res.headers()["content-disposition"].to_str().unwrap().to_string();
    assert!(disposition.starts_with("attachment; filename=\"wound-report-"), "{disposition}");
    assert!(!disposition.to_lowercase().contains("lovelace") && !disposition.contains("Sacrum"), "{disposition}");
    assert_eq!(res.headers()["cache-control"], "private, no-store");
    let pdf = res.bytes().await.unwrap();
    assert!(pdf.starts_with(b"%PDF-"));
    // Kept as a test artefact, like the browser tests' screenshots.
    let dir = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("test-artifacts");
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("wound-report.pdf");
    std::fs::write(&file, &pdf).unwrap();

    let text = String::from_utf8(tool("pdftotext", &["-layout", file.to_str().unwrap(), "-"]).stdout).unwrap();
    for needle in [
        "Wound report",
        "Ada Lovelace",
        "1985-12-10",
        "Sacrum (midline), SNOMED CT 54735007",
        "Pressure injury",
        "Not on track",
        "less than the 40 %",
        "486.0 ± 18.0",
        "459.0 ± 18.0",
        "Excluded: the dressing hid the lower edge",
        "baseline",
        "page 1 of",
        "Latest scan",
        "10 mm",
    ] {
        assert!(text.contains(needle), "{needle:?} not in the report:\n{text}");
    }
    for foreign in ["777.7", "612.3", "Heel", "Diabetic foot"] {
        assert!(!text.contains(foreign), "the heel's {foreign:?} is in the sacrum's report:\n{text}");
    }
    // Seven assessments: the six above and the streamed scan's.
    let rows = text.lines().filter(|l| l.contains("automatic") || l.contains("outline ")).count();
    assert_eq!(rows, 7, "{text}");

    let (w, h, px) = page_one(&file, 60);
    let inked = px.chunks_exact(3).filter(|p| p.iter().any(|c| *c < 200)).count();
    assert!(inked * 100 > w * h, "page 1 is nearly blank: {inked} of {} pixels", w * h);
    let wound_red =
        px.chunks_exact(3).filter(|p| p[0] > 120 && u16::from(p[1]) * 2 < u16::from(p[0]) && p[2] < 90).count();
    assert!(wound_red > 20, "no wound-red pixels of the mesh picture on page 1 ({wound_red})");

    // Audited as an export, with the patient named in the details.
    let (n, details): (i64, Option<Value>) = sqlx::query_as(
        "SELECT count(*), max(details::text)::jsonb FROM audit_log
          WHERE action = 'wound.report.export' AND outcome = 'success' AND target_id = $1",
    )
    .bind(&s)
    .fetch_one(&app.pg)
    .await
    .unwrap();
    assert_eq!(n, 1);
    assert_eq!(details.unwrap()["patient_id"], pid.to_string());

    // The patient may read their own; a clinician off the care team reaches nothing, audited.
    let res = app.get_auth(&format!("/v1/wounds/{s}/report.pdf"), &patient.token).await;
    assert_eq!(res.status(), 200);
    let stranger = app.staff(Role::Clinician, true).await;
    let res = app.get_auth(&format!("/v1/wounds/{s}/report.pdf"), &stranger.token).await;
    assert_eq!(res.status(), 404);
    let refused: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM audit_log WHERE action = 'wound.report.export' AND outcome <> 'success' AND actor_id = $1",
    )
    .bind(stranger.id)
    .fetch_one(&app.pg)
    .await
    .unwrap();
    assert_eq!(refused, 1);
}

#[actix_web::test]
async fn a_wound_without_assessments_still_gets_a_one_page_report() {
    let app = spawn_app().await;
    let (clin, _patient, pid) = clinician_and_patient(&app).await;
    let w = new_wound(&app, &clin, pid, json!({"site_display": "Left shin", "aetiology": "venous"})).await;
    let res = app.get_auth(&format!("/v1/wounds/{}/report.pdf", w["id"].as_str().unwrap()), &clin.token).await;
    assert_eq!(res.status(), 200);
    let dir = tempfile_dir();
    let file = dir.join("empty.pdf");
    std::fs::write(&file, res.bytes().await.unwrap()).unwrap();
    let text = String::from_utf8(tool("pdftotext", &[file.to_str().unwrap(), "-"]).stdout).unwrap();
    for needle in
        ["Left shin", "Venous leg ulcer", "Too early to judge", "No measurement of this wound yet", "page 1 of 1"]
    {
        assert!(text.contains(needle), "{needle:?} not in:\n{text}");
    }
    std::fs::remove_dir_all(dir).ok();
}

fn tempfile_dir() -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("coherency-report-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&d).unwrap();
    d
}
