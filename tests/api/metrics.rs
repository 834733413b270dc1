use crate::helpers::spawn_app;

/// The request counter of `route` answered with `status` in a `/metrics` text.
pub fn counter(text: &str, route: &str, status: &str) -> u64 {
    text.lines()
        .filter(|l| l.starts_with("coherency_http_requests_total{"))
        .filter(|l| l.contains(&format!("route=\"{route}\"")) && l.contains(&format!("status=\"{status}\"")))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

#[actix_web::test]
async fn request_counters_move_after_requests() {
    let app = spawn_app().await;
    let before = app.get("/metrics").await.text().await.unwrap();
    for _ in 0..3 {
        assert_eq!(app.get("/livez").await.status(), 200);
    }
    app.get("/nope").await;
    let after = app.get("/metrics").await.text().await.unwrap();
    assert_eq!(counter(&after, "/livez", "200"), counter(&before, "/livez", "200") + 3);
    assert_eq!(counter(&after, "unmatched", "404"), counter(&before, "unmatched", "404") + 1);
    assert!(after.contains("coherency_http_request_duration_seconds_bucket"), "latency histogram exported");
    assert!(after.contains("coherency_build_info"));
}
