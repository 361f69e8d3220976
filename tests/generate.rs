//! The built-in ONNX generator on a real model (stories260K from ../shared) and the real ONNX
//! Runtime from vendor/: exact greedy text against the reference, seeded sampling, streaming,
//! stop sequences, limits and concurrent requests.

mod common;

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use sparkbrain::config::{MemoryMode, RuntimeConfig};
use sparkbrain::inference::Runtime;
use sparkbrain::inference::generate::{
    ChatMessage, Event, FinishReason, Finished, GenerateError, GenerateRequest, Generation,
    OnnxGenerator, OnnxGeneratorSpec, Prompt, Sampling,
};

/// `../shared`, or `SPARKBRAIN_SHARED`.
fn shared() -> PathBuf {
    std::env::var_os("SPARKBRAIN_SHARED").map_or_else(
        || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared"),
        PathBuf::from,
    )
}

fn fixture() -> PathBuf {
    let dir = shared().join("models/stories260k");
    assert!(
        dir.join("model.onnx").is_file(),
        "{} is missing",
        dir.display()
    );
    dir
}

/// `expected_greedy_256.txt` without its final newline.
fn expected() -> String {
    let text = std::fs::read_to_string(fixture().join("expected_greedy_256.txt")).expect("read");
    text.strip_suffix('\n').expect("final newline").to_string()
}

/// One runtime per process (ONNX Runtime's environment is process-wide).
fn runtime() -> &'static Runtime {
    static RUNTIME: OnceLock<Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        let lib = common::vendor().join("onnxruntime/libonnxruntime.so.1.31.1");
        Runtime::load(&RuntimeConfig {
            onnxruntime_library: lib.display().to_string(),
            intra_op_spinning: false,
            intra_op_threads: 1,
            memory_mode: MemoryMode::Fast,
        })
        .expect("load ONNX Runtime")
    })
}

fn spec(max_batch: usize) -> OnnxGeneratorSpec {
    let dir = fixture();
    OnnxGeneratorSpec {
        model: dir.join("model.onnx"),
        tokenizer: dir.join("tokenizer.json"),
        bos_token_id: None,
        eos_token_ids: None,
        // The fixture has no config.json beside it.
        context_length: Some(512),
        chat_template: None,
        threads: 1,
        max_batch,
        sessions: 1,
        memory_mode: MemoryMode::Fast,
    }
}

fn open(max_batch: usize) -> OnnxGenerator {
    OnnxGenerator::open(runtime(), &spec(max_batch)).expect("open generator")
}

fn request(prompt: &str, max_tokens: Option<usize>, sampling: Sampling) -> GenerateRequest {
    GenerateRequest {
        prompt_ids: None,
        prompt: Prompt::Text(prompt.into()),
        max_tokens,
        sampling,
        stop: Vec::new(),
    }
}

fn seeded(seed: u64) -> Sampling {
    Sampling {
        temperature: 0.9,
        top_k: Some(40),
        top_p: Some(0.95),
        seed: Some(seed),
    }
}

/// Reads a generation to its end: the deltas and how it finished.
fn collect(mut generation: Generation) -> (Vec<String>, Finished) {
    let mut deltas = Vec::new();
    loop {
        match generation.events.blocking_recv() {
            Some(Event::Delta(d)) => {
                assert!(!d.is_empty(), "empty delta");
                assert!(!d.contains('\u{FFFD}'), "broken character in {d:?}");
                deltas.push(d);
            }
            Some(Event::Done(finished)) => {
                assert!(
                    generation.events.blocking_recv().is_none(),
                    "events after Done"
                );
                return (deltas, finished);
            }
            Some(Event::Failed(e)) => panic!("generation failed: {e}"),
            None => panic!("the stream ended without Done"),
        }
    }
}

fn run(g: &OnnxGenerator, req: GenerateRequest) -> (String, Finished) {
    let (deltas, finished) = collect(g.generate(req).expect("accepted"));
    (deltas.concat(), finished)
}

#[test]
fn greedy_from_bos_matches_the_reference_exactly() {
    let g = open(4);
    let info = g.info();
    assert_eq!(info.context_length, 512);
    assert_eq!(info.vocab, 512);
    assert_eq!(info.bos_token_id, Some(1));
    assert_eq!(info.eos_token_ids, vec![2]);
    assert!(!info.has_chat_template);

    let generation = g
        .generate(request("", Some(256), Sampling::greedy()))
        .expect("accepted");
    assert_eq!(generation.prompt_tokens, 1, "BOS alone");
    let (deltas, finished) = collect(generation);
    assert!(deltas.len() > 100, "streamed in pieces: {}", deltas.len());
    assert_eq!(deltas.concat(), expected());
    assert_eq!(
        finished,
        Finished {
            finish_reason: FinishReason::Length,
            completion_tokens: 256
        }
    );
}

#[test]
fn eight_concurrent_greedy_requests_are_all_exact() {
    eight_concurrent_exact(Arc::new(open(8)));
}

