//! GPU metrics under DCGM exporter's names, units and labels, so existing Grafana dashboards
//! work unchanged, plus sparkbrain's own health and XID counts. A scrape reads the
//! supervisor's latest sample; it never calls NVML.

use std::collections::HashMap;
use std::sync::Arc;

use prometheus::core::{Collector, Desc};
use prometheus::proto::{Counter, Gauge, LabelPair, Metric, MetricFamily, MetricType};

use super::health::Health;
use super::reading::GpuSample;
use super::supervisor::{GpuStatus, Gpus};

/// DCGM exporter's labels, in its order.
const LABELS: [&str; 6] = [
    "gpu",
    "UUID",
    "pci_bus_id",
    "device",
    "modelName",
    "Hostname",
];

type Read = fn(&GpuStatus, &GpuSample) -> Option<f64>;

const MIB: f64 = 1024.0 * 1024.0;

/// (name, help, counter?, reader) for each DCGM field exported.
const FIELDS: &[(&str, &str, bool, Read)] = &[
    (
        "DCGM_FI_DEV_GPU_UTIL",
        "GPU utilization (in %).",
        false,
        |_, s| s.gpu_util_pct.map(f64::from),
    ),
    (
        "DCGM_FI_DEV_MEM_COPY_UTIL",
        "Memory utilization (in %).",
        false,
        |_, s| s.mem_copy_util_pct.map(f64::from),
    ),
    (
        "DCGM_FI_DEV_FB_USED",
        "Framebuffer memory used (in MiB).",
        false,
        |_, s| s.fb_used_bytes.map(|b| (b as f64 / MIB).round()),
    ),
    (
        "DCGM_FI_DEV_FB_FREE",
        "Framebuffer memory free (in MiB).",
        false,
        |_, s| s.fb_free_bytes.map(|b| (b as f64 / MIB).round()),
    ),
    (
        "DCGM_FI_DEV_GPU_TEMP",
        "GPU temperature (in C).",
        false,
        |_, s| s.gpu_temp_c.map(f64::from),
    ),
    (
        "DCGM_FI_DEV_MEMORY_TEMP",
        "Memory temperature (in C).",
        false,
        |_, s| s.memory_temp_c.map(f64::from),
    ),
    (
        "DCGM_FI_DEV_POWER_USAGE",
        "Power draw (in W).",
        false,
        |_, s| s.power_watts,
    ),
    (
        "DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION",
        "Total energy consumption since boot (in mJ).",
        true,
        |_, s| s.energy_mj.map(|v| v as f64),
    ),
    (
        "DCGM_FI_DEV_SM_CLOCK",
        "SM clock frequency (in MHz).",
        false,
        |_, s| s.sm_clock_mhz.map(f64::from),
    ),
    (
        "DCGM_FI_DEV_MEM_CLOCK",
        "Memory clock frequency (in MHz).",
        false,
        |_, s| s.mem_clock_mhz.map(f64::from),
    ),
    (
        "DCGM_FI_DEV_CLOCK_THROTTLE_REASONS",
        "Current clock throttle reasons.",
        false,
        |_, s| s.throttle_reasons.map(|v| v as f64),
    ),
    (
        "DCGM_FI_DEV_XID_ERRORS",
        "Value of the last XID error encountered.",
        false,
        |g, _| Some(g.xids.last.as_ref().map_or(0.0, |x| x.xid as f64)),
    ),
    (
        "DCGM_FI_DEV_PCIE_REPLAY_COUNTER",
        "Total number of PCIe retries.",
        true,
        |_, s| s.pcie_replay_count.map(|v| v as f64),
    ),
    (
        "DCGM_FI_DEV_ECC_SBE_VOL_TOTAL",
        "Total number of single-bit volatile ECC errors.",
        true,
        |_, s| s.ecc_sbe_volatile.map(|v| v as f64),
    ),
    (
        "DCGM_FI_DEV_ECC_DBE_VOL_TOTAL",
        "Total number of double-bit volatile ECC errors.",
        true,
        |_, s| s.ecc_dbe_volatile.map(|v| v as f64),
    ),
    (
        "DCGM_FI_DEV_ECC_SBE_AGG_TOTAL",
        "Total number of single-bit persistent ECC errors.",
        true,
        |_, s| s.ecc_sbe_aggregate.map(|v| v as f64),
    ),
    (
        "DCGM_FI_DEV_ECC_DBE_AGG_TOTAL",
        "Total number of double-bit persistent ECC errors.",
        true,
        |_, s| s.ecc_dbe_aggregate.map(|v| v as f64),
    ),
    (
        "DCGM_FI_DEV_RETIRED_SBE",
        "Total number of retired pages due to single-bit errors.",
        true,
        |_, s| s.retired_pages_sbe.map(|v| v as f64),
    ),
    (
        "DCGM_FI_DEV_RETIRED_DBE",
        "Total number of retired pages due to double-bit errors.",
        true,
        |_, s| s.retired_pages_dbe.map(|v| v as f64),
    ),
    (
        "DCGM_FI_DEV_RETIRED_PENDING",
        "Total number of pages pending retirement.",
        false,
        |_, s| s.retired_pages_pending.map(|v| f64::from(u8::from(v))),
    ),
    (
        "DCGM_FI_DEV_CORRECTABLE_REMAPPED_ROWS",
        "Number of remapped rows for correctable errors.",
        true,
        |_, s| s.remapped_rows_correctable.map(|v| v as f64),
    ),
    (
        "DCGM_FI_DEV_UNCORRECTABLE_REMAPPED_ROWS",
        "Number of remapped rows for uncorrectable errors.",
        true,
        |_, s| s.remapped_rows_uncorrectable.map(|v| v as f64),
    ),
    (
        "DCGM_FI_DEV_ROW_REMAP_FAILURE",
        "Whether remapping of rows has failed.",
        false,
        |_, s| s.remap_failed.map(|v| f64::from(u8::from(v))),
    ),
];

