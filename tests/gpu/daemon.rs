//! The daemon with GPUs: the real `sparkbrain` binary loads the fake NVML library (the stand-in
//! for the GPU driver this machine lacks, see `fake_nvml.rs`) through `[gpu] nvml_library`,
//! exactly as it loads `libnvidia-ml.so.1` on a DGX box, and is checked over HTTP, `/metrics`
//! and the command line.

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::common::{ADMIN_PASSWORD, Daemon, Setup, vendor};
use crate::fake_nvml::{Scenario, eventually, h100_host, uuid};

/// A started daemon with its setup and an admin token.
struct Running {
    setup: Setup,
    daemon: Daemon,
    token: String,
}

/// Starts a daemon on `library` watching host services on `bus` (`off`: none), with `more`
/// TOML after the `[gpu]` section.
fn start(library: &Path, bus: &str, more: &str) -> Running {
    let setup = Setup::new().with(&format!(
        "[gpu]\nnvml_library = {:?}\nsample_interval_ms = 200\nsystem_bus = {bus:?}\n{more}",
        library.display().to_string()
    ));
    setup.write_config(None);
    setup.add_user("admin", "admin", ADMIN_PASSWORD);
    let daemon = setup.start();
    daemon.wait_ready();
    let token = daemon.token("admin", ADMIN_PASSWORD);
    Running {
        setup,
        daemon,
        token,
    }
}

impl Running {
    fn get(&self, path: &str) -> (u16, Value) {
        let resp = self
            .daemon
            .client()
            .get(self.daemon.url(path))
            .bearer_auth(&self.token)
            .send()
            .expect("request");
        let status = resp.status().as_u16();
        (status, resp.json().unwrap_or(Value::Null))
    }

    fn post(&self, path: &str) -> (u16, Value) {
        let resp = self
            .daemon
            .client()
            .post(self.daemon.url(path))
            .bearer_auth(&self.token)
            .send()
            .expect("request");
        let status = resp.status().as_u16();
        (status, resp.json().unwrap_or(Value::Null))
    }

    fn gpus(&self) -> Value {
        let (status, body) = self.get("/api/v1/gpus");
        assert_eq!(status, 200, "{body}");
        body
    }

    fn metrics(&self) -> String {
        self.daemon
            .client()
            .get(self.daemon.url("/metrics"))
            .bearer_auth(&self.token)
            .send()
            .expect("scrape")
            .text()
            .expect("metrics text")
    }

    fn cli(&self, args: &[&str]) -> std::process::Output {
        self.setup
            .command()
            .args(args)
            .env("SPARKBRAIN_API_KEY", self.api_key())
            .output()
            .expect("run sparkbrain")
    }

    fn api_key(&self) -> String {
        let resp = self
            .daemon
            .client()
            .post(self.daemon.url("/api/v1/keys"))
            .bearer_auth(&self.token)
            .json(&json!({ "name": "gpu-cli" }))
            .send()
            .expect("create key");
        let body: Value = resp.json().expect("key json");
        body["key"].as_str().expect("key").to_string()
    }

    fn infer(&self, model: &str) -> (u16, Value) {
        let body = json!({ "inputs": [
            { "name": "input_ids", "shape": [1, 4], "datatype": "INT64", "data": [101, 7592, 2088, 102] },
            { "name": "attention_mask", "shape": [1, 4], "datatype": "INT64", "data": [1, 1, 1, 1] },
            { "name": "token_type_ids", "shape": [1, 4], "datatype": "INT64", "data": [0, 0, 0, 0] }
        ]});
        let resp = self
            .daemon
            .client()
            .post(self.daemon.url(&format!("/v2/models/{model}/infer")))
            .bearer_auth(&self.token)
            .json(&body)
            .send()
            .expect("infer");
        let status = resp.status().as_u16();
        (status, resp.json().unwrap_or(Value::Null))
    }
}

