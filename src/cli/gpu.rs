//! `sparkbrain gpu` and `sparkbrain gpu watch`: the GPUs of a running daemon as a table like
//! nvidia-smi's summary, with a health column.

use std::time::Duration;

use serde_json::Value;

use super::client::{Daemon, answer};
use super::load;
use crate::config::FileChoice;

/// Arguments of `gpu`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// `watch` refreshes the table until interrupted
    #[command(subcommand)]
    watch: Option<Watch>,
    /// Print the daemon's JSON answer
    #[arg(long, global = true)]
    json: bool,
}

/// `gpu watch`.
#[derive(Debug, clap::Subcommand)]
enum Watch {
    /// Refresh the table every --interval seconds until interrupted
    Watch {
        /// Seconds between refreshes
        #[arg(long, default_value_t = 2.0)]
        interval: f64,
    },
}

/// Prints the GPUs once, or until interrupted with `watch`.
pub fn run(file: &FileChoice, args: Args) -> anyhow::Result<()> {
    let config = load(file)?.config;
    let daemon = Daemon::connect(&config)?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let fetch = || -> anyhow::Result<Value> {
        rt.block_on(async {
            let resp = daemon
                .request(reqwest::Method::GET, "/api/v1/gpus")
                .send()
                .await?;
            answer(resp).await
        })
    };
    match args.watch {
        None => {
            print(&fetch()?, args.json)?;
            Ok(())
        }
        Some(Watch::Watch { interval }) => {
            if !(interval.is_finite() && (0.1..=3600.0).contains(&interval)) {
                anyhow::bail!("--interval {interval} is out of range 0.1-3600 seconds");
            }
            loop {
                let overview = fetch()?;
                if !args.json {
                    // Clear the screen and go home, as watch(1) does.
                    print!("\x1b[2J\x1b[H");
                }
                print(&overview, args.json)?;
                std::thread::sleep(Duration::from_secs_f64(interval));
            }
        }
    }
}

fn print(overview: &Value, json: bool) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string(overview)?);
        return Ok(());
    }
    print!("{}", table(overview));
    Ok(())
}

/// The table text.
fn table(o: &Value) -> String {
    let mut out = String::new();
    match o["nvml"]["state"].as_str() {
        Some("ok") => {}
        Some("disabled") => {
            out.push_str("CPU-only: GPU supervision is off ([gpu] enabled = false)\n");
            return out;
        }
        _ => {
            out.push_str(&format!(
                "CPU-only: {}\n",
                o["nvml"]["detail"]
                    .as_str()
                    .unwrap_or("NVML is not available")
            ));
            return out;
        }
    }
    let d = &o["driver"];
    out.push_str(&format!(
        "Driver {}   CUDA {}   NVML {}\n",
        d["driver_version"].as_str().unwrap_or("?"),
        d["cuda_driver_version"].as_str().unwrap_or("?"),
        d["nvml_version"].as_str().unwrap_or("?")
    ));
    out.push_str(&format!(
        "{:<3} {:<28} {:<9} {:>5} {:>5} {:>15} {:>5} {:>4}  {}\n",
        "GPU", "Name", "Health", "Temp", "Power", "Memory (MiB)", "Util", "XID", "Bus-Id / reasons"
    ));
    let mib = |v: &Value| {
        v.as_u64()
            .map_or("-".to_string(), |b| (b / (1024 * 1024)).to_string())
    };
    let gpus = o["gpus"].as_array().cloned().unwrap_or_default();
    if gpus.is_empty() {
        out.push_str("no GPUs\n");
    }
    for g in &gpus {
        let s = &g["sample"];
        let temp = s["gpu_temp_c"]
            .as_u64()
            .map_or("-".into(), |t| format!("{t}C"));
        let power = s["power_watts"]
            .as_f64()
            .map_or("-".into(), |p| format!("{p:.0}W"));
        let used = mib(&s["fb_used_bytes"]);
        let total = mib(&g["memory_total_bytes"]);
        let util = s["gpu_util_pct"]
            .as_u64()
            .map_or("-".into(), |u| format!("{u}%"));
        let xids: u64 = g["xids"]["counts"]
            .as_object()
            .map_or(0, |c| c.values().filter_map(Value::as_u64).sum());
        let name: String = g["name"].as_str().unwrap_or("").chars().take(28).collect();
        out.push_str(&format!(
            "{:<3} {:<28} {:<9} {:>5} {:>5} {:>15} {:>5} {:>4}  {}\n",
            g["index"],
            name,
            g["health"]["health"].as_str().unwrap_or("?"),
            temp,
            power,
            format!("{used}/{total}"),
            util,
            xids,
            g["pci_bus_id"].as_str().unwrap_or("")
        ));
        for reason in g["health"]["reasons"].as_array().into_iter().flatten() {
            out.push_str(&format!("      {}\n", reason.as_str().unwrap_or("")));
        }
    }
    let units = o["host_services"]["units"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let bus = &o["host_services"]["bus"];
    match bus["status"].as_str() {
        Some("unavailable") => out.push_str(&format!(
            "host services: system bus unavailable: {}\n",
            bus["reason"].as_str().unwrap_or("")
        )),
        Some("off") => out.push_str("host services: not watched (gpu.system_bus = \"off\")\n"),
        _ => {}
    }
    for u in units {
        out.push_str(&format!(
            "{:<32} {}\n",
            u["unit"].as_str().unwrap_or(""),
            u["state"].as_str().unwrap_or("?")
        ));
    }
    out
}
