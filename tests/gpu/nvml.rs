//! `sparkbrain::gpu::nvml::Nvml` against the fake NVML: inventory, samples, errors, XIDs.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

use serde_json::json;
use sparkbrain::gpu::nvml::{Nvml, Unavailable};
use sparkbrain::gpu::reading::{DriverInfo, GpuInventory, XidEvent};

use crate::fake_nvml::{Scenario, eventually, h100_host, uuid};

fn open(s: &Scenario) -> Nvml {
    match Nvml::open(Some(s.library())) {
        Ok(n) => n,
        Err(e) => panic!("open the fake NVML: {e}"),
    }
}

#[test]
fn inventory_and_driver_match_the_scenario() {
    let mut host = h100_host(8);
    // Vary the optional fields so each is seen both ways.
    host["gpus"][2]["mig"] = json!(true);
    host["gpus"][3]["persistence"] = json!(false);
    host["gpus"][4].as_object_mut().unwrap().remove("serial");
    host["gpus"][5]["unsupported"] =
        json!(["nvmlDeviceGetEnforcedPowerLimit", "nvmlDeviceGetMigMode"]);
    host["gpus"][6]["compute_capability"] = json!("8.0");
    host["gpus"][6]["name"] = json!("NVIDIA A100-SXM4-80GB");
    host["gpus"][7]["power_limit_mw"] = json!(450_500);
    let s = Scenario::new(&host);
    let nvml = open(&s);

    assert_eq!(
        nvml.driver(),
        DriverInfo {
            driver_version: "550.54.15".into(),
            cuda_driver_version: "12.4".into(),
            nvml_version: "12.550.54.15".into(),
        }
    );
    let expected: Vec<GpuInventory> = (0..8u32)
        .map(|i| GpuInventory {
            index: i,
            name: if i == 6 {
                "NVIDIA A100-SXM4-80GB".into()
            } else {
                "NVIDIA H100 80GB HBM3".into()
            },
            uuid: uuid(i),
            pci_bus_id: format!("00000000:{:02X}:00.0", 0x18 + i * 0x11),
            serial: (i != 4).then(|| format!("165242300{i:04}")),
            memory_total_bytes: 85_520_809_984,
            compute_capability: Some(if i == 6 { "8.0" } else { "9.0" }.into()),
            mig_enabled: match i {
                2 => Some(true),
                5 => None,
                _ => Some(false),
            },
            persistence_mode: Some(i != 3),
            power_limit_watts: match i {
                5 => None,
                7 => Some(450.5),
                _ => Some(700.0),
            },
        })
        .collect();
    assert_eq!(nvml.inventory().expect("inventory"), expected);
}

#[test]
fn samples_read_every_field_and_follow_the_time_series() {
    let mut host = h100_host(2);
    host["gpus"][1]["telemetry"]["gpu_util"] = json!([[0, 10], [1500, 80]]);
    host["gpus"][1]["telemetry"]["power_mw"] = json!([[0, 100_000], [1500, 650_250]]);
    host["gpus"][1]["telemetry"]["retired_pages_dbe"] = json!(2);
    host["gpus"][1]["telemetry"]["retired_pages_pending"] = json!(true);
    let s = Scenario::new(&host);
    let opened = Instant::now();
    let nvml = open(&s);

    let before = now_ms();
    let a = nvml.sample(0);
    assert!(a.at_ms >= before && a.at_ms <= now_ms());
    assert!(a.errors.is_empty(), "{:?}", a.errors);
    assert!(!a.gpu_lost);
    assert_eq!(a.gpu_util_pct, Some(50));
    assert_eq!(a.mem_copy_util_pct, Some(20));
    assert_eq!(a.fb_used_bytes, Some(1_073_741_824));
    assert_eq!(
        a.fb_free_bytes,
        Some(85_520_809_984 - 536_870_912 - 1_073_741_824)
    );
    assert_eq!(a.gpu_temp_c, Some(40));
    assert_eq!(a.memory_temp_c, Some(50));
    assert_eq!(a.power_watts, Some(300.0));
    assert_eq!(a.energy_mj, Some(123_456_789_000));
    assert_eq!(a.sm_clock_mhz, Some(1980));
    assert_eq!(a.mem_clock_mhz, Some(2619));
    assert_eq!(a.throttle_reasons, Some(1));
    assert_eq!(a.ecc_sbe_volatile, Some(0));
    assert_eq!(a.ecc_dbe_volatile, Some(0));
    assert_eq!(a.ecc_sbe_aggregate, Some(10));
    assert_eq!(a.ecc_dbe_aggregate, Some(1));
    assert_eq!(a.retired_pages_sbe, Some(0));
    assert_eq!(a.retired_pages_dbe, Some(0));
    assert_eq!(a.retired_pages_pending, Some(false));
    assert_eq!(a.remapped_rows_correctable, Some(2));
    assert_eq!(a.remapped_rows_uncorrectable, Some(0));
    assert_eq!(a.remap_pending, Some(false));
    assert_eq!(a.remap_failed, Some(false));
    assert_eq!(a.pcie_replay_count, Some(3));

    let early = nvml.sample(1);
    // Only meaningful if this slow machine got here before the step at 1500 ms.
    if opened.elapsed() < Duration::from_millis(1400) {
        assert_eq!(early.gpu_util_pct, Some(10));
        assert_eq!(early.power_watts, Some(100.0));
    }
    assert_eq!(early.retired_pages_dbe, Some(2));
    assert_eq!(early.retired_pages_pending, Some(true));
    if let Some(wait) = Duration::from_millis(1600).checked_sub(opened.elapsed()) {
        std::thread::sleep(wait);
    }
    let late = nvml.sample(1);
    assert_eq!(late.gpu_util_pct, Some(80));
    assert_eq!(late.power_watts, Some(650.25));
    assert!(late.errors.is_empty(), "{:?}", late.errors);
}

