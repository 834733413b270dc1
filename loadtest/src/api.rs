//! Setting up through the public API: an account, a patient, scan-capture consent and a
//! scan per simulated phone, exactly as the app would.

use std::time::Duration;

use anyhow::{anyhow, Context};
use serde_json::{json, Value};
use uuid::Uuid;

/// Password of every account the load tester creates (long enough for the server's policy).
const PASSWORD: &str = "loadtest-correct-horse-battery-staple";

/// A failed setup call, with a code for the report (`setup_http_429`, `setup_connect`, …).
#[derive(Debug)]
pub struct SetupError {
    /// For the errors-by-code table.
    pub code: String,
    /// What happened.
    pub error: anyhow::Error,
}

/// What one phone needs to stream.
#[derive(Debug, Clone)]
pub struct Provisioned {
    /// Base URL of the node used for this phone.
    pub target: String,
    /// Bearer token of the patient.
    pub token: String,
    /// The scan to stream to.
    pub scan_id: Uuid,
}

/// An HTTP client with bounded timeouts.
pub fn http_client() -> anyhow::Result<reqwest::Client> {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .connect_timeout(Duration::from_secs(5))
        .build()
        .context("building the HTTP client")
}

/// Checks `/readyz` on a target.
pub async fn ready(http: &reqwest::Client, target: &str) -> anyhow::Result<()> {
    let url = format!("{}/readyz", target.trim_end_matches('/'));
    let res = http.get(&url).send().await.with_context(|| format!("GET {url}"))?;
    if !res.status().is_success() {
        return Err(anyhow!("GET {url}: HTTP {}: {}", res.status(), res.text().await.unwrap_or_default()));
    }
    Ok(())
}

/// `POST {target}{path}` with a JSON body, the answer's JSON.
pub async fn call(
    http: &reqwest::Client,
    target: &str,
    path: &str,
    token: Option<&str>,
    body: &Value,
) -> Result<Value, SetupError> {
    let url = format!("{}{path}", target.trim_end_matches('/'));
    let mut req = http.post(&url).json(body);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    answer(req, &format!("POST {path}")).await
}

/// `GET {target}{path}` with a bearer token, the answer's JSON.
pub async fn get(http: &reqwest::Client, target: &str, path: &str, token: &str) -> Result<Value, SetupError> {
    let url = format!("{}{path}", target.trim_end_matches('/'));
    answer(http.get(&url).bearer_auth(token), &format!("GET {path}")).await
}

/// Sends a request and reads its JSON answer (`null` for an empty body); `what` names the
/// request in errors.
async fn answer(req: reqwest::RequestBuilder, what: &str) -> Result<Value, SetupError> {
    let res = req.send().await.map_err(|e| SetupError {
        code: if e.is_timeout() { "setup_timeout".into() } else { "setup_connect".into() },
        error: anyhow!("{what}: {e}"),
    })?;
    let status = res.status();
    let text = res.text().await.unwrap_or_default();
    if !status.is_success() {
        return Err(SetupError {
            code: format!("setup_http_{}", status.as_u16()),
            error: anyhow!("{what}: HTTP {status}: {text}"),
        });
    }
    if text.is_empty() {
        return Ok(Value::Null);
    }
    serde_json::from_str(&text)
        .map_err(|e| SetupError { code: "setup_bad_json".into(), error: anyhow!("{what}: {e}: {text}") })
}

/// A signed-in staff member.
#[derive(Debug, Clone)]
pub struct Staff {
    pub token: String,
    pub user_id: Uuid,
    pub role: String,
}

/// The current TOTP code (RFC 6238: SHA-1, 6 digits, 30 s) of a base32 secret.
fn totp_code(secret: &str) -> Result<String, SetupError> {
    let bad = |e: String| SetupError { code: "setup_bad_totp_secret".into(), error: anyhow!("TOTP secret: {e}") };
    let bytes = totp_rs::Secret::Encoded(secret.trim().to_string()).to_bytes().map_err(|e| bad(format!("{e:?}")))?;
    let totp = totp_rs::TOTP::new_unchecked(totp_rs::Algorithm::SHA1, 6, 1, 30, bytes, None, "loadtest".into());
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    Ok(totp.generate(now))
}

