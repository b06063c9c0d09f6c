//! Prometheus metrics: one recorder per process.

use std::sync::OnceLock;
use std::time::Instant;

use axum::extract::{MatchedPath, Request};
use axum::http::{Method, StatusCode};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Installs the process-wide recorder (once; later calls do nothing).
pub fn init() {
    HANDLE.get_or_init(|| {
        let builder = PrometheusBuilder::new()
            .set_buckets_for_metric(
                Matcher::Full("http_request_duration_seconds".into()),
                LATENCY_BUCKETS,
            )
            .ok()?
            .set_buckets_for_metric(
                Matcher::Full("mezzanine_plugin_delivery_seconds".into()),
                LATENCY_BUCKETS,
            )
            .ok()?;
        match builder.install_recorder() {
            Ok(h) => Some(h),
            Err(e) => {
                tracing::warn!(error = %e, "metrics recorder not installed");
                None
            }
        }
    });
}

/// Drains the latency samples recorded since the last scrape into the histograms, every few
/// seconds: without it, a node nobody scrapes would keep every sample in memory.
pub async fn upkeep() {
    let Some(handle) = HANDLE.get().and_then(|h| h.as_ref()) else {
        return;
    };
    loop {
        tokio::time::sleep(UPKEEP_PERIOD).await;
        handle.run_upkeep();
    }
}

const UPKEEP_PERIOD: std::time::Duration = std::time::Duration::from_secs(5);

/// Renders every metric in Prometheus text format.
pub fn render() -> String {
    HANDLE
        .get()
        .and_then(|h| h.as_ref())
        .map(|h| h.render())
        .unwrap_or_default()
}

/// One request being counted: by route, method and status, with a latency histogram.
///
/// Every label comes from a fixed set, whatever clients send: the route is the matched route
/// template (`/v1/cells/{row_key}`), or `other` for a path no route matches; the method is
/// `GET`, `POST`, `PUT`, `PATCH`, `DELETE`, `HEAD` or `OPTIONS`, or `other`; the status is the answer's. So random paths and invented
/// methods cannot grow the metrics.
pub struct Track {
    started: Instant,
    route: metrics::SharedString,
    method: metrics::SharedString,
}

/// The label of a route: its template, or `other` when none matched.
pub const OTHER: &str = "other";

impl Track {
    pub fn start(req: &Request) -> Track {
        let route = match req.extensions().get::<MatchedPath>() {
            Some(p) => metrics::SharedString::from(p.as_str().to_owned()),
            None => metrics::SharedString::const_str(OTHER),
        };
        let method = metrics::SharedString::const_str(match *req.method() {
            Method::GET => "GET",
            Method::POST => "POST",
            Method::PUT => "PUT",
            Method::PATCH => "PATCH",
            Method::DELETE => "DELETE",
            Method::HEAD => "HEAD",
            Method::OPTIONS => "OPTIONS",
            _ => OTHER,
        });
        Track {
            started: Instant::now(),
            route,
            method,
        }
    }

    pub fn finish(self, status: StatusCode) {
        let elapsed = self.started.elapsed().as_secs_f64();
        let status = metrics::SharedString::from(status.as_u16().to_string());
        metrics::counter!("http_requests_total", "route" => self.route.clone(), "method" => self.method.clone(), "status" => status)
            .increment(1);
        metrics::histogram!("http_request_duration_seconds", "route" => self.route, "method" => self.method)
            .record(elapsed);
    }
}

/// Counts an answer given outside the application (a request whose head hyper could not
/// read, or a connection beyond `MAX_CONNECTIONS`): route and method `other`.
pub fn count_unread(status: StatusCode) {
    let status = metrics::SharedString::from(status.as_u16().to_string());
    metrics::counter!("http_requests_total", "route" => OTHER, "method" => OTHER, "status" => status)
        .increment(1);
}