#[test]
fn unsupported_fields_are_none_without_errors() {
    let mut host = h100_host(1);
    let gpu = host["gpus"][0].as_object_mut().unwrap();
    // An older board: no HBM sensor, no row remapping, no serial or compute capability.
    for key in ["serial", "compute_capability", "mig"] {
        gpu.remove(key);
    }
    gpu.insert(
        "unsupported".into(),
        json!([
            "nvmlDeviceGetTotalEccErrors",
            "nvmlDeviceGetPcieReplayCounter"
        ]),
    );
    let t = gpu["telemetry"].as_object_mut().unwrap();
    for key in [
        "memory_temp",
        "remapped_rows_correctable",
        "remapped_rows_uncorrectable",
        "remap_pending",
        "remap_failed",
        "energy_mj",
        "throttle_reasons",
    ] {
        t.remove(key);
    }
    let s = Scenario::new(&host);
    let nvml = open(&s);

    let inv = nvml.inventory().expect("inventory");
    assert_eq!(inv[0].serial, None);
    assert_eq!(inv[0].compute_capability, None);
    assert_eq!(inv[0].mig_enabled, None);
    assert_eq!(inv[0].persistence_mode, Some(true));

    let x = nvml.sample(0);
    assert!(x.errors.is_empty(), "{:?}", x.errors);
    assert_eq!(x.memory_temp_c, None);
    assert_eq!(x.energy_mj, None);
    assert_eq!(x.throttle_reasons, None);
    assert_eq!(x.ecc_sbe_volatile, None);
    assert_eq!(x.ecc_dbe_aggregate, None);
    assert_eq!(x.remapped_rows_correctable, None);
    assert_eq!(x.remap_failed, None);
    assert_eq!(x.pcie_replay_count, None);
    // What the board does have is still read.
    assert_eq!(x.gpu_temp_c, Some(40));
    assert_eq!(x.power_watts, Some(300.0));
}

#[test]
fn an_intermittent_error_is_reported_in_errors() {
    let mut host = h100_host(2);
    host["errors"] = json!([
        {"gpu": 0, "function": "nvmlDeviceGetTemperature", "error": "UNKNOWN", "from_ms": 0, "every": 2}
    ]);
    let s = Scenario::new(&host);
    let nvml = open(&s);

    let samples: Vec<_> = (0..4).map(|_| nvml.sample(0)).collect();
    let failed: Vec<_> = samples.iter().filter(|x| x.gpu_temp_c.is_none()).collect();
    assert_eq!(failed.len(), 2, "every second call fails");
    for x in &failed {
        assert_eq!(x.errors.len(), 1, "{:?}", x.errors);
        assert!(x.errors[0].starts_with("temperature: "), "{:?}", x.errors);
        assert!(!x.gpu_lost);
        // The rest of the sample is intact.
        assert_eq!(x.power_watts, Some(300.0));
    }
    for x in samples.iter().filter(|x| x.gpu_temp_c.is_some()) {
        assert!(x.errors.is_empty(), "{:?}", x.errors);
    }
    // The rule names GPU 0 only.
    let other = nvml.sample(1);
    assert!(other.errors.is_empty());
    assert_eq!(other.gpu_temp_c, Some(41));
}

#[test]
fn gpu_is_lost_sets_gpu_lost() {
    let mut host = h100_host(2);
    host["errors"] = json!([
        {"gpu": 1, "function": "nvmlDeviceGetPowerUsage", "error": "GPU_IS_LOST", "from_ms": 0}
    ]);
    let s = Scenario::new(&host);
    let nvml = open(&s);

    let lost = nvml.sample(1);
    assert!(lost.gpu_lost);
    assert!(
        lost.errors.iter().any(|e| e.starts_with("power: ")),
        "{:?}",
        lost.errors
    );
    // Read before the failure, and nothing read after it.
    assert_eq!(lost.gpu_temp_c, Some(41));
    assert_eq!(lost.energy_mj, None);
    assert_eq!(lost.pcie_replay_count, None);
    let fine = nvml.sample(0);
    assert!(!fine.gpu_lost);
    assert!(fine.errors.is_empty());
}

