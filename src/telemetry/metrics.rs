//! Prometheus metrics: process metrics, build info, and HTTP requests by route and status.

use std::time::Instant;

use prometheus::{
    Encoder, GaugeVec, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

/// The daemon's metrics registry and the HTTP instruments.
pub struct Metrics {
    registry: Registry,
    requests: IntCounterVec,
    duration: HistogramVec,
    in_flight: IntGauge,
    serving: ServingMetrics,
    kb: KbMetrics,
    backup: BackupMetrics,
}

/// Backup metrics, for alerting on backups that stopped succeeding.
#[derive(Clone)]
pub struct BackupMetrics {
    /// When the last backup succeeded (Unix seconds; 0 before the first).
    pub last_success: IntGauge,
    /// Size of the last successful archive.
    pub last_size: IntGauge,
    /// Backups that failed.
    pub failures: IntCounter,
}

impl BackupMetrics {
    fn new(registry: &Registry) -> Result<BackupMetrics, prometheus::Error> {
        let last_success = IntGauge::new(
            "sparkbrain_backup_last_success_timestamp_seconds",
            "When the last backup succeeded, in seconds since the Unix epoch (0: none since start).",
        )?;
        registry.register(Box::new(last_success.clone()))?;
        let last_size = IntGauge::new(
            "sparkbrain_backup_last_size_bytes",
            "Size of the last successful backup archive.",
        )?;
        registry.register(Box::new(last_size.clone()))?;
        let failures = IntCounter::new("sparkbrain_backup_failures_total", "Backups that failed.")?;
        registry.register(Box::new(failures.clone()))?;
        Ok(BackupMetrics {
            last_success,
            last_size,
            failures,
        })
    }
}

/// Knowledge-base ingestion metrics.
#[derive(Clone)]
pub struct KbMetrics {
    /// Documents waiting, in progress or failed, by status (the first three are the queue).
    pub documents: IntGaugeVec,
    /// Chunks made searchable (its rate is the ingestion speed in chunks/s).
    pub chunks_indexed: IntCounter,
    /// Documents made searchable.
    pub documents_indexed: IntCounter,
    /// Documents that failed, by reason.
    pub documents_failed: IntCounterVec,
    /// Time per document in each pipeline stage.
    pub stage_seconds: HistogramVec,
    /// Recall@10 against exact search each collection's vector index last measured.
    pub vector_recall: GaugeVec,
    /// Search candidate list size each collection's vector index uses.
    pub vector_expansion: IntGaugeVec,
}

impl KbMetrics {
    fn new(registry: &Registry) -> Result<KbMetrics, prometheus::Error> {
        let documents = IntGaugeVec::new(
            Opts::new(
                "sparkbrain_kb_documents",
                "Knowledge-base documents queued, extracting, embedding (the ingestion queue) or failed.",
            ),
            &["status"],
        )?;
        registry.register(Box::new(documents.clone()))?;
        let chunks_indexed = IntCounter::new(
            "sparkbrain_kb_chunks_indexed_total",
            "Chunks made searchable; its rate is the ingestion speed.",
        )?;
        registry.register(Box::new(chunks_indexed.clone()))?;
        let documents_indexed = IntCounter::new(
            "sparkbrain_kb_documents_indexed_total",
            "Documents made searchable.",
        )?;
        registry.register(Box::new(documents_indexed.clone()))?;
        let documents_failed = IntCounterVec::new(
            Opts::new(
                "sparkbrain_kb_documents_failed_total",
                "Documents that failed ingestion, by reason.",
            ),
            &["reason"],
        )?;
        registry.register(Box::new(documents_failed.clone()))?;
        let stage_seconds = HistogramVec::new(
            HistogramOpts::new(
                "sparkbrain_kb_stage_duration_seconds",
                "Time one document spent in an ingestion stage (extract, chunk, embed, store).",
            )
            .buckets(BUCKETS.to_vec()),
            &["stage"],
        )?;
        registry.register(Box::new(stage_seconds.clone()))?;
        let vector_recall = GaugeVec::new(
            Opts::new(
                "sparkbrain_kb_vector_recall",
                "Recall@10 against exact search a collection's vector index measured at its last calibration.",
            ),
            &["collection"],
        )?;
        registry.register(Box::new(vector_recall.clone()))?;
        let vector_expansion = IntGaugeVec::new(
            Opts::new(
                "sparkbrain_kb_vector_expansion_search",
                "Search candidate list size a collection's vector index uses.",
            ),
            &["collection"],
        )?;
        registry.register(Box::new(vector_expansion.clone()))?;
        Ok(KbMetrics {
            documents,
            chunks_indexed,
            documents_indexed,
            documents_failed,
            stage_seconds,
            vector_recall,
            vector_expansion,
        })
    }
}

/// Model-serving metrics under Triton's names and labels (`model`, `version`), so existing
/// Triton dashboards work; durations are cumulative microseconds, as Triton counts them.
#[derive(Clone)]
pub struct ServingMetrics {
    /// Requests that succeeded.
    pub success: IntCounterVec,
    /// Requests that failed.
    pub failure: IntCounterVec,
    /// Inferences (batch rows) performed.
    pub count: IntCounterVec,
    /// Model executions.
    pub exec_count: IntCounterVec,
    /// Cumulative request time.
    pub request_us: IntCounterVec,
    /// Cumulative time waiting for a model instance.
    pub queue_us: IntCounterVec,
    /// Cumulative time in the model.
    pub compute_us: IntCounterVec,
    /// Requests waiting or running now.
    pub pending: IntGaugeVec,
    /// 1 per loaded version, labelled with the execution provider that actually serves it.
    pub instance: IntGaugeVec,
    /// Requests answered from the response cache.
    pub cache_hits: IntCounterVec,
    /// Requests looked up in the response cache and not found.
    pub cache_misses: IntCounterVec,
}

impl ServingMetrics {
    fn new(registry: &Registry) -> Result<ServingMetrics, prometheus::Error> {
        let labels = ["model", "version"];
        let counter = |name: &str, help: &str| -> Result<IntCounterVec, prometheus::Error> {
            let c = IntCounterVec::new(Opts::new(name, help), &labels)?;
            registry.register(Box::new(c.clone()))?;
            Ok(c)
        };
        let pending = IntGaugeVec::new(
            Opts::new(
                "nv_inference_pending_request_count",
                "Inference requests waiting or running.",
            ),
            &labels,
        )?;
        registry.register(Box::new(pending.clone()))?;
        let instance = IntGaugeVec::new(
            Opts::new(
                "sparkbrain_model_instance_info",
                "Loaded model versions; the provider label is the execution provider that actually serves it.",
            ),
            &["model", "version", "provider"],
        )?;
        registry.register(Box::new(instance.clone()))?;
        Ok(ServingMetrics {
            success: counter(
                "nv_inference_request_success",
                "Successful inference requests.",
            )?,
            failure: counter("nv_inference_request_failure", "Failed inference requests.")?,
            count: counter(
                "nv_inference_count",
                "Inferences performed (a batch of n counts n).",
            )?,
            exec_count: counter("nv_inference_exec_count", "Model executions performed.")?,
            request_us: counter(
                "nv_inference_request_duration_us",
                "Cumulative inference request duration in microseconds.",
            )?,
            queue_us: counter(
                "nv_inference_queue_duration_us",
                "Cumulative time requests waited for a model instance, in microseconds.",
            )?,
            compute_us: counter(
                "nv_inference_compute_infer_duration_us",
                "Cumulative time spent running the model, in microseconds.",
            )?,
            pending,
            instance,
            cache_hits: counter(
                "nv_cache_num_hits_per_model",
                "Requests answered from the response cache.",
            )?,
            cache_misses: counter(
                "nv_cache_num_misses_per_model",
                "Requests looked up in the response cache and not found.",
            )?,
        })
    }
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
        let serving = ServingMetrics::new(&registry)?;
        let kb = KbMetrics::new(&registry)?;
        let backup = BackupMetrics::new(&registry)?;
        Ok(Metrics {
            backup,
            registry,
            requests,
            duration,
            in_flight,
            serving,
            kb,
        })
    }

    /// The model-serving instruments.
    pub fn serving(&self) -> ServingMetrics {
        self.serving.clone()
    }

    /// The knowledge-base instruments.
    pub fn kb(&self) -> KbMetrics {
        self.kb.clone()
    }

    /// The backup instruments.
    pub fn backup(&self) -> BackupMetrics {
        self.backup.clone()
    }

    /// Marks a request as started; the guard records it when finished.
    pub fn start(&self) -> InFlight<'_> {
        self.in_flight.inc();
        InFlight {
            metrics: self,
            started: Instant::now(),
        }
    }

    /// Renders all metrics in the Prometheus text format, followed by `extra`, text already
    /// rendered elsewhere (the GPU supervisor's).
    pub fn render(&self, extra: &str) -> Result<String, prometheus::Error> {
        let mut out = Vec::new();
        TextEncoder::new().encode(&self.registry.gather(), &mut out)?;
        out.extend_from_slice(extra.as_bytes());
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
