//! The binary's configuration and start-up failures, run as a user would run them.

use std::process::Command;

fn coherency() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_coherency"));
    c.env("COHERENCY_LOG_FORMAT", "json");
    c
}

#[test]
fn an_unknown_environment_key_fails_naming_it() {
    let out = coherency().arg("migrate").env("COHERENCY_HTTP_ADRESS", "x").output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("http_adress") || err.contains("HTTP_ADRESS"), "{err}");
}

#[test]
fn a_bad_value_fails_naming_its_key() {
    let out = coherency().arg("migrate").env("COHERENCY_SHUTDOWN_GRACE_SECS", "soon").output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("shutdown_grace_secs"), "{err}");
}

#[test]
fn an_unknown_key_in_the_config_file_fails_naming_it() {
    let dir = std::env::temp_dir().join(format!("coh-cfg-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("c.toml");
    std::fs::write(&file, "http_addr = \"127.0.0.1:0\"\nredis_prefx = \"x:\"\n").unwrap();
    let out = coherency().arg("--config").arg(&file).arg("migrate").output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("redis_prefx"), "{err}");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn an_unreachable_service_is_one_line_naming_it_with_the_password_masked() {
    let out = coherency()
        .arg("serve")
        .env("COHERENCY_HTTP_ADDR", "127.0.0.1:0")
        .env("COHERENCY_DATABASE_URL", "postgres://app:s3cretpw@127.0.0.1:1/coherency")
        .env("COHERENCY_ENCRYPTION_KEY", coherency::crypto::FieldKey::generate_encoded("t"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    let line = err.lines().find(|l| l.starts_with("coherency:")).expect("an error line");
    assert!(line.contains("postgres") && line.contains("127.0.0.1:1"), "{line}");
    assert!(!err.contains("s3cretpw"), "password printed: {err}");
    assert!(line.contains("***"), "{line}");
}

#[test]
fn help_documents_every_setting() {
    let out = coherency().arg("--help").output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    for s in coherency::config::SETTINGS {
        assert!(text.contains(&s.env()), "--help lacks {}", s.env());
    }
}

#[test]
fn the_readme_table_lists_every_setting() {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    for s in coherency::config::SETTINGS {
        assert!(readme.contains(&format!("`{}`", s.env())), "README lacks {}", s.env());
    }
}

#[test]
fn every_variable_docker_compose_sets_is_a_real_setting() {
    let compose = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docker-compose.yml")).unwrap();
    let known: Vec<String> = coherency::config::SETTINGS.iter().map(|s| s.env()).collect();
    let mut seen = 0;
    for word in compose.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
        if word.starts_with("COHERENCY_") {
            seen += 1;
            assert!(known.iter().any(|k| k == word), "docker-compose.yml sets {word}, which is not a setting");
        }
    }
    assert!(seen >= 5, "docker-compose.yml should configure the server through COHERENCY_* variables");
}

/// `coherency <args>` against a test app's services, configured with the app's own HTTP
/// address: the port a running server holds.
fn tool_beside(app: &crate::helpers::TestApp, args: &[&str], stdin: &str) -> std::process::Output {
    use secrecy::ExposeSecret;
    use std::io::Write;
    let c = &app.config;
    let mut cmd = coherency();
    cmd.args(args)
        .env("COHERENCY_HTTP_ADDR", format!("127.0.0.1:{}", app.port))
        .env("COHERENCY_DATABASE_URL", c.database_url.expose())
        .env("COHERENCY_REDIS_URL", c.redis_url.expose())
        .env("COHERENCY_REDIS_PREFIX", &c.redis_prefix)
        .env("COHERENCY_MONGO_URL", c.mongo_url.expose())
        .env("COHERENCY_MONGO_DATABASE", &c.mongo_database)
        .env("COHERENCY_BLOB_URL", &c.blob_url)
        .env("COHERENCY_TOKEN_SECRET", c.token_secret.as_ref().unwrap().expose_secret())
        .env("COHERENCY_ENCRYPTION_KEY", c.encryption_key.as_ref().unwrap().expose_secret())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    child.stdin.take().unwrap().write_all(stdin.as_bytes()).unwrap();
    child.wait_with_output().unwrap()
}

#[actix_web::test]
async fn create_admin_and_seed_demo_run_beside_a_server_holding_the_port() {
    let app = crate::helpers::spawn_app().await;
    // The port in the tools' configuration is taken: by the server already running on it.
    assert!(std::net::TcpListener::bind(("127.0.0.1", app.port)).is_err(), "the port is held");

    let out = tool_beside(
        &app,
        &["create-admin", "--email", "cli-admin@clinic.test"],
        &format!("{}\n", crate::helpers::PASSWORD),
    );
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "create-admin failed:\n{stdout}\n{stderr}");
    assert!(stdout.contains("admin created"), "{stdout}");
    // The running server knows the new admin at once.
    assert_eq!(app.login("cli-admin@clinic.test", crate::helpers::PASSWORD).await.status(), 200);

    let out = tool_beside(&app, &["seed-demo"], "");
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "seed-demo failed:\n{stdout}\n{stderr}");
    assert!(stdout.contains("admin@demo.coherency.test"), "{stdout}");
    assert!(!stderr.contains("Address already in use") && !stdout.contains("listening"), "{stdout}\n{stderr}");
    // A newcomer signs in as the demo clinician with what seed-demo printed: the password, and
    // a code from the printed one-line command (an authenticator app's URI beside it).
    let lines: Vec<&str> = stdout.lines().collect();
    let at = lines.iter().position(|l| l.trim_start().starts_with("clinician ")).expect("a clinician line");
    let words: Vec<&str> = lines[at].split_whitespace().collect();
    let (email, password) = (words[1], words[2]);
    assert!(lines[at + 1].contains("authenticator app: otpauth://totp/"), "{stdout}");
    let cmd = lines[at + 2].split_once("a code now: ").expect("a code command").1;
    let parts: Vec<&str> = cmd.split_whitespace().collect();
    assert_eq!(parts[1], "totp-code", "{cmd}");
    let out = std::process::Command::new(parts[0]).args(&parts[1..]).output().unwrap();
    let printed = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success(), "{printed}");
    let code = printed.split_whitespace().next().unwrap_or_default().to_string();
    assert!(code.len() == 6 && code.bytes().all(|b| b.is_ascii_digit()), "{printed}");
    let res = app
        .post_json("/v1/auth/login", &serde_json::json!({"email": email, "password": password, "totp_code": code}))
        .await;
    assert_eq!(res.status(), 200, "the demo clinician signs in with the printed code");
    let bad = std::process::Command::new(parts[0]).args(["totp-code", "not base32!"]).output().unwrap();
    assert_eq!(bad.status.code(), Some(2), "a secret that is not base32 is refused by name");
    assert_eq!(app.get("/readyz").await.status(), 200, "the server serves on");
}
