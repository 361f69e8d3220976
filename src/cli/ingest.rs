//! `sparkbrain ingest PATH… --collection NAME`: uploads files and folders to a running daemon
//! with a progress bar, waits for them to be indexed, and sums up.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use futures_util::{StreamExt, stream};
use indicatif::{ProgressBar, ProgressStyle};
use serde::Deserialize;

use super::client::{Daemon, answer};
use super::load;
use crate::config::FileChoice;

/// Arguments of `ingest`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Files or folders (folders are walked; hidden files are skipped)
    #[arg(required = true)]
    paths: Vec<PathBuf>,
    /// The collection to add them to
    #[arg(long)]
    collection: String,
    /// Create the collection first if it does not exist
    #[arg(long)]
    create: bool,
    /// Uploads in flight at once
    #[arg(long, default_value_t = 4)]
    jobs: usize,
    /// Return once uploaded, without waiting for indexing
    #[arg(long)]
    no_wait: bool,
}

#[derive(Debug, Deserialize)]
struct Uploaded {
    id: i64,
    status: String,
    duplicate: bool,
}

#[derive(Debug, Deserialize)]
struct DocumentState {
    status: String,
    error: Option<DocumentError>,
}

#[derive(Debug, Deserialize)]
struct DocumentError {
    reason: String,
    message: String,
}

/// What happened to one file.
enum Fate {
    Indexed,
    Queued,
    Duplicate,
    Failed(String),
}

/// Uploads; exits 1 when any file failed.
pub fn run(file: &FileChoice, args: Args) -> anyhow::Result<()> {
    let config = load(file)?.config;
    let daemon = Daemon::connect(&config)?;
    let files = collect(&args.paths)?;
    if files.is_empty() {
        bail!("no files found under the given paths");
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(ingest(&daemon, &args, files))
}

/// Regular files under `paths`, in a stable order.
fn collect(paths: &[PathBuf]) -> anyhow::Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for path in paths {
        let meta =
            std::fs::metadata(path).with_context(|| format!("cannot read {}", path.display()))?;
        if meta.is_file() {
            files.push(path.clone());
            continue;
        }
        for entry in walkdir::WalkDir::new(path)
            .sort_by_file_name()
            .into_iter()
            .filter_entry(|e| e.depth() == 0 || !e.file_name().to_string_lossy().starts_with('.'))
        {
            let entry = entry.with_context(|| format!("cannot walk {}", path.display()))?;
            if entry.file_type().is_file() {
                files.push(entry.into_path());
            }
        }
    }
    Ok(files)
}