#[test]
fn a_missing_library_is_unavailable_and_names_the_path() {
    let path = std::path::Path::new("/nonexistent/dir/libnvidia-ml.so.1");
    match Nvml::open(Some(path)) {
        Err(e @ Unavailable::LibraryNotFound { .. }) => {
            let msg = e.to_string();
            assert!(msg.contains("/nonexistent/dir/libnvidia-ml.so.1"), "{msg}");
            assert!(msg.contains("nvml_library"), "{msg}");
        }
        other => panic!("expected LibraryNotFound, got {other:?}"),
    }
}

#[test]
fn no_driver_and_no_permission_are_unavailable() {
    let s = Scenario::without_file();
    match Nvml::open(Some(s.library())) {
        Err(e @ Unavailable::DriverNotLoaded) => {
            assert!(e.to_string().contains("driver is not loaded"), "{e}")
        }
        other => panic!("expected DriverNotLoaded, got {other:?}"),
    }

    let mut host = h100_host(1);
    host["init_error"] = json!("NO_PERMISSION");
    let s = Scenario::new(&host);
    match Nvml::open(Some(s.library())) {
        Err(e @ Unavailable::NoPermission) => assert!(e.to_string().contains("/dev/nvidia"), "{e}"),
        other => panic!("expected NoPermission, got {other:?}"),
    }
}

/// Starts the XID watcher, sending events to a channel.
fn watch(
    nvml: Arc<Nvml>,
) -> (
    Arc<AtomicBool>,
    mpsc::Receiver<XidEvent>,
    std::thread::JoinHandle<()>,
) {
    let stop = Arc::new(AtomicBool::new(false));
    let (tx, rx) = mpsc::channel();
    let handle = nvml
        .watch_xids(stop.clone(), move |e| {
            let _ = tx.send(e);
        })
        .expect("watch XIDs");
    (stop, rx, handle)
}

#[test]
fn xid_events_are_delivered_once_with_gpu_and_number() {
    let mut host = h100_host(8);
    // GPU 6 cannot report XIDs: it is skipped, and its XID never arrives.
    host["gpus"][6]["xid_events"] = json!(false);
    host["xids"] = json!([
        {"gpu": 3, "xid": 79, "at_ms": 300},
        {"gpu": 5, "xid": 48, "at_ms": 600},
        {"gpu": 6, "xid": 13, "at_ms": 100},
    ]);
    let s = Scenario::new(&host);
    let nvml = Arc::new(open(&s));
    let (stop, rx, handle) = watch(nvml.clone());

    let first = rx.recv_timeout(Duration::from_secs(10)).expect("first XID");
    let second = rx
        .recv_timeout(Duration::from_secs(10))
        .expect("second XID");
    assert_eq!(
        (first.index, first.uuid.as_str(), first.xid),
        (3, uuid(3).as_str(), 79)
    );
    assert_eq!(
        (second.index, second.uuid.as_str(), second.xid),
        (5, uuid(5).as_str(), 48)
    );
    assert!(second.at_ms >= first.at_ms);
    // Once each: nothing more arrives.
    assert!(rx.recv_timeout(Duration::from_millis(1200)).is_err());

    let stopping = Instant::now();
    stop.store(true, Ordering::Relaxed);
    handle.join().expect("the XID thread ends");
    assert!(
        stopping.elapsed() < Duration::from_secs(3),
        "stop is honoured promptly"
    );
}

#[test]
fn a_rewritten_scenario_takes_effect() {
    let host = h100_host(2);
    let s = Scenario::new(&host);
    let nvml = Arc::new(open(&s));
    let (stop, rx, handle) = watch(nvml.clone());
    assert_eq!(nvml.sample(1).gpu_temp_c, Some(41));

    // The GPU heats up, a remapping goes pending, and an XID arrives: times stay relative to
    // nvmlInit, so an XID "at 0" is due at once.
    let mut hot = host.clone();
    hot["gpus"][1]["telemetry"]["gpu_temp"] = json!(92);
    hot["gpus"][1]["telemetry"]["remap_pending"] = json!(true);
    hot["xids"] = json!([{"gpu": 1, "xid": 94, "at_ms": 0}]);
    s.write(&hot);

    let x = eventually(Duration::from_secs(5), "the new temperature", || {
        let x = nvml.sample(1);
        (x.gpu_temp_c == Some(92)).then_some(x)
    });
    assert_eq!(x.remap_pending, Some(true));
    let e = rx
        .recv_timeout(Duration::from_secs(5))
        .expect("the added XID");
    assert_eq!((e.index, e.xid), (1, 94));

    // A second rewrite that keeps the XID does not deliver it again.
    let mut hotter = hot.clone();
    hotter["gpus"][1]["telemetry"]["gpu_temp"] = json!(95);
    s.write(&hotter);
    eventually(Duration::from_secs(5), "the second rewrite", || {
        (nvml.sample(1).gpu_temp_c == Some(95)).then_some(())
    });
    assert!(rx.recv_timeout(Duration::from_millis(700)).is_err());

    stop.store(true, Ordering::Relaxed);
    handle.join().expect("the XID thread ends");
    // An unrelated GPU kept its values.
    assert_eq!(nvml.sample(0).gpu_temp_c, Some(40));
}

fn now_ms() -> i64 {
    sparkbrain::store::now_ms()
}