/// The metric line of `name` for GPU `gpu` (and an extra label match), its value.
fn metric(text: &str, name: &str, gpu: u32, extra: &str) -> Option<f64> {
    let gpu_label = format!("gpu=\"{gpu}\"");
    text.lines()
        .filter(|l| l.starts_with(&format!("{name}{{")))
        .find(|l| l.contains(&gpu_label) && l.contains(extra))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// A repository with the vendored MiniLM as `minilm`, its instances in `group`.
fn repository(dir: &Path, group: &str) -> String {
    let repo = dir.join("repo");
    let version = repo.join("minilm/1");
    std::fs::create_dir_all(&version).unwrap();
    std::os::unix::fs::symlink(
        vendor().join("models/all-MiniLM-L6-v2/model.onnx"),
        version.join("model.onnx"),
    )
    .unwrap();
    std::fs::write(
        repo.join("minilm/config.pbtxt"),
        format!(
            "name: \"minilm\"\nplatform: \"onnxruntime_onnx\"\nmax_batch_size: 8\n\
             instance_group [ {group} ]\n"
        ),
    )
    .unwrap();
    format!("[serving]\nrepository = {:?}\n", repo.display().to_string())
}

#[test]
fn inventory_samples_metrics_history_and_cli_follow_the_scenario() {
    let scenario = Scenario::new(&h100_host(2));
    let b = start(scenario.library(), "off", "");
    let o = b.gpus();
    assert_eq!(o["nvml"]["state"], "ok", "{o}");
    assert_eq!(o["driver"]["driver_version"], "550.54.15");
    assert_eq!(o["driver"]["cuda_driver_version"], "12.4");
    let gpus = o["gpus"].as_array().unwrap();
    assert_eq!(gpus.len(), 2);
    for (i, g) in gpus.iter().enumerate() {
        assert_eq!(g["index"], i as u64);
        assert_eq!(g["uuid"], uuid(i as u32));
        assert_eq!(g["name"], "NVIDIA H100 80GB HBM3");
        assert_eq!(g["memory_total_bytes"], 85_520_809_984u64);
        assert_eq!(g["compute_capability"], "9.0");
        assert_eq!(g["health"]["health"], "healthy", "{g}");
    }
    // The first sample arrives within a few intervals.
    let o = eventually(Duration::from_secs(5), "a sample", || {
        let o = b.gpus();
        o["gpus"][1]["sample"].is_object().then_some(o)
    });
    let s = &o["gpus"][1]["sample"];
    assert_eq!(s["gpu_util_pct"], 51);
    assert_eq!(s["gpu_temp_c"], 41);
    assert_eq!(s["memory_temp_c"], 51);
    assert_eq!(s["power_watts"], 301.0);

    // DCGM exporter's names, units and labels.
    let text = b.metrics();
    let host = nix::unistd::gethostname()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    let line = text
        .lines()
        .find(|l| l.starts_with("DCGM_FI_DEV_GPU_UTIL{") && l.contains("gpu=\"1\""))
        .unwrap_or_else(|| panic!("no GPU_UTIL line for GPU 1:\n{text}"));
    for label in [
        format!("UUID=\"{}\"", uuid(1)),
        "device=\"nvidia1\"".to_string(),
        "modelName=\"NVIDIA H100 80GB HBM3\"".to_string(),
        format!("Hostname=\"{host}\""),
        "pci_bus_id=\"00000000:29:00.0\"".to_string(),
    ] {
        assert!(line.contains(&label), "{label} missing in {line}");
    }
    // Units as DCGM exporter's: MiB, W, mJ, MHz.
    for (name, gpu, extra, want) in [
        ("DCGM_FI_DEV_GPU_UTIL", 1, "", 51.0),
        ("DCGM_FI_DEV_FB_USED", 1, "", 2048.0),
        ("DCGM_FI_DEV_POWER_USAGE", 0, "", 300.0),
        ("DCGM_FI_DEV_MEMORY_TEMP", 0, "", 50.0),
        (
            "DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION",
            0,
            "",
            123_456_789_000.0,
        ),
        ("DCGM_FI_DEV_SM_CLOCK", 0, "", 1980.0),
        ("DCGM_FI_DEV_PCIE_REPLAY_COUNTER", 0, "", 3.0),
        ("DCGM_FI_DEV_ECC_SBE_AGG_TOTAL", 1, "", 11.0),
        ("DCGM_FI_DEV_XID_ERRORS", 0, "", 0.0),
        ("sparkbrain_gpu_health", 0, "health=\"healthy\"", 1.0),
        ("sparkbrain_gpu_health", 0, "health=\"failed\"", 0.0),
    ] {
        assert_eq!(
            metric(&text, name, gpu, extra),
            Some(want),
            "{name} {extra}"
        );
    }
    assert!(text.contains("# TYPE DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION counter"));

    // The history fills at the sample interval.
    let points = eventually(Duration::from_secs(5), "3 history points", || {
        let (status, h) = b.get(&format!("/api/v1/gpus/{}/history", uuid(0)));
        assert_eq!(status, 200, "{h}");
        let points = h["points"].as_array().cloned().unwrap_or_default();
        (points.len() >= 3).then_some(points)
    });
    assert!(
        points.iter().all(|p| p["gpu_util_pct"] == 50.0),
        "{points:?}"
    );
    assert!(
        points
            .windows(2)
            .all(|w| w[0]["at_ms"].as_i64() < w[1]["at_ms"].as_i64())
    );
    let (status, body) = b.get("/api/v1/gpus/GPU-nope/history");
    assert_eq!(status, 404, "{body}");
    let (status, body) = b.get(&format!(
        "/api/v1/gpus/{}/history?resolution=hours",
        uuid(0)
    ));
    assert_eq!(status, 422, "{body}");
    assert!(body.to_string().contains("hours"), "{body}");

    // Readiness, status and the command line say the same.
    let ready: Value = b.daemon.get("/readyz").json().unwrap();
    let check = ready["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "gpus")
        .cloned()
        .unwrap();
    assert_eq!(check["ok"], true);
    assert_eq!(check["detail"], "2 GPUs, 2 usable");
    let out = b.cli(&["gpu"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(table.contains("Driver 550.54.15"), "{table}");
    assert_eq!(table.matches("NVIDIA H100 80GB HBM3").count(), 2, "{table}");
    assert_eq!(table.matches("healthy").count(), 2, "{table}");
    let out = b.cli(&["gpu", "--json"]);
    let json: Value = serde_json::from_slice(&out.stdout).expect("gpu --json");
    assert_eq!(json["gpus"][0]["uuid"], uuid(0));

    // `gpu watch` refreshes until interrupted: two JSON documents arrive, one per interval.
    let mut watch = b
        .setup
        .command()
        .args(["gpu", "watch", "--interval", "0.3", "--json"])
        .env("SPARKBRAIN_API_KEY", b.api_key())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("gpu watch");
    let mut lines = std::io::BufRead::lines(std::io::BufReader::new(watch.stdout.take().unwrap()));
    let started = Instant::now();
    for _ in 0..2 {
        let line = lines.next().expect("a refresh").expect("read");
        let doc: Value = serde_json::from_str(&line).expect("json per refresh");
        assert_eq!(doc["gpus"].as_array().map(Vec::len), Some(2));
    }
    assert!(
        started.elapsed() >= Duration::from_millis(300),
        "refreshes are spaced"
    );
    watch.kill().unwrap();
    watch.wait().unwrap();
    let out = b.cli(&["gpu", "watch", "--interval", "0"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--interval 0 is out of range"),
        "{out:?}"
    );
}

#[test]
fn xid_79_fails_the_gpu_moves_its_instances_and_audits_it() {
    let scenario = Scenario::new(&h100_host(2));
    let dir = tempfile::tempdir().unwrap();
    let b = start(
        scenario.library(),
        "off",
        &repository(dir.path(), "{ kind: KIND_GPU count: 1 }"),
    );
    let o = b.gpus();
    for g in 0..2 {
        assert_eq!(
            o["gpus"][g]["instances"],
            json!([{ "model": "minilm", "version": 1, "instances": 1 }]),
            "{o}"
        );
    }
    assert_eq!(b.infer("minilm").0, 200);

    // Clients keep asking while the GPU fails; none may hang or get anything but 200 or 503.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let answers = std::thread::scope(|scope| {
        let asker = scope.spawn(|| {
            let mut seen = Vec::new();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let started = Instant::now();
                let (status, body) = b.infer("minilm");
                assert!(
                    started.elapsed() < Duration::from_secs(10),
                    "a request hung"
                );
                seen.push((status, body));
            }
            seen
        });
        let mut with_xid = h100_host(2);
        with_xid["xids"] = json!([{ "gpu": 1, "xid": 79, "at_ms": 0 }]);
        scenario.write(&with_xid);
        let failed = eventually(Duration::from_secs(10), "GPU 1 failed", || {
            let o = b.gpus();
            (o["gpus"][1]["health"]["health"] == "failed").then_some(o)
        });
        assert!(
            failed["gpus"][1]["health"]["reasons"][0]
                .as_str()
                .unwrap()
                .contains("XID 79"),
            "{failed}"
        );
        assert_eq!(failed["gpus"][0]["health"]["health"], "healthy");
        eventually(Duration::from_secs(30), "instances moved off GPU 1", || {
            let o = b.gpus();
            (o["gpus"][1]["instances"] == json!([])).then_some(())
        });
        std::thread::sleep(Duration::from_millis(300));
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        asker.join().unwrap()
    });
    for (status, body) in &answers {
        match status {
            200 => {}
            503 => assert!(body.to_string().contains("GPU 1"), "{body}"),
            other => panic!("answer {other} during the move: {body}"),
        }
    }
    assert_eq!(
        answers.last().map(|a| a.0),
        Some(200),
        "serving again after the move"
    );
    let o = b.gpus();
    assert_eq!(
        o["gpus"][0]["instances"],
        json!([{ "model": "minilm", "version": 1, "instances": 1 }]),
        "{o}"
    );
    assert_eq!(o["gpus"][1]["xids"]["counts"]["79"], 1);

    let text = b.metrics();
    assert_eq!(
        metric(&text, "sparkbrain_gpu_health", 1, "health=\"failed\""),
        Some(1.0)
    );
    assert_eq!(metric(&text, "DCGM_FI_DEV_XID_ERRORS", 1, ""), Some(79.0));
    assert_eq!(
        metric(&text, "sparkbrain_gpu_xid_errors_total", 1, "xid=\"79\""),
        Some(1.0)
    );
    assert!(
        b.daemon
            .logs()
            .contains("XID 79: GPU has fallen off the bus"),
        "the XID is logged with its meaning"
    );
    let (_, audit) = b.get("/api/v1/audit?action=gpu.health");
    let rows = audit
        .as_array()
        .cloned()
        .or_else(|| audit["entries"].as_array().cloned())
        .unwrap_or_default();
    assert!(
        rows.iter().any(|r| r["target"] == uuid(1)
            && r["detail"]
                .as_str()
                .is_some_and(|d| d.contains("healthy -> failed"))),
        "{audit}"
    );
}

#[test]
fn a_gpu_only_model_without_a_healthy_gpu_answers_503_with_the_reason() {
    let scenario = Scenario::new(&h100_host(1));
    let dir = tempfile::tempdir().unwrap();
    let b = start(
        scenario.library(),
        "off",
        &repository(dir.path(), "{ kind: KIND_GPU count: 1 }"),
    );
    assert_eq!(b.infer("minilm").0, 200);
    let mut with_xid = h100_host(1);
    with_xid["xids"] = json!([{ "gpu": 0, "xid": 48, "at_ms": 0 }]);
    scenario.write(&with_xid);
    let (status, body) = eventually(Duration::from_secs(15), "503 from the model", || {
        let (status, body) = b.infer("minilm");
        (status == 503 && body.to_string().contains("GPU 0 failed")).then_some((status, body))
    });
    assert!(
        body.to_string().contains("double-bit ECC"),
        "{status} {body}"
    );
    let ready = b.daemon.get("/readyz");
    assert_eq!(ready.status(), 503, "no usable GPU left: not ready");
}

#[test]
fn no_driver_or_no_library_is_a_normal_cpu_only_state() {
    let scenario = Scenario::without_file();
    let dir = tempfile::tempdir().unwrap();
    let b = start(
        scenario.library(),
        "off",
        &repository(dir.path(), "{ kind: KIND_AUTO count: 1 }"),
    );
    let o = b.gpus();
    assert_eq!(o["nvml"]["state"], "unavailable", "{o}");
    let why = o["nvml"]["detail"].as_str().unwrap().to_string();
    assert!(why.to_lowercase().contains("driver"), "{why}");
    assert_eq!(o["gpus"], json!([]));
    assert!(
        o["cpu_instances"]
            .as_array()
            .unwrap()
            .iter()
            .any(|i| i["model"] == "minilm"),
        "KIND_AUTO falls back to the CPU: {o}"
    );
    assert_eq!(b.infer("minilm").0, 200);
    assert!(!b.metrics().contains("DCGM_FI_DEV_GPU_UTIL{"));
    let ready: Value = b.daemon.get("/readyz").json().unwrap();
    assert_eq!(ready["status"], "ready", "{ready}");
    let out = b.cli(&["gpu"]);
    assert!(
        String::from_utf8_lossy(&out.stdout).starts_with("CPU-only:"),
        "{out:?}"
    );
    let out = b.cli(&["status"]);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("GPUs:         CPU-only"),
        "{out:?}"
    );
    b.daemon.terminate();

    let missing = dir.path().join("no/libnvidia-ml.so.1");
    let c = start(&missing, "off", "");
    let o = c.gpus();
    assert_eq!(o["nvml"]["state"], "unavailable");
    assert!(
        o["nvml"]["detail"]
            .as_str()
            .unwrap()
            .contains("no/libnvidia-ml.so.1"),
        "{o}"
    );
    let out = c.setup.command().arg("doctor").output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.lines()
            .any(|l| l.starts_with("[warn] gpus") && l.contains("CPU-only")),
        "{text}"
    );
}

