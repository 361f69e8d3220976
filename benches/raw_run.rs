//! Raw `session.run` latency from Rust, through sparkbrain's own runtime: all-MiniLM-L6-v2,
//! one 16-token input, 2 intra-op threads, back to back. `just bench-serving` prints it beside
//! Python's, so that /infer's overhead can be split into the serving path and the run itself.
//!
//! Usage: cargo bench --bench raw_run -- LIBONNXRUNTIME MODEL [GAP_MICROSECONDS]
//! Prints `{"p50_ms": …, "p99_ms": …}`.

use std::path::Path;
use std::time::{Duration, Instant};

use ort::value::Tensor;
use sparkbrain::config::{MemoryMode, RuntimeConfig};
use sparkbrain::inference::{Provider, Runtime, SessionSpec, TensorRtOptions};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    let [library, model, rest @ ..] = args.as_slice() else {
        return Err("usage: raw_run LIBONNXRUNTIME MODEL [GAP_MICROSECONDS]".into());
    };
    let gap = Duration::from_micros(rest.first().map_or(Ok(0), |g| g.parse())?);
    let runtime = Runtime::load(&RuntimeConfig {
        onnxruntime_library: library.clone(),
        intra_op_spinning: false,
        intra_op_threads: 2,
        memory_mode: MemoryMode::Fast,
    })?;
    let mut session = runtime
        .open(&SessionSpec {
            path: Path::new(model),
            threads: 2,
            memory_mode: MemoryMode::Fast,
            chain: &[Provider::Cpu],
            gpu: None,
            tensorrt: TensorRtOptions::default(),
        })?
        .session;
    let ids: Vec<i64> = [101].into_iter().chain(2000..2014).chain([102]).collect();
    let mut times = Vec::new();
    for i in 0..520 {
        let inputs = ort::inputs![
            "input_ids" => Tensor::from_array(([1usize, 16], ids.clone()))?,
            "attention_mask" => Tensor::from_array(([1usize, 16], vec![1i64; 16]))?,
            "token_type_ids" => Tensor::from_array(([1usize, 16], vec![0i64; 16]))?,
        ];
        std::thread::sleep(gap);
        let started = Instant::now();
        let outputs = session.run(inputs)?;
        let elapsed = started.elapsed();
        drop(outputs);
        if i >= 20 {
            times.push(elapsed.as_secs_f64() * 1000.0);
        }
    }
    times.sort_by(f64::total_cmp);
    println!(
        "{{\"p50_ms\": {}, \"p99_ms\": {}}}",
        times[times.len() / 2],
        times[times.len() * 99 / 100 - 1]
    );
    Ok(())
}