/// Signs a staff member in with a password and, for an enrolled account, the current TOTP
/// code. A code is accepted once per 30 s step, so a refused code is tried again (at most
/// twice) in the next step.
pub async fn staff_login(
    http: &reqwest::Client,
    target: &str,
    email: &str,
    password: &str,
    totp_secret: Option<&str>,
) -> Result<Staff, SetupError> {
    let mut tries = 0;
    loop {
        let mut body = json!({"email": email, "password": password});
        if let Some(s) = totp_secret {
            body["totp_code"] = totp_code(s)?.into();
        }
        match call(http, target, "/v1/auth/login", None, &body).await {
            Ok(v) => {
                let token = field(&v, "/access_token", "login")?.to_owned();
                let role = field(&v, "/user/role", "login")?.to_owned();
                let user_id = field(&v, "/user/id", "login")?
                    .parse()
                    .map_err(|e| SetupError { code: "setup_bad_json".into(), error: anyhow!("user id: {e}") })?;
                return Ok(Staff { token, user_id, role });
            }
            // The account has MFA and no secret was given: say which option is missing.
            Err(e) if e.code == "setup_http_401" && e.error.to_string().contains("\"mfa_code_required\"") => {
                return Err(SetupError {
                    code: "setup_mfa_code_required".into(),
                    error: anyhow!("{email} has MFA enrolled: pass its TOTP secret (--staff-totp / --admin-totp)"),
                });
            }
            Err(e) if e.code == "setup_http_401" && totp_secret.is_some() && tries < 2 => {
                tries += 1;
                let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
                tokio::time::sleep(Duration::from_secs(30 - now % 30 + 1)).await;
            }
            Err(e) => return Err(e),
        }
    }
}

/// The staff member an access token belongs to (`GET /v1/me`).
pub async fn staff_of_token(http: &reqwest::Client, target: &str, token: &str) -> Result<Staff, SetupError> {
    let me = get(http, target, "/v1/me", token).await?;
    let role = field(&me, "/role", "me")?.to_owned();
    let user_id = field(&me, "/id", "me")?
        .parse()
        .map_err(|e| SetupError { code: "setup_bad_json".into(), error: anyhow!("user id: {e}") })?;
    Ok(Staff { token: token.to_owned(), user_id, role })
}

/// A fresh tag for one part's accounts (`loadtest-{tag}-{i}@example.test`): 12 random hex
/// digits. Not a time-ordered id's prefix: the parts of a mixed run start in the same
/// millisecond, and a v7 id's first 12 digits are its millisecond.
pub fn run_tag() -> String {
    uuid::Uuid::new_v4().simple().to_string()[..12].to_owned()
}

/// Registers and signs in a patient account; returns (token, patient id).
pub async fn patient(
    http: &reqwest::Client,
    target: &str,
    run_tag: &str,
    i: usize,
) -> Result<(String, String), SetupError> {
    let email = format!("loadtest-{run_tag}-{i}@example.test");
    let reg = call(
        http,
        target,
        "/v1/auth/register",
        None,
        &json!({"email": email, "password": PASSWORD, "given_name": "Load", "family_name": format!("Tester {i}"), "birth_date": "1980-01-01"}),
    )
    .await?;
    let patient_id = field(&reg, "/patient_id", "register")?.to_owned();
    let login = call(http, target, "/v1/auth/login", None, &json!({"email": email, "password": PASSWORD})).await?;
    Ok((field(&login, "/access_token", "login")?.to_owned(), patient_id))
}

/// A string field of an answer.
pub fn field<'a>(v: &'a Value, ptr: &str, what: &str) -> Result<&'a str, SetupError> {
    v.pointer(ptr)
        .and_then(Value::as_str)
        .ok_or_else(|| SetupError { code: "setup_bad_json".into(), error: anyhow!("{what}: no {ptr} in {v}") })
}

/// Registers a patient account, signs in, records scan-capture consent and creates a scan.
pub async fn provision(
    http: &reqwest::Client,
    target: &str,
    run_tag: &str,
    i: usize,
) -> Result<Provisioned, SetupError> {
    let (token, patient_id) = patient(http, target, run_tag, i).await?;
    call(
        http,
        target,
        &format!("/v1/patients/{patient_id}/consents"),
        Some(&token),
        &json!({"scope": "scan_capture", "status": "granted", "terms_version": "1"}),
    )
    .await?;
    let scan = call(
        http,
        target,
        "/v1/scans",
        Some(&token),
        &json!({"patient_id": patient_id, "body_site": "left lower leg (loadtest)"}),
    )
    .await?;
    let scan_id = field(&scan, "/id", "create scan")?
        .parse()
        .map_err(|e| SetupError { code: "setup_bad_json".into(), error: anyhow!("scan id: {e}") })?;
    Ok(Provisioned { target: target.to_owned(), token, scan_id })
}