#[test]
fn intermittent_nvml_errors_degrade_without_a_crash() {
    let mut host = h100_host(2);
    host["errors"] = json!([
        { "gpu": 0, "function": "nvmlDeviceGetPowerUsage", "error": "UNKNOWN", "from_ms": 0, "every": 2 }
    ]);
    let scenario = Scenario::new(&host);
    let b = start(scenario.library(), "off", "");
    let o = eventually(Duration::from_secs(10), "GPU 0 degraded", || {
        let o = b.gpus();
        (o["gpus"][0]["health"]["health"] == "degraded").then_some(o)
    });
    let reasons = o["gpus"][0]["health"]["reasons"].to_string();
    assert!(
        reasons.contains("NVML errors") && reasons.contains("power"),
        "{reasons}"
    );
    assert_eq!(o["gpus"][1]["health"]["health"], "healthy");
    // Still sampling and serving: the other fields keep their values.
    std::thread::sleep(Duration::from_millis(600));
    let o = b.gpus();
    assert_eq!(o["gpus"][0]["sample"]["gpu_util_pct"], 50);
    assert_eq!(b.daemon.get("/healthz").status(), 200);
}

#[test]
fn a_failed_fabric_manager_degrades_the_gpus_and_readiness_until_it_recovers() {
    // The host's systemd is the stand-in on a private bus (see systemd_standin.rs).
    let rt = tokio::runtime::Runtime::new().unwrap();
    let standin = rt.block_on(crate::systemd_standin::StandIn::start(&[
        ("nvidia-persistenced.service", "active", "loaded"),
        ("nvidia-fabricmanager.service", "active", "loaded"),
    ]));
    let scenario = Scenario::new(&h100_host(2));
    let dir = tempfile::tempdir().unwrap();
    let serving = repository(dir.path(), "{ kind: KIND_GPU count: 1 }");
    let b = start(
        scenario.library(),
        &standin.address(),
        &format!("{serving}control_mode = \"explicit\"\n"),
    );
    let o = eventually(Duration::from_secs(10), "host services read", || {
        let o = b.gpus();
        (o["host_services"]["units"].as_array().map_or(0, Vec::len) == 3).then_some(o)
    });
    assert_eq!(o["host_services"]["bus"]["status"], "connected", "{o}");
    let units = o["host_services"]["units"].as_array().unwrap();
    let state = |name: &str| {
        units
            .iter()
            .find(|u| u["unit"] == name)
            .map(|u| u["state"].clone())
    };
    assert_eq!(state("nvidia-fabricmanager.service"), Some(json!("active")));
    assert_eq!(
        state("nvidia-dcgm.service"),
        Some(json!("not-installed")),
        "{o}"
    );

    rt.block_on(standin.set_state("nvidia-fabricmanager.service", "failed", "failed"));
    let o = eventually(Duration::from_secs(10), "GPUs degraded", || {
        let o = b.gpus();
        (o["gpus"][0]["health"]["health"] == "degraded"
            && o["gpus"][1]["health"]["health"] == "degraded")
            .then_some(o)
    });
    assert!(
        o["gpus"][0]["health"]["reasons"]
            .to_string()
            .contains("nvidia-fabricmanager"),
        "{o}"
    );
    let ready = b.daemon.get("/readyz");
    assert_eq!(ready.status(), 503);
    let out = b.setup.command().arg("doctor").output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        !out.status.success(),
        "doctor fails while the fabric manager does: {text}"
    );
    assert!(
        text.lines()
            .any(|l| l.starts_with("[FAIL] host services") && l.contains("nvidia-fabricmanager")),
        "{text}"
    );
    let body: Value = ready.json().unwrap();
    assert!(
        body["reasons"].to_string().contains("nvidia-fabricmanager"),
        "{body}"
    );
    let text = b.metrics();
    assert!(
        text.lines()
            .any(|l| l.starts_with("sparkbrain_gpu_host_service{")
                && l.contains("unit=\"nvidia-fabricmanager.service\"")
                && l.contains("state=\"failed\"")
                && l.ends_with(" 1")),
        "{text}"
    );

    // A degraded GPU takes no new instances.
    let (status, body) = b.post("/v2/repository/models/minilm/load");
    assert_eq!(status, 503, "{body}");
    assert!(body.to_string().contains("no healthy GPU"), "{body}");

    rt.block_on(standin.set_state("nvidia-fabricmanager.service", "active", "running"));
    eventually(Duration::from_secs(10), "healthy again", || {
        let o = b.gpus();
        (o["gpus"][0]["health"]["health"] == "healthy"
            && o["gpus"][1]["health"]["health"] == "healthy")
            .then_some(())
    });
    b.daemon.wait_ready();
    let (status, body) = b.post("/v2/repository/models/minilm/load");
    assert_eq!(status, 200, "{body}");
    let o = b.gpus();
    for g in 0..2 {
        assert_eq!(o["gpus"][g]["instances"][0]["model"], "minilm", "{o}");
    }
}

#[test]
fn no_system_bus_is_reported_and_harmless() {
    let scenario = Scenario::new(&h100_host(1));
    let dir = tempfile::tempdir().unwrap();
    let bus = format!("unix:path={}", dir.path().join("no-bus").display());
    let b = start(scenario.library(), &bus, "");
    let o = eventually(Duration::from_secs(10), "bus state", || {
        let o = b.gpus();
        (o["host_services"]["bus"]["status"] == "unavailable").then_some(o)
    });
    assert!(
        o["host_services"]["bus"]["reason"]
            .as_str()
            .unwrap()
            .contains("no-bus"),
        "{o}"
    );
    assert_eq!(o["gpus"][0]["health"]["health"], "healthy");
}