async fn ingest(daemon: &Daemon, args: &Args, files: Vec<PathBuf>) -> anyhow::Result<()> {
    let collection = &args.collection;
    if args.create {
        let resp = daemon
            .request(reqwest::Method::POST, "/api/v1/collections")
            .json(&serde_json::json!({ "name": collection }))
            .send()
            .await?;
        if resp.status() != reqwest::StatusCode::CONFLICT {
            answer::<serde_json::Value>(resp)
                .await
                .with_context(|| format!("cannot create collection {collection:?}"))?;
        }
    }
    let total: u64 = files
        .iter()
        .map(|f| std::fs::metadata(f).map_or(0, |m| m.len()))
        .sum();
    let bar = ProgressBar::new(total);
    bar.set_style(
        ProgressStyle::with_template("{spinner} uploading [{bar:30}] {bytes}/{total_bytes} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    let results: Vec<(PathBuf, anyhow::Result<Uploaded>)> = stream::iter(files)
        .map(|path| {
            let bar = bar.clone();
            async move {
                let size = std::fs::metadata(&path).map_or(0, |m| m.len());
                let result = upload(daemon, collection, &path).await;
                bar.inc(size);
                bar.set_message(
                    path.file_name()
                        .map(|n| n.to_string_lossy().to_string())
                        .unwrap_or_default(),
                );
                (path, result)
            }
        })
        .buffer_unordered(args.jobs.max(1))
        .collect()
        .await;
    bar.finish_and_clear();

    let waiting = results
        .iter()
        .filter(|(_, r)| matches!(r, Ok(u) if !u.duplicate))
        .count() as u64;
    let wait_bar = (!args.no_wait && waiting > 0).then(|| {
        let b = ProgressBar::new(waiting);
        b.set_style(
            ProgressStyle::with_template("{spinner} indexing [{bar:30}] {pos}/{len} documents")
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
        );
        b
    });
    let mut fates = Vec::with_capacity(results.len());
    for (path, result) in results {
        let fate = match result {
            Err(e) => Fate::Failed(format!("{e:#}")),
            Ok(u) if u.duplicate => Fate::Duplicate,
            Ok(u) => match &wait_bar {
                None => Fate::Queued,
                Some(b) => {
                    let fate = wait(daemon, u.id, &u.status).await;
                    b.inc(1);
                    fate
                }
            },
        };
        fates.push((path, fate));
    }
    if let Some(b) = wait_bar {
        b.finish_and_clear();
    }
    summarise(collection, &fates)
}

async fn upload(daemon: &Daemon, collection: &str, path: &Path) -> anyhow::Result<Uploaded> {
    let file = tokio::fs::File::open(path)
        .await
        .with_context(|| format!("cannot open {}", path.display()))?;
    let len = file.metadata().await?.len();
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_else(|| "unnamed".into());
    let body = reqwest::Body::wrap_stream(tokio_util::io::ReaderStream::new(file));
    let part = reqwest::multipart::Part::stream_with_length(body, len).file_name(name);
    let form = reqwest::multipart::Form::new().part("file", part);
    let resp = daemon
        .request(
            reqwest::Method::POST,
            &format!("/api/v1/collections/{collection}/documents"),
        )
        .multipart(form)
        .send()
        .await
        .context("the upload did not reach the daemon")?;
    answer(resp).await
}

/// Polls a document until it is indexed or failed.
async fn wait(daemon: &Daemon, id: i64, status: &str) -> Fate {
    let mut status = status.to_string();
    loop {
        match status.as_str() {
            "indexed" => return Fate::Indexed,
            "failed" => {}
            _ => {
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        }
        let resp = daemon
            .request(reqwest::Method::GET, &format!("/api/v1/documents/{id}"))
            .send()
            .await;
        let state: anyhow::Result<DocumentState> = match resp {
            Ok(r) => answer(r).await,
            Err(e) => Err(e.into()),
        };
        match state {
            Ok(s) if s.status == "failed" => {
                return Fate::Failed(s.error.map_or_else(
                    || "failed".to_string(),
                    |e| format!("{}: {}", e.reason, e.message),
                ));
            }
            Ok(s) => status = s.status,
            Err(e) => return Fate::Failed(format!("cannot follow document {id}: {e:#}")),
        }
    }
}

fn summarise(collection: &str, fates: &[(PathBuf, Fate)]) -> anyhow::Result<()> {
    let count = |f: fn(&Fate) -> bool| fates.iter().filter(|(_, x)| f(x)).count();
    let indexed = count(|f| matches!(f, Fate::Indexed));
    let queued = count(|f| matches!(f, Fate::Queued));
    let duplicates = count(|f| matches!(f, Fate::Duplicate));
    let failed: Vec<&(PathBuf, Fate)> = fates
        .iter()
        .filter(|(_, f)| matches!(f, Fate::Failed(_)))
        .collect();
    println!("collection {collection}:");
    if queued > 0 {
        println!("  queued:             {queued}");
    } else {
        println!("  indexed:            {indexed}");
    }
    println!("  skipped duplicates: {duplicates}");
    println!("  failed:             {}", failed.len());
    for (path, fate) in &failed {
        if let Fate::Failed(why) = fate {
            println!("    {}: {why}", path.display());
        }
    }
    if failed.is_empty() {
        Ok(())
    } else {
        bail!("{} of {} files failed", failed.len(), fates.len())
    }
}