/// Which of `n` nodes the `i`-th piece of a run's work (a phone, a room, a booking attempt,
/// a board, a calendar change) goes to: round-robin, so every node takes an equal share, the
/// same run always spreads the same way, and a consult's two sides can be put on different
/// nodes (`i` and `i + 1`). Node 0 when there are none.
pub fn node_for(i: usize, n: usize) -> usize {
    i.checked_rem(n).unwrap_or(0)
}

/// The target of the `i`-th piece of work (see [`node_for`]); `""` when there are none.
pub fn target_for(targets: &[String], i: usize) -> &str {
    targets.get(node_for(i, targets.len())).map_or("", String::as_str)
}

/// The start of a scenario run as a clinician: the first target, a client, every target
/// ready, the clinician signed in.
pub async fn start_as_clinician(
    common: &crate::Common,
    staff: &crate::StaffArgs,
) -> anyhow::Result<(String, reqwest::Client, Staff)> {
    let target = common.target.first().context("no --target")?.clone();
    let http = http_client()?;
    for t in &common.target {
        ready(&http, t).await?;
    }
    let staff = clinician(&http, &target, staff).await?;
    Ok((target, http, staff))
}

/// Signs in with a token or a login, whichever was given (`None` when neither was).
pub async fn sign_in(
    http: &reqwest::Client,
    target: &str,
    token: Option<&str>,
    login: (Option<&String>, Option<&String>, Option<&str>),
) -> Option<Result<Staff, SetupError>> {
    Some(match (token, login) {
        (Some(t), _) => staff_of_token(http, target, t).await,
        (None, (Some(e), Some(p), totp)) => staff_login(http, target, e, p, totp).await,
        _ => return None,
    })
}

/// The clinician a scenario runs as (`--staff-*`).
pub async fn clinician(http: &reqwest::Client, target: &str, args: &crate::StaffArgs) -> anyhow::Result<Staff> {
    let login = (args.staff_email.as_ref(), args.staff_password.as_ref(), args.staff_totp.as_deref());
    let staff = sign_in(http, target, args.staff_token.as_deref(), login)
        .await
        .context("this scenario runs as a clinician: give --staff-email and --staff-password, or --staff-token")?
        .map_err(|e| e.error.context("staff sign-in"))?;
    if staff.role != "clinician" {
        return Err(anyhow!("--staff-email must be a clinician (the run uses their calendar); it is {}", staff.role));
    }
    Ok(staff)
}

/// The clinician's own 15-minute appointment type for the run and the free slots of the
/// next 7 days (at least `min_slots` of them).
pub async fn calendar(
    http: &reqwest::Client,
    target: &str,
    staff: &Staff,
    min_slots: usize,
) -> anyhow::Result<(String, Vec<String>)> {
    let ty = call(
        http,
        target,
        &format!("/v1/clinicians/{}/appointment-types", staff.user_id),
        Some(&staff.token),
        &json!({"name": "Load test review", "duration_minutes": 15, "buffer_before_minutes": 0,
                "buffer_after_minutes": 0, "modality": "telehealth"}),
    )
    .await
    .map_err(|e| e.error)?;
    let ty = field(&ty, "/id", "appointment type").map_err(|e| e.error)?.to_owned();
    let slots = get(http, target, &format!("/v1/slots?clinician={}&type={ty}", staff.user_id), &staff.token)
        .await
        .map_err(|e| e.error)?;
    let starts: Vec<String> = slots["slots"]
        .as_array()
        .map(|a| a.iter().filter_map(|s| s["start"].as_str().map(str::to_owned)).collect())
        .unwrap_or_default();
    if starts.len() < min_slots {
        return Err(anyhow!(
            "the clinician has {} free slots in the next 7 days ({min_slots} needed); give them working hours",
            starts.len()
        ));
    }
    Ok((ty, starts))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn work_is_dealt_round_robin_over_the_nodes() {
        let spread: Vec<usize> = (0..7).map(|i| node_for(i, 3)).collect();
        assert_eq!(spread, [0, 1, 2, 0, 1, 2, 0]);
        assert!((0..100).all(|i| node_for(i, 1) == 0), "one node takes everything");
        assert_eq!(node_for(5, 0), 0, "no nodes: never a division by zero");
        // A consult's clinician (i + 1) lands on another node than its patient (i).
        assert!((0..10).all(|i| node_for(i, 2) != node_for(i + 1, 2)));
        let targets = ["http://127.0.0.1:1".to_owned(), "http://127.0.0.1:2".to_owned()];
        assert_eq!(target_for(&targets, 3), "http://127.0.0.1:2");
        assert_eq!(target_for(&[], 3), "");
    }
}
