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
