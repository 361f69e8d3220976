//! `/metrics`: behind authentication by default, public when configured, and parseable by the
//! reference Prometheus client.

use std::process::Command;
use std::time::Duration;

use serde::Deserialize;

use crate::common::{ADMIN_PASSWORD, Daemon, Setup};
use crate::support::{run_limited_input, stderr};

#[derive(Debug, Deserialize)]
struct Family {
    name: String,
    #[serde(rename = "type")]
    kind: String,
    samples: Vec<Sample>,
}

#[derive(Debug, Deserialize)]
struct Sample {
    name: String,
    labels: std::collections::BTreeMap<String, String>,
    value: serde_json::Value,
}

/// Parses exposition text with Python's `prometheus_client` (the reference parser), which
/// must be installed for `python3`.
fn parse_with_prometheus_client(text: &str) -> Vec<Family> {
    const SCRIPT: &str = r#"
import json, math, sys
from prometheus_client.parser import text_string_to_metric_families
out = []
for f in text_string_to_metric_families(sys.stdin.read()):
    out.append({"name": f.name, "type": f.type, "samples": [
        {"name": s.name, "labels": s.labels,
         "value": s.value if math.isfinite(s.value) else str(s.value)}
        for s in f.samples]})
print(json.dumps(out))
"#;
    let mut cmd = Command::new("python3");
    cmd.args(["-c", SCRIPT]);
    let out = run_limited_input(&mut cmd, Some(text.as_bytes()), Duration::from_secs(60));
    assert!(
        out.status.success(),
        "prometheus_client could not parse /metrics: {}\n{text}",
        stderr(&out)
    );
    serde_json::from_slice(&out.stdout).expect("parser output")
}

fn family<'a>(families: &'a [Family], name: &str) -> &'a Family {
    families.iter().find(|f| f.name == name).unwrap_or_else(|| {
        let names: Vec<&str> = families.iter().map(|f| f.name.as_str()).collect();
        panic!("no metric family {name}; have {names:?}")
    })
}

fn get_metrics(daemon: &Daemon, token: Option<&str>) -> reqwest::blocking::Response {
    let mut req = daemon.client().get(daemon.url("/metrics"));
    if let Some(token) = token {
        req = req.bearer_auth(token);
    }
    req.send().expect("metrics request")
}

fn assert_expected_families(text: &str) {
    let families = parse_with_prometheus_client(text);

    // prometheus_client names a counter family without its `_total` suffix; the sample keeps it.
    let requests = family(&families, "sparkbrain_http_requests");
    assert_eq!(requests.kind, "counter");
    let healthz = requests
        .samples
        .iter()
        .find(|s| {
            s.name == "sparkbrain_http_requests_total"
                && s.labels.get("route").map(String::as_str) == Some("/healthz")
                && s.labels.get("status").map(String::as_str) == Some("200")
        })
        .unwrap_or_else(|| panic!("no /healthz 200 sample: {:?}", requests.samples));
    assert_eq!(
        healthz.labels.get("method").map(String::as_str),
        Some("GET")
    );
    assert!(
        healthz.value.as_f64().is_some_and(|v| v >= 1.0),
        "{healthz:?}"
    );

    let duration = family(&families, "sparkbrain_http_request_duration_seconds");
    assert_eq!(duration.kind, "histogram");
    assert!(
        duration.samples.iter().any(|s| s.name
            == "sparkbrain_http_request_duration_seconds_bucket"
            && s.labels.get("le").map(String::as_str) == Some("+Inf")),
        "{:?}",
        duration.samples
    );

    let rss = family(&families, "process_resident_memory_bytes");
    assert_eq!(rss.kind, "gauge");
    assert!(
        rss.samples[0].value.as_f64().is_some_and(|v| v > 0.0),
        "{rss:?}"
    );
}

#[test]
fn metrics_need_a_token_by_default() {
    let setup = Setup::new();
    setup.write_config(None);
    setup.add_user("admin", "admin", ADMIN_PASSWORD);
    let daemon = setup.start();

    let anonymous = get_metrics(&daemon, None);
    assert_eq!(anonymous.status(), 401);
    let bogus = get_metrics(&daemon, Some("not-a-token"));
    assert_eq!(bogus.status(), 401);

    let health = daemon.get("/healthz");
    assert_eq!(health.status(), 200);

    let token = daemon.token("admin", ADMIN_PASSWORD);
    let resp = get_metrics(&daemon, Some(&token));
    assert_eq!(resp.status(), 200);
    let content_type = resp.headers()["content-type"].to_str().unwrap().to_string();
    assert!(
        content_type.starts_with("text/plain; version=0.0.4"),
        "{content_type}"
    );
    assert_expected_families(&resp.text().expect("body"));
}

#[test]
fn public_metrics_need_no_token() {
    let setup = Setup::new().with("[metrics]\npublic = true");
    setup.write_config(None);
    let daemon = setup.start();
    let health = daemon.get("/healthz");
    assert_eq!(health.status(), 200);

    let resp = get_metrics(&daemon, None);
    assert_eq!(resp.status(), 200);
    assert_expected_families(&resp.text().expect("body"));
}
