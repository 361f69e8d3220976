//! Black-box tests: backups and restores of a real daemon's data (real documents, real SQLite,
//! real indexes), through the API and `sparkbrain backup`, and to a real S3-compatible server
//! (moto_server, started on loopback).

#[path = "../common/mod.rs"]
mod common;
#[path = "../kb/util.rs"]
#[allow(dead_code)]
mod util;

mod damage;
mod round_trip;
mod s3;

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use serde_json::{Value, json};

use crate::common::Setup;
use crate::util::{Kb, doc};

/// Writes a passphrase file in `dir`.
pub fn passphrase_file(dir: &Path, passphrase: &str) -> PathBuf {
    let path = dir.join(format!("passphrase-{}", passphrase.len()));
    std::fs::write(&path, format!("{passphrase}\n")).unwrap();
    path
}

/// Runs `sparkbrain backup ARGS` with the setup's configuration.
pub fn backup_cmd(setup: &Setup, args: &[&str]) -> Output {
    let out = setup
        .command()
        .arg("backup")
        .args(args)
        .output()
        .expect("run sparkbrain backup");
    eprintln!(
        "backup {args:?}: {}\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Uploads files into a collection and waits until each is indexed; returns their ids.
pub fn load(kb: &Kb, collection: &str, files: &[&str]) -> Vec<i64> {
    let ids: Vec<i64> = files
        .iter()
        .map(|f| kb.upload(&kb.admin, collection, &doc(f).to_string_lossy()))
        .collect();
    for id in &ids {
        kb.indexed(&kb.admin, *id);
    }
    ids
}

/// The fixed queries whose results a restore must reproduce.
pub const QUERIES: &[&str] = &[
    "duck species and their habitat",
    "lorem ipsum dolor",
    "table of contents of the document",
    "filesystem hierarchy standard",
];

/// Hits of every query and mode in `collection`: (document, chunk, score to 4 places) in order.
pub fn rankings(kb: &Kb, token: &str, collection: &str) -> Vec<Value> {
    let mut out = Vec::new();
    for q in QUERIES {
        for mode in ["hybrid", "vector", "text"] {
            let hits = kb.hits(
                token,
                json!({"query": q, "mode": mode, "top_k": 8, "collections": [collection]}),
            );
            out.push(json!({
                "query": q,
                "mode": mode,
                "hits": hits
                    .iter()
                    .map(|h| {
                        let score = (h["score"].as_f64().unwrap_or(f64::NAN) * 1e4).round() / 1e4;
                        json!([h["document"], h["chunk"]["id"], score])
                    })
                    .collect::<Vec<_>>(),
            }));
        }
    }
    out
}

/// Polls until `f` holds, up to `limit`.
pub fn eventually(limit: Duration, what: &str, mut f: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + limit;
    while std::time::Instant::now() < deadline {
        if f() {
            return;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    panic!("{what}: not within {limit:?}");
}
