//! GPU metrics under DCGM exporter's names, units and labels, so existing Grafana dashboards
//! work unchanged, plus sparkbrain's own health, XID counts, host services and sampler cost.
//!
//! The text is rendered once per sample round (and on a health change), off the request
//! path: a scrape copies the latest text and never calls NVML nor builds per-GPU metric
//! objects, so 32 concurrent scrapers cost no more than one.

use std::fmt::Write as _;

use super::health::Health;
use super::reading::GpuSample;
use super::supervisor::{GpuStatus, HostServicesStatus, SamplerCost};

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

/// Writes one family's header.
fn header(out: &mut String, name: &str, help: &str, counter: bool) {
    let kind = if counter { "counter" } else { "gauge" };
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

/// Escapes a label value as the text format wants (backslash, quote, newline).
fn escape(value: &str) -> std::borrow::Cow<'_, str> {
    if value.contains(['\\', '"', '\n']) {
        value
            .replace('\\', "\\\\")
            .replace('"', "\\\"")
            .replace('\n', "\\n")
            .into()
    } else {
        value.into()
    }
}

/// Renders the GPU metrics in the Prometheus text format.
pub fn render(
    gpus: &[GpuStatus],
    host: &HostServicesStatus,
    hostname: &str,
    cost: SamplerCost,
) -> String {
    let mut out = String::with_capacity(256 * (FIELDS.len() + 4) * gpus.len().max(1));
    // DCGM exporter's labels, in its order; the same for every line of a GPU.
    let labels: Vec<String> = gpus
        .iter()
        .map(|g| {
            let i = &g.inventory;
            format!(
                "gpu=\"{}\",UUID=\"{}\",pci_bus_id=\"{}\",device=\"nvidia{}\",modelName=\"{}\",Hostname=\"{}\"",
                i.index,
                escape(&i.uuid),
                escape(&i.pci_bus_id),
                i.index,
                escape(&i.name),
                escape(hostname)
            )
        })
        .collect();
    for (name, help, counter, read) in FIELDS {
        let mut wrote_header = false;
        for (g, l) in gpus.iter().zip(&labels) {
            let Some(value) = g.sample.as_ref().and_then(|s| read(g, s)) else {
                continue;
            };
            if !wrote_header {
                header(&mut out, name, help, *counter);
                wrote_header = true;
            }
            let _ = writeln!(out, "{name}{{{l}}} {value}");
        }
    }
    if gpus.is_empty() {
        return out;
    }
    header(
        &mut out,
        "sparkbrain_gpu_health",
        "GPU health as sparkbrain judges it: 1 for the current state (healthy, degraded, failed).",
        false,
    );
    for (g, l) in gpus.iter().zip(&labels) {
        for state in [Health::Healthy, Health::Degraded, Health::Failed] {
            let on = u8::from(g.health.health == state);
            let _ = writeln!(
                out,
                "sparkbrain_gpu_health{{{l},health=\"{}\"}} {on}",
                state.as_str()
            );
        }
    }
    if gpus.iter().any(|g| !g.xids.counts.is_empty()) {
        header(
            &mut out,
            "sparkbrain_gpu_xid_errors_total",
            "XID errors received since the daemon started, by XID number.",
            true,
        );
        for (g, l) in gpus.iter().zip(&labels) {
            for (xid, count) in &g.xids.counts {
                let _ = writeln!(
                    out,
                    "sparkbrain_gpu_xid_errors_total{{{l},xid=\"{xid}\"}} {count}"
                );
            }
        }
    }
    if !host.units.is_empty() {
        header(
            &mut out,
            "sparkbrain_gpu_host_service",
            "Host services the GPUs depend on: 1 for the unit's current state.",
            false,
        );
        for u in &host.units {
            let _ = writeln!(
                out,
                "sparkbrain_gpu_host_service{{unit=\"{}\",state=\"{}\"}} 1",
                escape(&u.unit),
                u.state.as_str()
            );
        }
    }
    header(
        &mut out,
        "sparkbrain_gpu_samples_total",
        "Sampling rounds done; each reads every GPU once.",
        true,
    );
    let _ = writeln!(out, "sparkbrain_gpu_samples_total {}", cost.rounds);
    header(
        &mut out,
        "sparkbrain_gpu_sampler_cpu_seconds_total",
        "CPU time the GPU sampler thread spent sampling and rendering these metrics.",
        true,
    );
    let _ = writeln!(
        out,
        "sparkbrain_gpu_sampler_cpu_seconds_total {}",
        cost.cpu_ns as f64 / 1e9
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape("plain"), "plain");
        assert_eq!(escape("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
