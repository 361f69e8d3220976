//! `/api/v1/ask` and `/api/v1/chats`: answers grounded in real documents, with citations,
//! streamed or whole, with and without a language model, and never across permissions.

use serde_json::{Value, json};

use crate::common::Setup;
use crate::util::{Kb, problem, shared, sse, with_stories};

const APOLLO: &str = "The Apollo program was the third United States human spaceflight program \
carried out by NASA. It landed the first humans on the Moon from 1969 to 1972 and ended with \
Apollo 17 in December 1972, after six successful landings.";
const HARVEST: &str = "The grape harvest in Burgundy starts in September. Pickers cut the \
bunches by hand, and the pressing ends when the last cart reaches the winery.";
const CHESS: &str = "In chess, the endgame is the stage of the game when few pieces are left \
on the board. When does it end? It ends with checkmate, stalemate or a draw by agreement.";
const RAINFOREST: &str = "The Amazon rainforest covers much of the Amazon basin of South \
America. Its wet season ends in May, when the rivers slowly fall again.";

fn ask(kb: &Kb, token: &str, body: Value) -> reqwest::blocking::Response {
    kb.call(reqwest::Method::POST, token, "/api/v1/ask", Some(body))
}

fn answer(kb: &Kb, token: &str, body: Value) -> Value {
    let resp = ask(kb, token, body);
    assert_eq!(resp.status(), 200, "{}", resp.text().unwrap_or_default());
    resp.json().expect("json")
}

/// A collection holding the four short texts, indexed.
fn library(kb: &Kb, token: &str, name: &str) {
    kb.collection(token, json!({ "name": name }));
    for (file, text) in [
        ("apollo.txt", APOLLO),
        ("harvest.txt", HARVEST),
        ("chess.txt", CHESS),
        ("rainforest.txt", RAINFOREST),
    ] {
        let resp = kb.upload_bytes(token, name, file, text.as_bytes().to_vec(), None);
        assert_eq!(resp.status(), 202);
        let id = resp.json::<Value>().expect("json")["id"]
            .as_i64()
            .expect("id");
        kb.indexed(token, id);
    }
}

fn filenames(answer: &Value) -> Vec<String> {
    answer["citations"]
        .as_array()
        .expect("citations")
        .iter()
        .map(|c| c["filename"].as_str().unwrap_or("").to_string())
        .collect()
}

#[test]
fn without_a_language_model_the_answer_is_the_best_passages_and_says_so() {
    let kb = Kb::start();
    library(&kb, &kb.alice, "facts");
    let a = answer(
        &kb,
        &kb.alice,
        json!({ "question": "When did the Apollo moon landings end?", "top_k": 3 }),
    );
    assert!(
        a["answer"]
            .as_str()
            .expect("answer")
            .contains("No language model is configured"),
        "{a}"
    );
    assert_eq!(a["model"], Value::Null);
    assert_eq!(a["finish_reason"], Value::Null);
    let c = &a["citations"][0];
    assert_eq!(c["n"], 1);
    assert_eq!(c["filename"], "apollo.txt");
    assert_eq!(c["collection"], "facts");
    assert!(c["text"].as_str().expect("text").contains("Apollo 17"));
    assert!(c["document"].as_i64().is_some() && c["chunk"].as_i64().is_some());
    assert_eq!(a["citations"].as_array().map(Vec::len), Some(3));

    // Naming a model when none is configured is a clear 404.
    let (status, detail) = problem(ask(
        &kb,
        &kb.alice,
        json!({ "question": "x", "model": "gpt" }),
    ));
    assert_eq!(status, 404);
    assert!(detail.contains("no generator \"gpt\""), "{detail}");
    for (body, status, fragment) in [
        (json!({ "question": "  " }), 422, "question is empty"),
        (json!({ "question": "x", "top_k": 0 }), 422, "top_k"),
        (json!({ "question": "x", "top_k": 51 }), 422, "top_k"),
        (json!({ "question": "x", "bogus": 1 }), 422, "bogus"),
        (
            json!({ "question": "x", "collections": ["nope"] }),
            404,
            "nope",
        ),
    ] {
        let (got, detail) = problem(ask(&kb, &kb.alice, body.clone()));
        assert_eq!(got, status, "{body}: {detail}");
        assert!(detail.contains(fragment), "{body}: {detail}");
    }
}