#[test]
fn two_sessions_share_the_queue_and_stay_exact() {
    let g = OnnxGenerator::open(
        runtime(),
        &OnnxGeneratorSpec {
            sessions: 2,
            ..spec(8)
        },
    )
    .expect("open generator");
    eight_concurrent_exact(Arc::new(g));
    let refused = OnnxGenerator::open(
        runtime(),
        &OnnxGeneratorSpec {
            sessions: 3,
            ..spec(2)
        },
    );
    assert!(
        matches!(&refused, Err(GenerateError::Invalid(m)) if m.contains("sessions 3 is out of range 1-2")),
        "{:?}",
        refused.err()
    );
}

/// Eight greedy requests from BOS, started a little apart, each give the reference text.
fn eight_concurrent_exact(g: Arc<OnnxGenerator>) {
    let expected = expected();
    let threads: Vec<_> = (0..8)
        .map(|i| {
            let g = g.clone();
            std::thread::spawn(move || {
                // Staggered starts, so that requests join a batch already decoding and the
                // caches are padded to different lengths.
                std::thread::sleep(std::time::Duration::from_millis(3 * i));
                run(&g, request("", Some(256), Sampling::greedy()))
            })
        })
        .collect();
    for t in threads {
        let (text, finished) = t.join().expect("thread");
        assert_eq!(text, expected);
        assert_eq!(finished.completion_tokens, 256);
    }
}

#[test]
fn same_seed_same_text_other_seed_other_text() {
    let g = open(4);
    let once = |seed| run(&g, request("Once upon a time", Some(60), seeded(seed))).0;
    let a = once(42);
    assert!(!a.is_empty());
    assert_eq!(a, once(42));
    let others: Vec<String> = [43, 44, 45].into_iter().map(once).collect();
    assert!(others.iter().any(|o| *o != a), "{a:?} vs {others:?}");
}

#[test]
fn seeded_requests_in_a_batch_give_what_they_give_alone() {
    let g = Arc::new(open(8));
    let alone: Vec<String> = (0..4)
        .map(|seed| run(&g, request("The dog", Some(80), seeded(seed))).0)
        .collect();
    let threads: Vec<_> = (0..4)
        .map(|seed| {
            let g = g.clone();
            std::thread::spawn(move || run(&g, request("The dog", Some(80), seeded(seed))).0)
        })
        .collect();
    let together: Vec<String> = threads
        .into_iter()
        .map(|t| t.join().expect("thread"))
        .collect();
    assert_eq!(together, alone);
}

#[test]
fn prompts_of_different_lengths_batched_give_what_they_give_alone() {
    let g = Arc::new(open(8));
    let prompts = [
        "",
        "Lily",
        "Once upon a time",
        "The little dog was very happy because he found a big red ball in the park",
    ];
    let alone: Vec<String> = prompts
        .iter()
        .map(|p| run(&g, request(p, Some(120), Sampling::greedy())).0)
        .collect();
    let threads: Vec<_> = (0..8)
        .map(|i| {
            let g = g.clone();
            let prompt = prompts[i % prompts.len()];
            std::thread::spawn(move || {
                std::thread::sleep(std::time::Duration::from_millis(2 * i as u64));
                run(&g, request(prompt, Some(120), Sampling::greedy())).0
            })
        })
        .collect();
    for (i, t) in threads.into_iter().enumerate() {
        assert_eq!(
            t.join().expect("thread"),
            alone[i % prompts.len()],
            "prompt {i}"
        );
    }
}

#[test]
fn a_stop_sequence_ends_the_text_before_it() {
    let g = open(2);
    let mut req = request("", Some(256), Sampling::greedy());
    req.stop = vec!["red ball".into(), "never appears".into()];
    let (text, finished) = run(&g, req);
    let full = expected();
    let at = full.find("red ball").expect("in the reference");
    assert_eq!(text, &full[..at]);
    assert_eq!(finished.finish_reason, FinishReason::Stop);
    // A stop sequence that never completes holds nothing back in the end.
    let mut req = request("", Some(40), Sampling::greedy());
    req.stop = vec!["Lily.x".into()];
    let (text, finished) = run(&g, req);
    assert_eq!(finished.finish_reason, FinishReason::Length);
    assert!(
        full.starts_with(&text) && text.contains("Lily."),
        "{text:?}"
    );
}

#[test]
fn max_tokens_ends_with_length() {
    let g = open(2);
    let (text, finished) = run(&g, request("", Some(10), Sampling::greedy()));
    assert_eq!(
        finished,
        Finished {
            finish_reason: FinishReason::Length,
            completion_tokens: 10
        }
    );
    assert!(expected().starts_with(&text), "{text:?}");
}

#[test]
fn without_max_tokens_it_runs_to_an_end_token_or_a_full_context() {
    let g = open(2);
    let generation = g
        .generate(request("Once upon a time", None, Sampling::greedy()))
        .expect("accepted");
    let prompt = generation.prompt_tokens;
    let (_, finished) = collect(generation);
    match finished.finish_reason {
        FinishReason::Length => assert_eq!(prompt + finished.completion_tokens, 512),
        FinishReason::Stop => assert!(prompt + finished.completion_tokens < 512),
    }
}

