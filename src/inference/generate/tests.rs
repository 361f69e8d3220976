//! Engine tests on the real stories260K model and ONNX Runtime.

use std::path::PathBuf;
use std::sync::OnceLock;

use crate::config::{MemoryMode, RuntimeConfig};
use crate::inference::Runtime;

/// `../shared/models/stories260k` (or under `SPARKBRAIN_SHARED`).
pub(super) fn fixture_dir() -> PathBuf {
    let shared = std::env::var_os("SPARKBRAIN_SHARED").map_or_else(
        || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared"),
        PathBuf::from,
    );
    let dir = shared.join("models/stories260k");
    assert!(
        dir.join("model.onnx").is_file(),
        "{} is missing the stories260k model",
        dir.display()
    );
    dir
}

/// The process's one runtime, from vendor/ (`just fetch`).
pub(super) fn runtime() -> &'static Runtime {
    static RUNTIME: OnceLock<Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        let lib = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("vendor/onnxruntime/libonnxruntime.so.1.31.1");
        assert!(
            lib.is_file(),
            "vendor/ is missing ONNX Runtime: run `just fetch` first"
        );
        Runtime::load(&RuntimeConfig {
            onnxruntime_library: lib.display().to_string(),
            intra_op_spinning: false,
            intra_op_threads: 1,
            memory_mode: MemoryMode::Fast,
        })
        .expect("load ONNX Runtime")
    })
}

fn spec(max_batch: usize) -> super::OnnxGeneratorSpec {
    let dir = fixture_dir();
    super::OnnxGeneratorSpec {
        model: dir.join("model.onnx"),
        tokenizer: dir.join("tokenizer.json"),
        bos_token_id: None,
        eos_token_ids: None,
        context_length: Some(512),
        chat_template: None,
        threads: 1,
        max_batch,
        sessions: 1,
        memory_mode: MemoryMode::Fast,
    }
}

fn long_request() -> super::GenerateRequest {
    super::GenerateRequest {
        prompt_ids: None,
        prompt: super::Prompt::Text(String::new()),
        max_tokens: Some(511),
        sampling: super::Sampling::greedy(),
        stop: Vec::new(),
    }
}

/// Waits until the generator's batch is empty.
fn wait_idle(g: &super::OnnxGenerator) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while g.stats().0 > 0 {
        assert!(std::time::Instant::now() < deadline, "still busy");
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
}

#[test]
fn a_dropped_receiver_cancels_its_sequence() {
    let g = super::OnnxGenerator::open(runtime(), &spec(2)).expect("open");
    let mut generation = g.generate(long_request()).expect("accepted");
    // Three deltas: the sequence is in the batch and has run steps.
    for _ in 0..3 {
        assert!(matches!(
            generation.events.blocking_recv(),
            Some(super::Event::Delta(_))
        ));
    }
    drop(generation);
    wait_idle(&g);
    let (_, prefills, steps) = g.stats();
    std::thread::sleep(std::time::Duration::from_millis(50));
    assert_eq!(g.stats().2, steps, "steps went on after the batch emptied");
    assert_eq!(prefills, 1);
    assert!(steps < 400, "{steps} steps after the client left");
}

#[test]
fn a_request_whose_client_left_while_queued_is_never_run() {
    let g = super::OnnxGenerator::open(runtime(), &spec(1)).expect("open");
    let first = g.generate(long_request()).expect("accepted");
    let second = g.generate(long_request()).expect("accepted");
    drop(second);
    let mut events = first.events;
    while let Some(e) = events.blocking_recv() {
        assert!(!matches!(e, super::Event::Failed(_)), "{e:?}");
    }
    // The scheduler looks at the queue once more before sleeping.
    let third = g
        .generate(super::GenerateRequest {
            max_tokens: Some(1),
            ..long_request()
        })
        .expect("accepted");
    let mut events = third.events;
    while events.blocking_recv().is_some() {}
    assert_eq!(g.stats().1, 2, "the abandoned request was prefilled");
}

#[test]
fn dropping_the_generator_lets_running_generations_finish() {
    let g = super::OnnxGenerator::open(runtime(), &spec(2)).expect("open");
    let generation = g
        .generate(super::GenerateRequest {
            max_tokens: Some(50),
            ..long_request()
        })
        .expect("accepted");
    drop(g);
    let mut events = generation.events;
    let mut last = None;
    while let Some(e) = events.blocking_recv() {
        last = Some(e);
    }
    assert!(
        matches!(last, Some(super::Event::Done(f)) if f.completion_tokens == 50),
        "{last:?}"
    );
}

#[test]
fn concurrent_requests_share_decoding_steps() {
    let g = super::OnnxGenerator::open(runtime(), &spec(8)).expect("open");
    let generations: Vec<_> = (0..8)
        .map(|_| {
            g.generate(super::GenerateRequest {
                max_tokens: Some(100),
                ..long_request()
            })
            .expect("accepted")
        })
        .collect();
    for generation in generations {
        let mut events = generation.events;
        let mut done = false;
        while let Some(e) = events.blocking_recv() {
            done |= matches!(e, super::Event::Done(f) if f.completion_tokens == 100);
        }
        assert!(done);
    }
    let (_, prefills, steps) = g.stats();
    assert_eq!(prefills, 8);
    // Alone, each would take 99 steps: 792 in all.
    assert!(steps < 2 * 99, "{steps} steps for 8 requests of 100 tokens");
}
