//! `sparkbrain ask "…"`: asks the knowledge base of a running daemon and streams the answer
//! to the terminal, then lists the sources it cites.

use std::io::Write;

use anyhow::{Context, bail};
use futures_util::StreamExt;
use serde_json::{Value, json};

use super::client::Daemon;
use super::load;
use crate::config::FileChoice;

/// Arguments of `ask`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The question
    question: String,
    /// Ask only this collection (repeatable); all you may read by default
    #[arg(long = "collection")]
    collections: Vec<String>,
    /// Passages to retrieve and cite (the daemon's answers.top_k by default)
    #[arg(long, short = 'k')]
    top_k: Option<usize>,
    /// Generator to answer with (the daemon's default by default)
    #[arg(long)]
    model: Option<String>,
    /// Continue this chat of yours (its id)
    #[arg(long)]
    chat: Option<i64>,
    /// Print the daemon's whole JSON answer instead of streaming
    #[arg(long)]
    json: bool,
}

/// Streams the answer, then prints the sources.
pub fn run(file: &FileChoice, args: Args) -> anyhow::Result<()> {
    let config = load(file)?.config;
    let daemon = Daemon::connect(&config)?;
    let mut body = json!({ "question": args.question, "stream": !args.json });
    if !args.collections.is_empty() {
        body["collections"] = json!(args.collections);
    }
    for (key, value) in [
        ("top_k", args.top_k.map(|k| json!(k))),
        ("model", args.model.map(|m| json!(m))),
        ("chat", args.chat.map(|c| json!(c))),
    ] {
        if let Some(v) = value {
            body[key] = v;
        }
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let resp = daemon
            .request(reqwest::Method::POST, "/api/v1/ask")
            .json(&body)
            .send()
            .await?;
        if args.json {
            let answer: Value = super::client::answer(resp).await?;
            println!("{}", serde_json::to_string_pretty(&answer)?);
            return Ok(());
        }
        if !resp.status().is_success() {
            return super::client::answer::<Value>(resp).await.map(|_| ());
        }
        stream_answer(resp).await
    })
}

/// Prints `delta` events as they come, then the citations the answer used.
async fn stream_answer(resp: reqwest::Response) -> anyhow::Result<()> {
    let mut bytes = resp.bytes_stream();
    let mut buffer = Vec::new();
    let mut event = String::new();
    let mut citations = Vec::new();
    let mut out = std::io::stdout();
    while let Some(chunk) = bytes.next().await {
        buffer.extend_from_slice(&chunk.context("the connection to the daemon broke")?);
        while let Some(end) = buffer.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = buffer.drain(..=end).collect();
            let line = String::from_utf8_lossy(&line);
            let line = line.trim_end();
            if let Some(name) = line.strip_prefix("event:") {
                event = name.trim().to_string();
                continue;
            }
            let Some(data) = line.strip_prefix("data:") else {
                continue;
            };
            let data: Value = serde_json::from_str(data.trim())
                .context("the daemon sent an event that is not JSON")?;
            match event.as_str() {
                "citations" => {
                    citations = data["citations"].as_array().cloned().unwrap_or_default();
                }
                "delta" => {
                    print!("{}", data["text"].as_str().unwrap_or(""));
                    out.flush()?;
                }
                "done" => {
                    println!();
                    print_sources(&citations, &data["cited"]);
                    return Ok(());
                }
                "error" => {
                    println!();
                    bail!("{}", data["detail"].as_str().unwrap_or("the answer failed"));
                }
                _ => {}
            }
        }
    }
    bail!("the daemon closed the stream before the answer was complete")
}

/// The sources the answer cites, or all of them when it cites none.
fn print_sources(citations: &[Value], cited: &Value) {
    let cited: Vec<u64> = cited
        .as_array()
        .map(|c| c.iter().filter_map(Value::as_u64).collect())
        .unwrap_or_default();
    if citations.is_empty() {
        println!("\nno sources found");
        return;
    }
    println!("\nSources:");
    for c in citations {
        let n = c["n"].as_u64().unwrap_or(0);
        if !cited.is_empty() && !cited.contains(&n) {
            continue;
        }
        let title = c["title"]
            .as_str()
            .or_else(|| c["filename"].as_str())
            .unwrap_or("untitled");
        let page = match (c["page_start"].as_i64(), c["page_end"].as_i64()) {
            (Some(a), Some(b)) if a != b => format!(", pages {a}-{b}"),
            (Some(a), _) => format!(", page {a}"),
            _ => String::new(),
        };
        println!(
            "[{n}] {title}  ({} · document {}{page})",
            c["collection"].as_str().unwrap_or(""),
            c["document"]
        );
    }
}
