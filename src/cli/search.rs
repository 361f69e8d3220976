//! `sparkbrain search "…"`: searches the knowledge base of a running daemon.

use serde_json::{Value, json};

use super::client::{Daemon, answer};
use super::load;
use crate::config::FileChoice;

/// Arguments of `search`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// What to look for
    query: String,
    /// Search only this collection (repeatable); all you may read by default
    #[arg(long = "collection")]
    collections: Vec<String>,
    /// Hits to show
    #[arg(long, short = 'k', default_value_t = 10)]
    top_k: usize,
    /// hybrid, vector or text
    #[arg(long, default_value = "hybrid")]
    mode: String,
    /// Print the daemon's JSON answer
    #[arg(long)]
    json: bool,
}

/// Prints the hits, best first.
pub fn run(file: &FileChoice, args: Args) -> anyhow::Result<()> {
    let config = load(file)?.config;
    let daemon = Daemon::connect(&config)?;
    let mut body = json!({ "query": args.query, "top_k": args.top_k, "mode": args.mode });
    if !args.collections.is_empty() {
        body["collections"] = json!(args.collections);
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let results: Value = rt.block_on(async {
        let resp = daemon
            .request(reqwest::Method::POST, "/api/v1/search")
            .json(&body)
            .send()
            .await?;
        answer(resp).await
    })?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&results)?);
        return Ok(());
    }
    let hits = results["hits"].as_array().cloned().unwrap_or_default();
    if hits.is_empty() {
        println!("no hits");
    }
    for hit in hits {
        let title = hit["title"]
            .as_str()
            .or_else(|| hit["filename"].as_str())
            .unwrap_or("untitled");
        let page = match (hit["page_start"].as_i64(), hit["page_end"].as_i64()) {
            (Some(a), Some(b)) if a != b => format!(", pages {a}-{b}"),
            (Some(a), _) => format!(", page {a}"),
            _ => String::new(),
        };
        println!(
            "{}. {title}  [{} · document {}{page}]  score {:.4}",
            hit["rank"],
            hit["collection"].as_str().unwrap_or(""),
            hit["document"],
            hit["score"].as_f64().unwrap_or(0.0)
        );
        println!("   {}", highlighted(&hit["snippet"]).replace('\n', " "));
    }
    Ok(())
}

/// The snippet with its highlighted words between `**`.
fn highlighted(snippet: &Value) -> String {
    let text = snippet["text"].as_str().unwrap_or("");
    let mut out = String::new();
    let mut at = 0;
    for range in snippet["highlights"].as_array().into_iter().flatten() {
        let (Some(a), Some(b)) = (range[0].as_u64(), range[1].as_u64()) else {
            continue;
        };
        let (a, b) = (a as usize, b as usize);
        if a < at || b > text.len() || !text.is_char_boundary(a) || !text.is_char_boundary(b) {
            continue;
        }
        out.push_str(&text[at..a]);
        out.push_str("**");
        out.push_str(&text[a..b]);
        out.push_str("**");
        at = b;
    }
    out.push_str(&text[at..]);
    out
}
