//! Prometheus metrics: process metrics, build info, and HTTP requests by route and status.

use std::time::Instant;

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, Opts, Registry, TextEncoder,
};

/// The daemon's metrics registry and the HTTP instruments.
pub struct Metrics {
    registry: Registry,
    requests: IntCounterVec,
    duration: HistogramVec,
    in_flight: IntGauge,
}

/// Latency buckets in seconds, from 1 ms to 30 s.
const BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

impl Metrics {
    /// Creates the registry with process, build and HTTP metrics.
    pub fn new() -> Result<Metrics, prometheus::Error> {
        let registry = Registry::new();
        registry.register(Box::new(
            prometheus::process_collector::ProcessCollector::for_self(),
        ))?;
        let build = IntGauge::with_opts(
            Opts::new(
                "sparkbrain_build_info",
                "Build information; the value is always 1.",
            )
            .const_label("version", env!("CARGO_PKG_VERSION")),
        )?;
        build.set(1);
        registry.register(Box::new(build))?;
        let requests = IntCounterVec::new(
            Opts::new(
                "sparkbrain_http_requests_total",
                "HTTP requests answered, by route template, method and status.",
            ),
            &["route", "method", "status"],
        )?;
        registry.register(Box::new(requests.clone()))?;
        let duration = HistogramVec::new(
            HistogramOpts::new(
                "sparkbrain_http_request_duration_seconds",
                "Time from receiving a request to sending its response headers, by route template, method and status.",
            )
            .buckets(BUCKETS.to_vec()),
            &["route", "method", "status"],
        )?;
        registry.register(Box::new(duration.clone()))?;
        let in_flight = IntGauge::new(
            "sparkbrain_http_requests_in_flight",
            "HTTP requests being handled now.",
        )?;
        registry.register(Box::new(in_flight.clone()))?;
        Ok(Metrics {
            registry,
            requests,
            duration,
            in_flight,
        })
    }

    /// Marks a request as started; the guard records it when finished.
    pub fn start(&self) -> InFlight<'_> {
        self.in_flight.inc();
        InFlight {
            metrics: self,
            started: Instant::now(),
        }
    }

    /// Renders all metrics in the Prometheus text format.
    pub fn render(&self) -> Result<String, prometheus::Error> {
        let mut out = Vec::new();
        TextEncoder::new().encode(&self.registry.gather(), &mut out)?;
        String::from_utf8(out).map_err(|e| prometheus::Error::Msg(e.to_string()))
    }
}

/// A request being handled.
pub struct InFlight<'a> {
    metrics: &'a Metrics,
    started: Instant,
}

impl InFlight<'_> {
    /// Records the finished request under its route template, method and status.
    pub fn finish(self, route: &str, method: &str, status: u16) {
        let status = status.to_string();
        let labels = [route, method, status.as_str()];
        self.metrics.requests.with_label_values(&labels).inc();
        self.metrics
            .duration
            .with_label_values(&labels)
            .observe(self.started.elapsed().as_secs_f64());
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.metrics.in_flight.dec();
    }
}
