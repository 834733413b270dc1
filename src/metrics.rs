//! Prometheus metrics: request count and latency by route and status, plus gauges the
//! actors and sockets update. One registry per application, so test apps do not collide.

use std::time::Instant;

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::middleware::Next;
use actix_web::{web, HttpResponse};
use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry, TextEncoder,
};

/// Every metric the server exports.
pub struct Metrics {
    pub registry: Registry,
    pub http_requests: IntCounterVec,
    pub http_duration: HistogramVec,
    /// Each request's peak of live allocated bytes (`crate::alloc`).
    pub request_alloc_peak: HistogramVec,
    pub draining: IntGauge,
    pub websockets_open: IntGaugeVec,
    pub queue_depth: IntGaugeVec,
}

impl Metrics {
    pub fn new(node: &str) -> Self {
        let registry = Registry::new_custom(Some("coherency".into()), None).unwrap_or_default();
        let http_requests = IntCounterVec::new(
            Opts::new("http_requests_total", "HTTP requests by method, route and status"),
            &["method", "route", "status"],
        )
        .unwrap_or_else(|_| unreachable!("static metric definition"));
        let http_duration = HistogramVec::new(
            HistogramOpts::new("http_request_duration_seconds", "HTTP request latency by method and route")
                .buckets(vec![0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0]),
            &["method", "route"],
        )
        .unwrap_or_else(|_| unreachable!("static metric definition"));
        let request_alloc_peak = HistogramVec::new(
            HistogramOpts::new(
                "request_alloc_peak_bytes",
                "Peak bytes allocated at once by one HTTP request, by method and route (budget: 512 MiB)",
            )
            .buckets(prometheus::exponential_buckets(16_384.0, 4.0, 10).unwrap_or_default()),
            &["method", "route"],
        )
        .unwrap_or_else(|_| unreachable!("static metric definition"));
        let draining = IntGauge::new("draining", "1 while the node drains after SIGTERM")
            .unwrap_or_else(|_| unreachable!("static metric definition"));
        let websockets_open = IntGaugeVec::new(Opts::new("websockets_open", "Open websockets by kind"), &["kind"])
            .unwrap_or_else(|_| unreachable!("static metric definition"));
        let queue_depth =
            IntGaugeVec::new(Opts::new("queue_depth", "Items waiting in a writer or actor queue"), &["queue"])
                .unwrap_or_else(|_| unreachable!("static metric definition"));
        let info = IntGaugeVec::new(Opts::new("build_info", "Build and node information"), &["version", "node"])
            .unwrap_or_else(|_| unreachable!("static metric definition"));
        info.with_label_values(&[env!("CARGO_PKG_VERSION"), node]).set(1);
        for c in [
            Box::new(http_requests.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(http_duration.clone()),
            Box::new(request_alloc_peak.clone()),
            Box::new(draining.clone()),
            Box::new(websockets_open.clone()),
            Box::new(queue_depth.clone()),
            Box::new(info),
        ] {
            let _ = registry.register(c);
        }
        Self { registry, http_requests, http_duration, request_alloc_peak, draining, websockets_open, queue_depth }
    }

    /// The text exposition format.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut buf);
        String::from_utf8(buf).unwrap_or_default()
    }
}

/// Middleware: counts and times every request under its route pattern (never the raw path,
/// which would carry ids), and measures its allocations (`crate::alloc`): the peak goes to
/// `coherency_request_alloc_peak_bytes`, and a request over the budget is logged.
pub async fn record(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let start = Instant::now();
    let method = req.method().to_string();
    let metrics = req.app_data::<web::Data<Metrics>>().cloned();
    let account = crate::alloc::Account::new();
    let res = crate::alloc::track(account.clone(), next.call(req)).await?;
    if let Some(metrics) = metrics {
        let route = res.request().match_pattern().unwrap_or_else(|| "unmatched".into());
        if account.allocations() > 0 {
            let peak = account.peak_bytes();
            metrics.request_alloc_peak.with_label_values(&[&method, &route]).observe(peak as f64);
            if peak > crate::alloc::REQUEST_ALLOC_BUDGET_BYTES {
                tracing::warn!(
                    method = %method,
                    route = %route,
                    peak_bytes = peak,
                    budget_bytes = crate::alloc::REQUEST_ALLOC_BUDGET_BYTES,
                    "request exceeded the allocation budget"
                );
            }
        }
        let status = res.status().as_u16().to_string();
        metrics.http_requests.with_label_values(&[&method, &route, &status]).inc();
        metrics.http_duration.with_label_values(&[&method, &route]).observe(start.elapsed().as_secs_f64());
    }
    Ok(res)
}

/// `GET /metrics`
#[utoipa::path(get, path = "/metrics", tag = "operations", responses((status = 200, description = "Prometheus text format", content_type = "text/plain")))]
pub async fn metrics(metrics: web::Data<Metrics>) -> HttpResponse {
    HttpResponse::Ok().content_type("text/plain; version=0.0.4").body(metrics.render())
}