#[test]
fn a_streamed_answer_sends_citations_first_then_the_text_of_the_whole_answer() {
    let kb = Kb::start_with(with_stories(Setup::new()));
    library(&kb, &kb.alice, "facts");
    let body = json!({ "question": "Who landed on the Moon?", "top_k": 2, "max_tokens": 40 });
    let whole = answer(&kb, &kb.alice, body.clone());
    assert_eq!(whole["model"], "stories");
    assert!(!whole["answer"].as_str().expect("answer").is_empty());
    assert!(whole["usage"]["prompt_tokens"].as_u64().expect("usage") > 50);
    assert!(whole["usage"]["completion_tokens"].as_u64().expect("usage") <= 40);
    let citations = whole["citations"].as_array().expect("citations");
    // stories260K's context is 512 tokens: sources that do not fit are dropped, best kept.
    assert!(!citations.is_empty() && citations.len() <= 2, "{whole}");
    assert_eq!(citations[0]["filename"], "apollo.txt");
    for n in whole["cited"].as_array().expect("cited") {
        let n = n.as_u64().expect("number") as usize;
        assert!((1..=citations.len()).contains(&n));
    }

    let mut streaming = body;
    streaming["stream"] = json!(true);
    let events = sse(ask(&kb, &kb.alice, streaming));
    assert_eq!(events[0].0, "citations");
    let head: Value = serde_json::from_str(&events[0].1).expect("json");
    assert_eq!(head["citations"], whole["citations"]);
    let (last_name, last_data) = events.last().expect("events");
    assert_eq!(last_name, "done");
    let tail: Value = serde_json::from_str(last_data).expect("json");
    assert_eq!(tail["finish_reason"], whole["finish_reason"]);
    let text: String = events[1..events.len() - 1]
        .iter()
        .map(|(name, data)| {
            assert_eq!(name, "delta");
            serde_json::from_str::<Value>(data).expect("json")["text"]
                .as_str()
                .expect("text")
                .to_string()
        })
        .collect();
    assert_eq!(
        text,
        whole["answer"].as_str().expect("answer"),
        "greedy is deterministic"
    );
}

#[test]
fn answers_never_draw_on_collections_the_caller_cannot_read() {
    let kb = Kb::start();
    library(&kb, &kb.alice, "private");
    kb.collection(&kb.bob, json!({ "name": "bobs" }));
    let resp = kb.upload_bytes(
        &kb.bob,
        "bobs",
        "note.txt",
        b"Bob keeps notes on moon rocks and the Apollo missions.".to_vec(),
        None,
    );
    let id = resp.json::<Value>().expect("json")["id"]
        .as_i64()
        .expect("id");
    kb.indexed(&kb.bob, id);

    let a = answer(&kb, &kb.bob, json!({ "question": "Apollo moon landings" }));
    let names = filenames(&a);
    assert_eq!(names, ["note.txt"], "bob sees only his own collection");
    let (status, _) = problem(ask(
        &kb,
        &kb.bob,
        json!({ "question": "Apollo", "collections": ["private"] }),
    ));
    assert_eq!(status, 404);
    // The admin sees both.
    let all = filenames(&answer(
        &kb,
        &kb.admin,
        json!({ "question": "Apollo moon landings" }),
    ));
    assert!(all.contains(&"apollo.txt".to_string()) && all.contains(&"note.txt".to_string()));
}