#[test]
fn a_context_too_long_is_refused_at_once_with_the_numbers() {
    let g = open(2);
    let err = g
        .generate(request("", Some(512), Sampling::greedy()))
        .unwrap_err();
    assert_eq!(
        err,
        GenerateError::ContextTooLong {
            prompt_tokens: 1,
            max_tokens: 512,
            context_length: 512
        }
    );
    let message = err.to_string();
    assert!(
        message.contains("1 tokens") && message.contains("512"),
        "{message}"
    );
    // A prompt that fills the context leaves no room even without max_tokens.
    let long = "the cat sat on the mat. ".repeat(200);
    let n = g
        .tokenize(&Prompt::Text(long.clone()))
        .expect("count")
        .len();
    assert!(n > 512, "{n}");
    let err = g
        .generate(request(&long, None, Sampling::greedy()))
        .unwrap_err();
    assert_eq!(
        err,
        GenerateError::ContextTooLong {
            prompt_tokens: n,
            max_tokens: 1,
            context_length: 512
        }
    );
}

#[test]
fn bad_parameters_are_invalid() {
    let g = open(1);
    let mut bad = vec![
        request("x", Some(0), Sampling::greedy()),
        request(
            "x",
            Some(5),
            Sampling {
                temperature: -0.5,
                ..Sampling::default()
            },
        ),
        request(
            "x",
            Some(5),
            Sampling {
                top_p: Some(0.0),
                ..Sampling::default()
            },
        ),
    ];
    let mut empty_stop = request("x", Some(5), Sampling::greedy());
    empty_stop.stop = vec![String::new()];
    bad.push(empty_stop);
    for req in bad {
        let err = g.generate(req.clone()).unwrap_err();
        assert!(matches!(err, GenerateError::Invalid(_)), "{req:?}: {err:?}");
    }
}

#[test]
fn chat_prompts_use_the_plain_fallback() {
    let g = open(1);
    let messages = vec![
        ChatMessage {
            role: "system".into(),
            content: "Tell a story.".into(),
        },
        ChatMessage {
            role: "user".into(),
            content: "A dog".into(),
        },
    ];
    let counted = g.tokenize(&Prompt::Chat(messages.clone())).expect("count");
    let plain = g
        .tokenize(&Prompt::Text(
            "System: Tell a story.\nUser: A dog\nAssistant:".into(),
        ))
        .expect("count");
    assert_eq!(counted, plain);
    let generation = g
        .generate(GenerateRequest {
            prompt_ids: None,
            prompt: Prompt::Chat(messages),
            max_tokens: Some(20),
            sampling: Sampling::greedy(),
            stop: vec![],
        })
        .expect("accepted");
    assert_eq!(generation.prompt_tokens, counted.len());
    let (deltas, finished) = collect(generation);
    assert!(finished.completion_tokens > 0);
    assert!(!deltas.concat().is_empty());
}

#[test]
fn a_full_queue_answers_overloaded() {
    // One slot and a queue of four: a burst of twenty overflows at once.
    let g = open(1);
    let mut accepted = Vec::new();
    let mut overloaded = 0;
    for _ in 0..20 {
        match g.generate(request("", Some(200), Sampling::greedy())) {
            Ok(generation) => accepted.push(generation),
            Err(GenerateError::Overloaded(_)) => overloaded += 1,
            Err(e) => panic!("{e:?}"),
        }
    }
    assert!(overloaded >= 10, "{overloaded} overloaded");
    // The accepted ones still complete, exactly.
    let want: String = expected();
    for generation in accepted {
        let (deltas, finished) = collect(generation);
        assert_eq!(finished.completion_tokens, 200);
        assert!(want.starts_with(&deltas.concat()));
    }
}

#[test]
fn missing_files_and_settings_are_reported() {
    let mut s = spec(1);
    s.model = PathBuf::from("/nonexistent/model.onnx");
    let err = OnnxGenerator::open(runtime(), &s).err().expect("error");
    assert!(matches!(err, GenerateError::Unavailable(_)), "{err:?}");
    assert!(err.to_string().contains("/nonexistent/model.onnx"), "{err}");

    let mut s = spec(1);
    s.context_length = None;
    let err = OnnxGenerator::open(runtime(), &s).err().expect("error");
    assert!(err.to_string().contains("context_length"), "{err}");
}

#[test]
fn a_model_without_a_kv_cache_is_refused_with_the_reason() {
    let dir = common::vendor().join("models/all-MiniLM-L6-v2");
    let mut s = spec(1);
    s.model = dir.join("model.onnx");
    s.tokenizer = dir.join("tokenizer.json");
    let err = OnnxGenerator::open(runtime(), &s).err().expect("error");
    assert!(matches!(err, GenerateError::Invalid(_)), "{err:?}");
    assert!(
        err.to_string()
            .contains("not a decoder in the exporter layout"),
        "{err}"
    );
}
