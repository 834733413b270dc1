//! The browser pages: files under `web_dir` served at `/web/…` (the workspace at
//! `/web/dashboard/`), `/` and `/consult` redirecting there, the icon at
//! `/favicon.ico`, and `/docs` redirecting to the API docs. Only files inside `web_dir` with a known
//! type are served; everything else is the ordinary 404. The pages hold no data: they log
//! in through the API like any client.

use std::path::{Component, Path, PathBuf};

use actix_web::{web, HttpResponse};

use crate::error::ApiError;
use crate::state::AppState;

/// Largest file served.
const MAX_FILE_BYTES: u64 = 16 * 1024 * 1024;

fn content_type(path: &Path) -> Option<&'static str> {
    Some(match path.extension()?.to_str()? {
        "html" => "text/html; charset=utf-8",
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "json" => "application/json",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "ico" => "image/x-icon",
        "map" => "application/json",
        "woff2" => "font/woff2",
        _ => return None,
    })
}

/// The file `tail` names under `root`, refusing anything that climbs out.
fn resolve(root: &Path, tail: &str) -> Option<PathBuf> {
    let rel = Path::new(tail);
    if rel.components().any(|c| !matches!(c, Component::Normal(_))) {
        return None;
    }
    let mut p = root.join(rel);
    if tail.is_empty() || tail.ends_with('/') || p.is_dir() {
        p = p.join("index.html");
    }
    Some(p)
}

/// `GET /web/{tail}`
pub async fn file(state: web::Data<AppState>, tail: web::Path<String>) -> Result<HttpResponse, ApiError> {
    let root = PathBuf::from(&state.config.web_dir);
    let path = resolve(&root, &tail).ok_or_else(ApiError::not_found)?;
    let ct = content_type(&path).ok_or_else(ApiError::not_found)?;
    let meta = tokio::fs::metadata(&path).await.map_err(|_| ApiError::not_found())?;
    if !meta.is_file() || meta.len() > MAX_FILE_BYTES {
        return Err(ApiError::not_found());
    }
    let body = tokio::fs::read(&path).await.map_err(|_| ApiError::not_found())?;
    Ok(HttpResponse::Ok()
        .content_type(ct)
        .insert_header(("Cache-Control", "no-cache"))
        .insert_header(("X-Content-Type-Options", "nosniff"))
        .insert_header((
            "Content-Security-Policy",
            "default-src 'self'; connect-src 'self' ws: wss:; img-src 'self' data: blob:; media-src 'self' blob:; \
             style-src 'self'; script-src 'self'; object-src 'none'; frame-ancestors 'none'; base-uri 'none'",
        ))
        .body(body))
}

/// `GET /consult`: consult links made before the consult became a view of the workspace
/// (`/consult#consult=<id>`, `#token=…`) go to the workspace. The fragment stays with the
/// browser across the redirect (the Location names none), and the workspace turns it into
/// `#/consult/<id>`.
pub async fn consult_page() -> HttpResponse {
    HttpResponse::Found().insert_header(("Location", "/web/dashboard/")).finish()
}

/// `GET /favicon.ico`: the icon browsers ask for on every page that names none
/// (`web/favicon.ico`; the pages themselves link `web/favicon.svg`).
pub async fn favicon(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    file(state, web::Path::from("favicon.ico".to_string())).await
}

/// `GET /docs`: to the API docs at `/docs/` (README and `scripts/run` print `/docs`).
pub async fn to_docs() -> HttpResponse {
    HttpResponse::PermanentRedirect().insert_header(("Location", "/docs/")).finish()
}

/// `GET /` and `GET /web/dashboard`: to the dashboard folder (with the slash, so the page's
/// relative links resolve).
pub async fn to_dashboard() -> HttpResponse {
    HttpResponse::Found().insert_header(("Location", "/web/dashboard/")).finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_cannot_climb_out_of_the_web_folder() {
        let root = Path::new("/srv/web");
        assert_eq!(resolve(root, "dashboard/app.js"), Some(PathBuf::from("/srv/web/dashboard/app.js")));
        assert_eq!(resolve(root, "../etc/passwd"), None);
        assert_eq!(resolve(root, "/etc/passwd"), None);
        assert_eq!(resolve(root, "a/./b.js"), Some(PathBuf::from("/srv/web/a/b.js")));
    }
}