const HEALTH: &str = "sparkbrain_gpu_health";
const XIDS: &str = "sparkbrain_gpu_xid_errors_total";
const HOST: &str = "sparkbrain_gpu_host_service";
const ROUNDS: &str = "sparkbrain_gpu_samples_total";
const SAMPLER_CPU: &str = "sparkbrain_gpu_sampler_cpu_seconds_total";

/// The collector registered with the daemon's registry.
pub struct GpuCollector {
    gpus: Arc<Gpus>,
    descs: Vec<Desc>,
}

impl GpuCollector {
    /// A collector over the supervisor's state.
    pub fn new(gpus: Arc<Gpus>) -> Result<GpuCollector, prometheus::Error> {
        let labels = |extra: &[&str]| -> Vec<String> {
            LABELS
                .iter()
                .chain(extra)
                .map(|l| (*l).to_string())
                .collect()
        };
        let mut descs = FIELDS
            .iter()
            .map(|(name, help, _, _)| {
                Desc::new((*name).into(), (*help).into(), labels(&[]), HashMap::new())
            })
            .collect::<Result<Vec<_>, _>>()?;
        descs.push(Desc::new(
            HEALTH.into(),
            "GPU health as sparkbrain judges it: 1 for the current state (healthy, degraded, failed).".into(),
            labels(&["health"]),
            HashMap::new(),
        )?);
        descs.push(Desc::new(
            XIDS.into(),
            "XID errors received since the daemon started, by XID number.".into(),
            labels(&["xid"]),
            HashMap::new(),
        )?);
        descs.push(Desc::new(
            HOST.into(),
            "Host services the GPUs depend on: 1 for the unit's current state.".into(),
            vec!["unit".into(), "state".into()],
            HashMap::new(),
        )?);
        descs.push(Desc::new(
            ROUNDS.into(),
            "Sampling rounds done; each reads every GPU once.".into(),
            Vec::new(),
            HashMap::new(),
        )?);
        descs.push(Desc::new(
            SAMPLER_CPU.into(),
            "CPU time the GPU sampler thread spent sampling.".into(),
            Vec::new(),
            HashMap::new(),
        )?);
        Ok(GpuCollector { gpus, descs })
    }
}

