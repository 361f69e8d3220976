//! Text generation speed of the built-in ONNX generator for `just bench-generate`, through its
//! public API (queue, scheduler thread, sampling and streaming included):
//!
//! - prefill: a prompt with `max_tokens` 1, prompt tokens / time to the end;
//! - decode: greedy from BOS alone for 256 positions (as `reference_decode.py`), tokens / time;
//!
//! each alone and as 8 concurrent requests (aggregate tokens/s) on one session, and as 8
//! concurrent requests on two parallel sessions of THREADS threads each; the median of several
//! runs.
//!
//! Usage: cargo bench --bench generate -- LIBONNXRUNTIME MODEL_DIR THREADS PROMPT
//! Prints one JSON object.

use std::path::Path;
use std::time::Instant;

use sparkbrain::config::{MemoryMode, RuntimeConfig};
use sparkbrain::inference::Runtime;
use sparkbrain::inference::generate::{
    Event, GenerateRequest, OnnxGenerator, OnnxGeneratorSpec, Prompt, Sampling,
};

type Error = Box<dyn std::error::Error>;

/// Runs `requests` at once; returns (prompt tokens, completion tokens, seconds) in all.
fn concurrent(
    g: &OnnxGenerator,
    prompt: &str,
    max_tokens: usize,
    requests: usize,
) -> Result<(usize, usize, f64), Error> {
    let started = Instant::now();
    let mut generations = Vec::new();
    for _ in 0..requests {
        generations.push(g.generate(GenerateRequest {
            prompt_ids: None,
            prompt: Prompt::Text(prompt.to_string()),
            max_tokens: Some(max_tokens),
            sampling: Sampling::greedy(),
            stop: Vec::new(),
        })?);
    }
    let (mut prompt_tokens, mut completion_tokens) = (0, 0);
    for mut generation in generations {
        prompt_tokens += generation.prompt_tokens;
        loop {
            match generation.events.blocking_recv() {
                Some(Event::Delta(_)) => {}
                Some(Event::Done(f)) => {
                    completion_tokens += f.completion_tokens;
                    break;
                }
                Some(Event::Failed(e)) => return Err(e.into()),
                None => return Err("the stream ended without Done".into()),
            }
        }
    }
    Ok((
        prompt_tokens,
        completion_tokens,
        started.elapsed().as_secs_f64(),
    ))
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() -> Result<(), Error> {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    let [library, dir, threads, prompt] = args.as_slice() else {
        return Err("usage: generate LIBONNXRUNTIME MODEL_DIR THREADS PROMPT".into());
    };
    let threads: usize = threads.parse()?;
    // The daemon's default is "compact" (no arena); "fast" matches onnxruntime's defaults, which
    // the Python reference runs with.
    let memory_mode = match std::env::var("GEN_BENCH_MEMORY_MODE").as_deref() {
        Ok("compact") => MemoryMode::Compact,
        Ok("fast") | Err(_) => MemoryMode::Fast,
        Ok(other) => return Err(format!("GEN_BENCH_MEMORY_MODE={other}: compact or fast").into()),
    };
    let dir = Path::new(dir);
    let runtime = Runtime::load(&RuntimeConfig {
        onnxruntime_library: library.clone(),
        intra_op_spinning: false,
        intra_op_threads: threads,
        memory_mode,
    })?;
    let spec = OnnxGeneratorSpec {
        model: dir.join("model.onnx"),
        tokenizer: dir.join("tokenizer.json"),
        bos_token_id: None,
        eos_token_ids: None,
        context_length: Some(512),
        chat_template: None,
        threads,
        max_batch: 8,
        sessions: 1,
        memory_mode,
    };
    let one = OnnxGenerator::open(&runtime, &spec)?;
    // Two sessions of `threads` each, four sequences apiece: the parallel-sessions figure.
    let two = OnnxGenerator::open(
        &runtime,
        &OnnxGeneratorSpec {
            sessions: 2,
            ..spec.clone()
        },
    )?;
    concurrent(&one, "", 64, 1)?; // warm-up
    concurrent(&two, "", 64, 2)?;

    let mut figures = serde_json::Map::new();
    for (key, g, requests, runs_prefill, runs_decode) in [
        ("batch1", &one, 1, 30, 7),
        ("batch8", &one, 8, 10, 5),
        ("batch8_sessions2", &two, 8, 10, 5),
    ] {
        let mut prefill = Vec::new();
        let mut prompt_tokens = 0;
        for _ in 0..runs_prefill {
            let (p, _, s) = concurrent(g, prompt, 1, requests)?;
            prompt_tokens = p / requests;
            prefill.push(p as f64 / s);
        }
        let mut decode = Vec::new();
        let mut completion = 0;
        for _ in 0..runs_decode {
            let (_, c, s) = concurrent(g, "", 256, requests)?;
            completion = c / requests;
            decode.push(c as f64 / s);
        }
        figures.insert(
            key.to_string(),
            serde_json::json!({
                "prompt_tokens": prompt_tokens,
                "prefill_tokens_per_s": median(prefill),
                "completion_tokens": completion,
                "decode_tokens_per_s": median(decode),
            }),
        );
    }
    figures.insert("threads".into(), threads.into());
    figures.insert(
        "memory_mode".into(),
        format!("{memory_mode:?}").to_lowercase().into(),
    );
    println!("{}", serde_json::Value::Object(figures));
    Ok(())
}
