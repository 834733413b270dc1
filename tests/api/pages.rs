//! The browser pages as the server serves them: the docs link works without its slash, every
//! page has an icon, and no page relies on what the server's own Content-Security-Policy
//! blocks (inline styles and scripts).

use crate::helpers::{spawn_app_with, TestApp};

const WEB: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/web");

async fn pages_app() -> TestApp {
    spawn_app_with(|mut c| {
        c.web_dir = WEB.into();
        c
    })
    .await
}

#[actix_web::test]
async fn docs_without_the_slash_redirects_to_the_api_docs() {
    let app = pages_app().await;
    let res = app.get("/docs").await;
    assert_eq!(res.status(), 308);
    assert_eq!(res.headers()["location"], "/docs/");
    let res = app.get("/docs/").await;
    assert_eq!(res.status(), 200);
    assert!(res.text().await.unwrap().contains("swagger"), "the API docs page");
}

#[actix_web::test]
async fn an_old_consult_link_lands_in_the_workspace() {
    let app = pages_app().await;
    // `/consult#consult=…`: the fragment never reaches the server; the browser keeps it
    // across a redirect whose Location has none.
    let res = app.get("/consult").await;
    assert_eq!(res.status(), 302);
    assert_eq!(res.headers()["location"], "/web/dashboard/");
    assert_eq!(app.get("/web/consult.html").await.status(), 404, "the old page is gone");
}

#[actix_web::test]
async fn the_icon_browsers_ask_for_is_served() {
    let app = pages_app().await;
    let res = app.get("/favicon.ico").await;
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["content-type"], "image/x-icon");
    let body = res.bytes().await.unwrap();
    assert_eq!(&body[..4], [0, 0, 1, 0], "an ICO file");
    let res = app.get("/web/favicon.svg").await;
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["content-type"], "image/svg+xml");
}

/// The values of `attr="…"` in `html`.
fn attr_values<'a>(html: &'a str, attr: &str) -> Vec<&'a str> {
    let needle = format!("{attr}=\"");
    html.match_indices(&needle).filter_map(|(i, _)| html[i + needle.len()..].split('"').next()).collect()
}

#[actix_web::test]
async fn no_page_uses_inline_styles_or_scripts_the_csp_blocks_and_what_they_link_is_served() {
    let app = pages_app().await;
    for page in ["scan-rtc.html", "capture.html", "dashboard/index.html"] {
        let res = app.get(&format!("/web/{page}")).await;
        assert_eq!(res.status(), 200, "{page}");
        let csp = res.headers()["content-security-policy"].to_str().unwrap().to_string();
        assert!(csp.contains("style-src 'self'") && csp.contains("script-src 'self'"), "{page}: {csp}");
        let html = res.text().await.unwrap();
        assert!(!html.contains("<style"), "{page}: an inline <style> is blocked by the CSP");
        assert!(!html.contains(" style=\""), "{page}: a style attribute is blocked by the CSP");
        for (i, _) in html.match_indices("<script") {
            let tag = &html[i..i + html[i..].find('>').unwrap()];
            assert!(tag.contains("src=\""), "{page}: an inline script is blocked by the CSP: {tag}");
        }
        assert!(html.contains("rel=\"icon\""), "{page} names its icon");
        let dir = page.rsplit_once('/').map(|(d, _)| format!("/web/{d}/")).unwrap_or_else(|| "/web/".into());
        for link in attr_values(&html, "href").into_iter().chain(attr_values(&html, "src")) {
            if link.starts_with('#') || link.contains("dist/") {
                continue; // in-page anchors; the dashboard bundle is a build output
            }
            let path = if link.starts_with('/') { link.to_string() } else { format!("{dir}{link}") };
            assert_eq!(app.get(&path).await.status(), 200, "{page} links {path}");
        }
    }
}