fn family(name: &str, help: &str, counter: bool, metrics: Vec<Metric>) -> MetricFamily {
    let mut f = MetricFamily::default();
    f.set_name(name.to_string());
    f.set_help(help.to_string());
    f.set_field_type(if counter {
        MetricType::COUNTER
    } else {
        MetricType::GAUGE
    });
    f.set_metric(metrics);
    f
}

fn metric(labels: &[(&str, &str)], value: f64, counter: bool) -> Metric {
    let mut m = Metric::default();
    m.set_label(
        labels
            .iter()
            .map(|(k, v)| {
                let mut l = LabelPair::default();
                l.set_name((*k).to_string());
                l.set_value((*v).to_string());
                l
            })
            .collect(),
    );
    if counter {
        let mut c = Counter::default();
        c.set_value(value);
        m.set_counter(c);
    } else {
        let mut g = Gauge::default();
        g.set_value(value);
        m.set_gauge(g);
    }
    m
}

impl Collector for GpuCollector {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let gpus = self.gpus.statuses();
        let host = self.gpus.hostname();
        let ids: Vec<[String; 4]> = gpus
            .iter()
            .map(|g| {
                let i = &g.inventory;
                [
                    i.index.to_string(),
                    i.uuid.clone(),
                    i.pci_bus_id.clone(),
                    format!("nvidia{}", i.index),
                ]
            })
            .collect();
        let labels = |n: usize| -> Vec<(&str, &str)> {
            let g = &gpus[n].inventory;
            let [gpu, uuid, bus, device] = &ids[n];
            vec![
                ("gpu", gpu.as_str()),
                ("UUID", uuid.as_str()),
                ("pci_bus_id", bus.as_str()),
                ("device", device.as_str()),
                ("modelName", g.name.as_str()),
                ("Hostname", host),
            ]
        };
        let mut out = Vec::with_capacity(FIELDS.len() + 3);
        for (name, help, counter, read) in FIELDS {
            let metrics: Vec<Metric> = gpus
                .iter()
                .enumerate()
                .filter_map(|(n, g)| {
                    let value = read(g, g.sample.as_ref()?)?;
                    Some(metric(&labels(n), value, *counter))
                })
                .collect();
            if !metrics.is_empty() {
                out.push(family(name, help, *counter, metrics));
            }
        }
        let mut health = Vec::new();
        let mut xids = Vec::new();
        for (n, g) in gpus.iter().enumerate() {
            for state in [Health::Healthy, Health::Degraded, Health::Failed] {
                let mut l = labels(n);
                l.push(("health", state.as_str()));
                health.push(metric(
                    &l,
                    f64::from(u8::from(g.health.health == state)),
                    false,
                ));
            }
            for (number, count) in &g.xids.counts {
                let number = number.to_string();
                let mut l = labels(n);
                l.push(("xid", number.as_str()));
                xids.push(metric(&l, *count as f64, true));
            }
        }
        let help = |name: &str| {
            self.descs
                .iter()
                .find(|d| d.fq_name == name)
                .map(|d| d.help.clone())
                .unwrap_or_default()
        };
        if !health.is_empty() {
            out.push(family(HEALTH, &help(HEALTH), false, health));
        }
        if !xids.is_empty() {
            out.push(family(XIDS, &help(XIDS), true, xids));
        }
        let units = self.gpus.host_services().units;
        if !units.is_empty() {
            let metrics = units
                .iter()
                .map(|u| {
                    metric(
                        &[("unit", u.unit.as_str()), ("state", u.state.as_str())],
                        1.0,
                        false,
                    )
                })
                .collect();
            out.push(family(HOST, &help(HOST), false, metrics));
        }
        if !gpus.is_empty() {
            let cost = self.gpus.sampler_cost();
            out.push(family(
                ROUNDS,
                &help(ROUNDS),
                true,
                vec![metric(&[], cost.rounds as f64, true)],
            ));
            out.push(family(
                SAMPLER_CPU,
                &help(SAMPLER_CPU),
                true,
                vec![metric(&[], cost.cpu_ns as f64 / 1e9, true)],
            ));
        }
        out
    }
}