#[test]
fn chats_are_private_and_a_follow_up_question_draws_on_the_one_before() {
    let kb = Kb::start();
    library(&kb, &kb.alice, "facts");
    let chat: Value = kb
        .call(reqwest::Method::POST, &kb.alice, "/api/v1/chats", None)
        .json()
        .expect("json");
    let id = chat["id"].as_i64().expect("id");

    // Alone, "When did it end?" matches the texts about endings better than Apollo's...
    let alone = answer(
        &kb,
        &kb.alice,
        json!({ "question": "When did it end?", "top_k": 1 }),
    );
    assert_ne!(filenames(&alone), ["apollo.txt"], "{alone}");
    // ...after a question about Apollo in the same chat, it is about Apollo.
    answer(
        &kb,
        &kb.alice,
        json!({ "question": "Tell me about the Apollo program", "chat": id, "top_k": 1 }),
    );
    let follow = answer(
        &kb,
        &kb.alice,
        json!({ "question": "When did it end?", "chat": id, "top_k": 1 }),
    );
    assert_eq!(filenames(&follow), ["apollo.txt"]);
    assert_eq!(follow["chat"], id);

    let got: Value = kb
        .get(&kb.alice, &format!("/api/v1/chats/{id}"))
        .json()
        .expect("json");
    let roles: Vec<&str> = got["messages"]
        .as_array()
        .expect("messages")
        .iter()
        .map(|m| m["role"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(roles, ["user", "assistant", "user", "assistant"]);
    assert_eq!(got["messages"][2]["content"], "When did it end?");
    assert_eq!(got["messages"][3]["citations"][0]["filename"], "apollo.txt");
    assert_eq!(got["title"], "Tell me about the Apollo program");
    assert_eq!(got["questions"], 2);
    let listed: Value = kb.get(&kb.alice, "/api/v1/chats").json().expect("json");
    assert_eq!(listed[0]["id"], id);

    // Nobody else sees it or adds to it, admins included.
    for token in [&kb.bob, &kb.admin] {
        assert_eq!(kb.get(token, &format!("/api/v1/chats/{id}")).status(), 404);
        let (status, _) = problem(ask(&kb, token, json!({ "question": "x", "chat": id })));
        assert_eq!(status, 404);
        let none: Value = kb.get(token, "/api/v1/chats").json().expect("json");
        assert_eq!(none, json!([]));
        let resp = kb.call(
            reqwest::Method::DELETE,
            token,
            &format!("/api/v1/chats/{id}"),
            None,
        );
        assert_eq!(resp.status(), 404);
    }
    let resp = kb.call(
        reqwest::Method::DELETE,
        &kb.alice,
        &format!("/api/v1/chats/{id}"),
        None,
    );
    assert_eq!(resp.status(), 204);
    assert_eq!(
        kb.get(&kb.alice, &format!("/api/v1/chats/{id}")).status(),
        404
    );
}

#[test]
fn xquad_answers_cite_the_paragraph_holding_the_answer() {
    let kb = Kb::start();
    // An API key: this test outlives an access token on a slow machine.
    let key: Value = kb
        .call(
            reqwest::Method::POST,
            &kb.alice,
            "/api/v1/keys",
            Some(json!({ "name": "xquad" })),
        )
        .json()
        .expect("json");
    let key = key["key"].as_str().expect("key").to_string();
    kb.collection(&key, json!({ "name": "xquad" }));
    let data: Value = serde_json::from_str(
        &std::fs::read_to_string(shared().join("data/qa/xquad/xquad.en.json")).expect("xquad"),
    )
    .expect("json");
    let mut questions = Vec::new();
    let mut ids = Vec::new();
    for (a, article) in data["data"].as_array().expect("data").iter().enumerate() {
        for (p, paragraph) in article["paragraphs"]
            .as_array()
            .expect("paragraphs")
            .iter()
            .enumerate()
        {
            let name = format!("p{a}-{p}.txt");
            let text = paragraph["context"].as_str().expect("context");
            let resp = kb.upload_bytes(&key, "xquad", &name, text.as_bytes().to_vec(), None);
            assert!(resp.status() == 202 || resp.status() == 200);
            ids.push(
                resp.json::<Value>().expect("json")["id"]
                    .as_i64()
                    .expect("id"),
            );
            for qa in paragraph["qas"].as_array().expect("qas") {
                questions.push((
                    qa["question"].as_str().expect("q").to_string(),
                    name.clone(),
                ));
            }
        }
    }
    for id in ids {
        kb.indexed(&key, id);
    }
    let found: usize = std::thread::scope(|s| {
        let workers: Vec<_> = questions
            .chunks(questions.len().div_ceil(4))
            .map(|part| {
                let (kb, key) = (&kb, &key);
                s.spawn(move || {
                    part.iter()
                        .filter(|(question, gold)| {
                            let a = answer(kb, key, json!({ "question": question, "top_k": 5 }));
                            filenames(&a).contains(gold)
                        })
                        .count()
                })
            })
            .collect();
        workers.into_iter().map(|w| w.join().expect("worker")).sum()
    });
    let share = found as f64 / questions.len() as f64;
    assert!(
        share >= 0.95,
        "{found} of {} answers cite the gold paragraph ({share:.3})",
        questions.len()
    );
}
