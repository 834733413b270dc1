//! The browser pages: files under `web_dir` served at `/web/…` (the workspace at
//! `/web/dashboard/`), `/` and `/consult` redirecting there, the capture-link page at
//! `/capture`, the icon at `/favicon.ico`, and `/docs` redirecting to the API docs. Only files
//! inside `web_dir` with a known type are served; everything else is the ordinary 404. The
//! pages hold no data: they log in through the API like any client.
//!
//! Also here: the two files by which the phone apps claim `/capture` links
//! (`/.well-known/apple-app-site-association`, `/.well-known/assetlinks.json`), written from
//! the configured app ids and answering 404 while none are configured.

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

/// `GET /capture`: what a capture link (`<public_url>/capture#code=…`) shows in a browser — on
/// a phone with the Coherency app the app opens the link instead. The page holds no data and
/// runs no script: it never reads the code in the fragment.
pub async fn capture_page(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let mut res = file(state, web::Path::from("capture.html".to_string())).await?;
    res.headers_mut().insert(
        actix_web::http::header::REFERRER_POLICY,
        actix_web::http::header::HeaderValue::from_static("no-referrer"),
    );
    Ok(res)
}

/// Where the apps may open links: `/capture` only.
const APP_LINK_PATH: &str = "/capture";

/// `GET /.well-known/apple-app-site-association`: the iOS apps of `ios_app_ids` open
/// `/capture` links (universal links, the `applinks` format of iOS 13 and later). 404 while no
/// app id is configured.
pub async fn apple_app_site_association(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let ids = state.config.ios_app_ids();
    if ids.is_empty() {
        return Err(ApiError::not_found());
    }
    let body = serde_json::json!({
        "applinks": {
            "details": [{
                "appIDs": ids,
                "components": [{ "/": APP_LINK_PATH, "comment": "capture links: open the requested scan" }],
            }],
        },
    });
    Ok(well_known(body))
}

/// `GET /.well-known/assetlinks.json`: the Android app `android_app_package`, signed with one
/// of `android_cert_fingerprints`, handles this site's links (Android App Links; the app's
/// manifest narrows them to `/capture`). 404 while no package is configured.
pub async fn assetlinks(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let package = state.config.android_app_package.trim();
    if package.is_empty() {
        return Err(ApiError::not_found());
    }
    let fingerprints: Vec<String> =
        state.config.android_cert_fingerprints().iter().map(|f| f.to_ascii_uppercase()).collect();
    let body = serde_json::json!([{
        "relation": ["delegate_permission/common.handle_all_urls"],
        "target": {
            "namespace": "android_app",
            "package_name": package,
            "sha256_cert_fingerprints": fingerprints,
        },
    }]);
    Ok(well_known(body))
}

/// A `.well-known` JSON document: served as is, without redirects (both platforms refuse
/// them), cacheable for an hour.
fn well_known(body: serde_json::Value) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("application/json")
        .insert_header(("Cache-Control", "public, max-age=3600"))
        .insert_header(("X-Content-Type-Options", "nosniff"))
        .body(body.to_string())
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
