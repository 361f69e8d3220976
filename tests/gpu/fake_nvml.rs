//! The stand-in for the GPU driver this machine lacks: `tests/fixtures/fake_nvml/fake_nvml.c`,
//! a small C library that exports the NVML functions sparkbrain calls (real signatures,
//! struct layouts and return codes) and answers them from a JSON scenario file. It is
//! compiled once per test process with the system `cc` and loaded through the same
//! library-path option a real host uses (`[gpu] nvml_library`).
//!
//! Each [`Scenario`] gets its own copy of the library next to its own `scenario.json`: every
//! `dlopen` of a distinct file has its own globals, and the fake looks for `scenario.json`
//! beside itself, so tests run in parallel without sharing state or touching the process
//! environment.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

/// The C source of the fake.
const SOURCE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/fake_nvml/fake_nvml.c"
);

/// Path of the fake `libnvidia-ml.so.1`, compiled on first use in this test process.
pub fn library() -> PathBuf {
    static LIB: OnceLock<PathBuf> = OnceLock::new();
    LIB.get_or_init(|| {
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("fake_nvml");
        std::fs::create_dir_all(&dir).expect("create the fake NVML build dir");
        // Per process, then renamed: two test processes building at once must not see each
        // other's half-written file.
        let pid = std::process::id();
        let tmp = dir.join(format!("libnvidia-ml.{pid}.tmp"));
        let out = dir.join(format!("libnvidia-ml.{pid}.so.1"));
        let status = Command::new("cc")
            .args(["-shared", "-fPIC", "-O1", "-Wall", "-Werror", "-o"])
            .arg(&tmp)
            .arg(SOURCE)
            .arg("-lpthread")
            .status()
            .expect("run cc (the fake NVML needs a C compiler)");
        assert!(status.success(), "cc failed to build {SOURCE}");
        std::fs::rename(&tmp, &out).expect("move the fake NVML into place");
        out
    })
    .clone()
}

/// A scenario file with its own copy of the fake library.
pub struct Scenario {
    dir: tempfile::TempDir,
    lib: PathBuf,
}

impl Scenario {
    /// A library copy reading `scenario`.
    pub fn new(scenario: &Value) -> Scenario {
        let s = Scenario::without_file();
        s.write(scenario);
        s
    }

    /// A library copy with no scenario file: `nvmlInit` says the driver is not loaded.
    pub fn without_file() -> Scenario {
        let dir = tempfile::tempdir().expect("tempdir");
        let lib = dir.path().join("libnvidia-ml.so.1");
        // A copy, not a link: the loader shares one instance between paths to the same file.
        std::fs::copy(library(), &lib).expect("copy the fake NVML");
        Scenario { dir, lib }
    }

    /// The library to give `Nvml::open`.
    pub fn library(&self) -> &Path {
        &self.lib
    }

    /// Writes (or rewrites) the scenario. Written aside and renamed over, so the fake never
    /// reads half a file; it notices the change within about 100 ms.
    pub fn write(&self, scenario: &Value) {
        let tmp = self.dir.path().join("scenario.json.tmp");
        std::fs::write(&tmp, serde_json::to_vec_pretty(scenario).expect("json"))
            .expect("write the scenario");
        std::fs::rename(&tmp, self.dir.path().join("scenario.json")).expect("rename the scenario");
    }
}

/// A host of `n` H100s, every field supported, with constant telemetry.
pub fn h100_host(n: u32) -> Value {
    json!({
        "driver_version": "550.54.15",
        "cuda_driver_version": "12.4",
        "nvml_version": "12.550.54.15",
        "gpus": (0..n).map(h100).collect::<Vec<_>>(),
        "xids": [],
        "errors": [],
    })
}

/// GPU `i` of [`h100_host`].
pub fn h100(i: u32) -> Value {
    json!({
        "name": "NVIDIA H100 80GB HBM3",
        "uuid": uuid(i),
        "pci_bus_id": format!("00000000:{:02X}:00.0", 0x18 + i * 0x11),
        "serial": format!("165242300{i:04}"),
        "memory_total": 85_520_809_984u64,
        "compute_capability": "9.0",
        "mig": false,
        "persistence": true,
        "power_limit_mw": 700_000,
        "telemetry": {
            "gpu_util": 50 + i,
            "mem_util": 20 + i,
            "fb_used": 1_073_741_824u64 * u64::from(i + 1),
            "fb_reserved": 536_870_912u64,
            "gpu_temp": 40 + i,
            "memory_temp": 50 + i,
            "power_mw": 300_000 + 1000 * i,
            "energy_mj": 123_456_789_000u64 + u64::from(i),
            "sm_clock": 1980,
            "mem_clock": 2619,
            "throttle_reasons": 1,
            "ecc_sbe_volatile": i,
            "ecc_dbe_volatile": 0,
            "ecc_sbe_aggregate": 10 + i,
            "ecc_dbe_aggregate": 1,
            "retired_pages_sbe": 0,
            "retired_pages_dbe": 0,
            "retired_pages_pending": false,
            "remapped_rows_correctable": 2,
            "remapped_rows_uncorrectable": 0,
            "remap_pending": false,
            "remap_failed": false,
            "pcie_replay": 3,
        },
    })
}

/// UUID of GPU `i` in [`h100`].
pub fn uuid(i: u32) -> String {
    format!("GPU-6f1c2a4e-0000-4000-8000-{:012x}", 0xabc000 + i)
}

/// Polls `f` every 20 ms until it returns `Some`, or panics after `limit`.
pub fn eventually<T>(limit: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(start.elapsed() < limit, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}
