//! Crash safety, tested rather than argued: real documents are uploaded from several clients
//! while the daemon is killed with SIGKILL at random moments, again and again, and restarted on
//! the same data directory. Afterwards every acknowledged document is there once, indexed, its
//! original intact, its chunks in both indexes exactly once, and search finds it.
//!
//! `SPARKBRAIN_CRASH_SEED=<n>` repeats a run's kill and pacing schedule (the seed is printed).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use reqwest::blocking::{Client, multipart};
use serde_json::{Value, json};

use crate::common::{ADMIN_PASSWORD, Daemon, Setup};
use crate::util::shared;

/// Cranfield abstracts uploaded, each as its own .txt.
const DOCUMENTS: usize = 300;
/// Kills before the last, undisturbed run.
const MIN_KILLS: usize = 20;
/// Uploading client threads.
const CLIENTS: usize = 3;
/// Time the daemon runs (after it answers /healthz) before it is killed, in ms.
const UPTIME_MS: (u64, u64) = (300, 1500);
/// Pause of each client between two documents, in ms: spreads the uploads over the kills.
const PACE_MS: (u64, u64) = (0, 250);
/// Words of a document's abstract searched for it in text mode: its rarest run of words.
const PHRASE_WORDS: usize = 8;
/// Words of a document's opening searched for it in vector mode. Vector search compares
/// meaning: a short run of rare words is a keyword query, and the opening sentence or two say
/// what the document is about (a few Cranfield titles do not match their abstract, so the
/// title alone is not enough).
const OPENING_WORDS: usize = 24;
/// One document in this many is also looked for in vector mode.
const VECTOR_SAMPLE: usize = 10;
const COLLECTION: &str = "cranfield";
const STATUSES: [&str; 5] = ["queued", "extracting", "embedding", "indexed", "failed"];

/// A small deterministic generator (splitmix64): no dependency, repeatable from a seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn between(&mut self, (lo, hi): (u64, u64)) -> u64 {
        lo + self.next() % (hi - lo + 1)
    }
}

/// One Cranfield record as a document.
struct CranDoc {
    /// `.I` number.
    number: u32,
    /// Title, a blank line, the abstract.
    text: String,
    /// The abstract's words, in order.
    words: Vec<String>,
}

impl CranDoc {
    fn filename(&self) -> String {
        format!("cran-{:04}.txt", self.number)
    }
}

fn words(text: &str) -> Vec<String> {
    text.split(|c: char| !c.is_ascii_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
        .collect()
}

/// The first `n` Cranfield records with a real abstract, skipping exact duplicate texts.
fn cranfield(n: usize) -> Vec<CranDoc> {
    let path = shared().join("data/retrieval/cranfield/cran.all.1400");
    let raw = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e} (see ../shared/data/retrieval/README.md)",
            path.display()
        )
    });
    // (number, title, body)
    let mut records: Vec<(u32, String, String)> = Vec::new();
    let mut field = ' ';
    for line in raw.lines() {
        if let Some(number) = line.strip_prefix(".I ") {
            records.push((
                number.trim().parse().expect(".I number"),
                String::new(),
                String::new(),
            ));
            field = ' ';
            continue;
        }
        match line.trim_end() {
            ".T" => field = 'T',
            ".A" => field = 'A',
            ".B" => field = 'B',
            ".W" => field = 'W',
            _ => {
                let record = records.last_mut().expect("a field before the first .I");
                let into = match field {
                    'T' => &mut record.1,
                    'W' => &mut record.2,
                    _ => continue,
                };
                into.push_str(line.trim_end());
                into.push('\n');
            }
        }
    }
    let mut seen = HashSet::new();
    let mut docs = Vec::new();
    for (number, title, body) in records {
        let words = words(&body);
        if words.len() < OPENING_WORDS {
            continue;
        }
        let text = format!("{}\n\n{}", title.trim(), body.trim());
        if !seen.insert(text.clone()) {
            continue;
        }
        docs.push(CranDoc {
            number,
            text,
            words,
        });
        if docs.len() == n {
            break;
        }
    }
    assert_eq!(docs.len(), n, "Cranfield has fewer than {n} usable records");
    docs
}

/// For each document, the run of consecutive words of its abstract that is rarest across
/// all the documents (highest summed inverse document frequency).
fn phrases(docs: &[CranDoc]) -> Vec<String> {
    let mut df: HashMap<&str, usize> = HashMap::new();
    for d in docs {
        for w in d.words.iter().map(String::as_str).collect::<HashSet<_>>() {
            *df.entry(w).or_default() += 1;
        }
    }
    let n = docs.len() as f64;
    docs.iter()
        .map(|d| {
            let idf = |w: &String| (n / df[w.as_str()] as f64).ln();
            let best = d
                .words
                .windows(PHRASE_WORDS)
                .max_by(|a, b| {
                    let (sa, sb): (f64, f64) = (a.iter().map(idf).sum(), b.iter().map(idf).sum());
                    sa.total_cmp(&sb)
                })
                .expect("a window");
            best.join(" ")
        })
        .collect()
}

/// What an upload attempt got.
enum Answer {
    /// 202, or 200 with `duplicate: true`.
    Acked { id: i64, duplicate: bool },
    /// The request never reached a daemon (connection refused): nothing can have been stored.
    NotSent,
    /// 503: the daemon was starting (the knowledge base opening its indexes). An error answer
    /// promises nothing was stored.
    NotReady,
    /// The connection broke or timed out after the request may have been received: the file
    /// may or may not be stored.
    Unknown(String),
    /// Any other answer: a fault of the daemon.
    Wrong(u16, String),
}

fn upload(client: &Client, base: &str, key: &str, doc: &CranDoc) -> Answer {
    let part = multipart::Part::bytes(doc.text.clone().into_bytes())
        .file_name(doc.filename())
        .mime_str("text/plain")
        .expect("mime");
    let sent = client
        .post(format!("{base}/api/v1/collections/{COLLECTION}/documents"))
        .bearer_auth(key)
        .multipart(multipart::Form::new().part("file", part))
        .send();
    let resp = match sent {
        Ok(r) => r,
        Err(e) if e.is_connect() => return Answer::NotSent,
        Err(e) => return Answer::Unknown(e.to_string()),
    };
    let status = resp.status().as_u16();
    let text = match resp.text() {
        Ok(t) => t,
        Err(e) => return Answer::Unknown(format!("{status}, body lost: {e}")),
    };
    match status {
        202 | 200 => {
            let body: Value = match serde_json::from_str(&text) {
                Ok(v) => v,
                Err(e) => return Answer::Wrong(status, format!("not JSON ({e}): {text}")),
            };
            let (Some(id), Some(duplicate)) = (body["id"].as_i64(), body["duplicate"].as_bool())
            else {
                return Answer::Wrong(status, text);
            };
            if duplicate != (status == 200) {
                return Answer::Wrong(status, format!("duplicate is {duplicate}: {text}"));
            }
            Answer::Acked { id, duplicate }
        }
        503 => Answer::NotReady,
        _ => Answer::Wrong(status, text),
    }
}

/// An acknowledged upload.
#[derive(Debug, Clone)]
struct Ack {
    doc: usize,
    id: i64,
    duplicate: bool,
    /// Earlier attempts of this document whose outcome is unknown.
    unknown_before: usize,
}

/// What the clients share with the test.
struct Shared {
    queue: Mutex<Vec<usize>>,
    acks: Mutex<Vec<Ack>>,
    /// Answers that are faults (request, status, body).
    wrong: Mutex<Vec<String>>,
    in_flight: AtomicUsize,
    acked: AtomicUsize,
    /// Attempts repeated because the connection was refused (daemon down).
    refused: AtomicUsize,
    /// Attempts repeated because the daemon answered 503 (starting).
    not_ready: AtomicUsize,
    /// Attempts repeated because the answer was lost (outcome unknown).
    lost: AtomicUsize,
    /// One example of each kind of lost answer.
    lost_examples: Mutex<BTreeMap<String, String>>,
}

fn client() -> Client {
    Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(30))
        .build()
        .expect("client")
}

fn run_client(shared: Arc<Shared>, docs: Arc<Vec<CranDoc>>, base: String, key: String, seed: u64) {
    let mut rng = Rng(seed);
    let client = client();
    loop {
        let Some(i) = shared.queue.lock().unwrap().pop() else {
            return;
        };
        let mut unknown = 0;
        loop {
            shared.in_flight.fetch_add(1, Ordering::SeqCst);
            let answer = upload(&client, &base, &key, &docs[i]);
            shared.in_flight.fetch_sub(1, Ordering::SeqCst);
            match answer {
                Answer::Acked { id, duplicate } => {
                    shared.acks.lock().unwrap().push(Ack {
                        doc: i,
                        id,
                        duplicate,
                        unknown_before: unknown,
                    });
                    shared.acked.fetch_add(1, Ordering::SeqCst);
                    break;
                }
                Answer::NotSent => {
                    shared.refused.fetch_add(1, Ordering::SeqCst);
                }
                Answer::NotReady => {
                    shared.not_ready.fetch_add(1, Ordering::SeqCst);
                }
                Answer::Unknown(why) => {
                    unknown += 1;
                    shared.lost.fetch_add(1, Ordering::SeqCst);
                    let kind: String = why.chars().take(3).collect();
                    shared
                        .lost_examples
                        .lock()
                        .unwrap()
                        .entry(kind)
                        .or_insert(why);
                }
                Answer::Wrong(status, body) => {
                    shared
                        .wrong
                        .lock()
                        .unwrap()
                        .push(format!("upload of {}: {status} {body}", docs[i].filename()));
                    unknown += 1;
                    std::thread::sleep(Duration::from_millis(200));
                }
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        std::thread::sleep(Duration::from_millis(rng.between(PACE_MS)));
    }
}

/// The collection as the API shows it, if the daemon answers.
fn collection(client: &Client, base: &str, key: &str) -> Result<Value, String> {
    let resp = client
        .get(format!("{base}/api/v1/collections/{COLLECTION}"))
        .bearer_auth(key)
        .send()
        .map_err(|e| e.to_string())?;
    let status = resp.status();
    let text = resp.text().map_err(|e| e.to_string())?;
    if status != 200 {
        return Err(format!("{status} {text}"));
    }
    serde_json::from_str(&text).map_err(|e| format!("{e}: {text}"))
}

/// Non-zero statuses of a collection, e.g. `queued=3 embedding=1 indexed=40`.
fn statuses(c: &Value) -> String {
    STATUSES
        .iter()
        .filter_map(|s| {
            let n = c["counts"]["by_status"][*s].as_i64().unwrap_or(0);
            (n > 0).then(|| format!("{s}={n}"))
        })
        .collect::<Vec<_>>()
        .join(" ")
}

fn in_progress(c: &Value) -> i64 {
    ["queued", "extracting", "embedding"]
        .iter()
        .map(|s| c["counts"]["by_status"][*s].as_i64().unwrap_or(0))
        .sum()
}

/// What the daemon was doing when it was killed.
struct Kill {
    uptime_ms: u64,
    in_flight: usize,
    acked: usize,
    seen: Result<Value, String>,
}

fn kill(daemon: &mut Daemon) {
    let pid = nix::unistd::Pid::from_raw(daemon.child.id() as i32);
    // If the daemon had died on its own, it is a zombie now and this still succeeds; its exit
    // status below tells.
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL).expect("SIGKILL");
    let status = daemon.child.wait().expect("wait");
    assert_eq!(
        status.signal(),
        Some(9),
        "the daemon had exited on its own ({status}) before it was killed; log:\n{}",
        daemon.logs()
    );
}

/// Lines of a daemon log that tell of a panic.
fn panics(log: &PathBuf) -> Vec<String> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains("panicked") || l.contains("RUST_BACKTRACE"))
        .map(str::to_string)
        .collect()
}

#[test]
fn acknowledged_documents_survive_repeated_sigkill() {
    let started = Instant::now();
    let seed = std::env::var("SPARKBRAIN_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(1)
        });
    println!("seed {seed} (SPARKBRAIN_CRASH_SEED={seed} repeats the schedule)");
    let mut rng = Rng(seed);
    let docs = Arc::new(cranfield(DOCUMENTS));
    let phrases = phrases(&docs);

    // The vector index is saved (and the change log compacted) every second rather than every
    // minute, so kills also fall during saves and restarts start from saved indexes.
    let setup = Setup::new().with("[kb]\nindex_save_interval_seconds = 1");
    setup.write_config(None);
    setup.add_user("admin", "admin", ADMIN_PASSWORD);
    setup.add_user("alice", "editor", "alice-password-1");
    let mut daemon = setup.start();
    daemon.wait_ready();
    let base = daemon.base.clone();
    let http = client();

    // One API key, used across every restart.
    let token = daemon.token("alice", "alice-password-1");
    let resp = http
        .post(daemon.url("/api/v1/keys"))
        .bearer_auth(&token)
        .json(&json!({"name": "crash-test"}))
        .send()
        .expect("create key");
    assert_eq!(resp.status(), 201);
    let key = resp.json::<Value>().unwrap()["key"]
        .as_str()
        .expect("key")
        .to_string();
    let resp = http
        .post(daemon.url("/api/v1/collections"))
        .bearer_auth(&key)
        .json(&json!({"name": COLLECTION}))
        .send()
        .expect("create collection");
    assert_eq!(resp.status(), 201, "{}", resp.text().unwrap_or_default());

    let shared = Arc::new(Shared {
        // Popped from the end: upload in Cranfield order.
        queue: Mutex::new((0..docs.len()).rev().collect()),
        acks: Mutex::new(Vec::new()),
        wrong: Mutex::new(Vec::new()),
        in_flight: AtomicUsize::new(0),
        acked: AtomicUsize::new(0),
        refused: AtomicUsize::new(0),
        not_ready: AtomicUsize::new(0),
        lost: AtomicUsize::new(0),
        lost_examples: Mutex::new(BTreeMap::new()),
    });
    let clients: Vec<_> = (0..CLIENTS)
        .map(|n| {
            let (shared, docs, base, key) =
                (shared.clone(), docs.clone(), base.clone(), key.clone());
            let seed = seed ^ (n as u64 + 1).wrapping_mul(0xA24B_AED4_963E_E407);
            std::thread::spawn(move || run_client(shared, docs, base, key, seed))
        })
        .collect();

    // Kill at random moments until enough kills happened and every document is acknowledged.
    let mut logs = vec![daemon.log.clone()];
    let mut kills: Vec<Kill> = Vec::new();
    let probe = Client::builder()
        .no_proxy()
        .timeout(Duration::from_millis(500))
        .build()
        .unwrap();
    while kills.len() < MIN_KILLS || shared.acked.load(Ordering::SeqCst) < docs.len() {
        let uptime_ms = rng.between(UPTIME_MS);
        std::thread::sleep(Duration::from_millis(uptime_ms));
        let seen = collection(&probe, &base, &key);
        let (in_flight, acked) = (
            shared.in_flight.load(Ordering::SeqCst),
            shared.acked.load(Ordering::SeqCst),
        );
        kill(&mut daemon);
        kills.push(Kill {
            uptime_ms,
            in_flight,
            acked,
            seen,
        });
        daemon = setup.start();
        logs.push(daemon.log.clone());
        assert!(
            started.elapsed() < Duration::from_secs(300),
            "{} kills in {:?} and only {acked} of {} documents acknowledged; wrong answers: {:?}\nlog:\n{}",
            kills.len(),
            started.elapsed(),
            docs.len(),
            shared.wrong.lock().unwrap(),
            daemon.logs()
        );
    }
    let kill_phase = started.elapsed();
    println!(
        "{} kills in {:?}, while {} documents were uploaded:",
        kills.len(),
        kill_phase,
        docs.len()
    );
    let mut tally: BTreeMap<&str, usize> = BTreeMap::new();
    for (n, k) in kills.iter().enumerate() {
        let seen = match &k.seen {
            Ok(c) => {
                for s in ["queued", "extracting", "embedding"] {
                    if c["counts"]["by_status"][s].as_i64().unwrap_or(0) > 0 {
                        *tally.entry(s).or_default() += 1;
                    }
                }
                let index = &c["index"];
                if index["vectors"].as_i64() != c["counts"]["chunks"].as_i64() {
                    *tally.entry("index behind").or_default() += 1;
                }
                if index["saved_change"].as_i64() < index["applied_change"].as_i64() {
                    *tally.entry("vector save behind").or_default() += 1;
                }
                format!(
                    "{} | chunks {} vectors {} text {} applied {} saved {}",
                    statuses(c),
                    c["counts"]["chunks"],
                    index["vectors"],
                    index["text_chunks"],
                    index["applied_change"],
                    index["saved_change"]
                )
            }
            Err(e) => {
                *tally.entry("not ready").or_default() += 1;
                format!("not answering: {}", e.chars().take(100).collect::<String>())
            }
        };
        if k.in_flight > 0 {
            *tally.entry("upload in flight").or_default() += 1;
        }
        println!(
            "  kill {:2} after {:4} ms: {} uploads in flight, {:3} acknowledged; {seen}",
            n + 1,
            k.uptime_ms,
            k.in_flight,
            k.acked
        );
    }
    println!("kills that fell with: {tally:?}");
    println!(
        "upload attempts repeated: {} refused connections, {} answered 503 (starting), {} answers lost {:?}",
        shared.refused.load(Ordering::SeqCst),
        shared.not_ready.load(Ordering::SeqCst),
        shared.lost.load(Ordering::SeqCst),
        shared
            .lost_examples
            .lock()
            .unwrap()
            .values()
            .collect::<Vec<_>>(),
    );

    // The last run: nobody kills it. Ingestion is CPU-bound (the embedding model), so the
    // wait is bounded by progress, not by a fixed time: it fails when no document changes
    // status for a minute.
    daemon.wait_ready();
    for c in clients {
        c.join().expect("client thread");
    }
    let mut last = (String::new(), Instant::now());
    let settled = loop {
        let c = collection(&http, &base, &key).expect("collection");
        if in_progress(&c) == 0 {
            break c;
        }
        let now = statuses(&c);
        if now != last.0 {
            last = (now, Instant::now());
        }
        assert!(
            last.1.elapsed() < Duration::from_secs(60),
            "no progress for 60 s after the last restart: {}\nlog:\n{}",
            last.0,
            daemon.logs()
        );
        std::thread::sleep(Duration::from_millis(250));
    };
    println!(
        "{:?} for the last run to settle: {}",
        started.elapsed() - kill_phase,
        statuses(&settled)
    );

    // Answers that were faults.
    let wrong = shared.wrong.lock().unwrap().clone();
    assert!(
        wrong.is_empty(),
        "the daemon gave wrong answers to uploads:\n{}",
        wrong.join("\n")
    );

    // Each document acknowledged once, under its own id; a duplicate answer only after an
    // attempt whose answer was lost.
    let acks = shared.acks.lock().unwrap().clone();
    assert_eq!(acks.len(), docs.len());
    let mut by_id: HashMap<i64, usize> = HashMap::new();
    for a in &acks {
        if let Some(other) = by_id.insert(a.id, a.doc) {
            panic!(
                "{} and {} were both acknowledged as document {}",
                docs[other].filename(),
                docs[a.doc].filename(),
                a.id
            );
        }
        assert!(
            !a.duplicate || a.unknown_before > 0,
            "{} was answered as a duplicate (document {}) though no earlier upload of it can have been stored",
            docs[a.doc].filename(),
            a.id
        );
    }
    let duplicates = acks.iter().filter(|a| a.duplicate).count();
    println!(
        "{duplicates} documents acknowledged as duplicates of an upload whose answer the kill lost"
    );

    // Every acknowledged document is there, indexed, and nothing else is.
    let mut listed: Vec<Value> = Vec::new();
    let mut after = 0;
    loop {
        let page: Value = http
            .get(format!(
                "{base}/api/v1/collections/{COLLECTION}/documents?limit=1000&after={after}"
            ))
            .bearer_auth(&key)
            .send()
            .expect("list")
            .json()
            .expect("list json");
        listed.extend(
            page["documents"]
                .as_array()
                .expect("documents")
                .iter()
                .cloned(),
        );
        match page["next_after"].as_i64() {
            Some(a) => after = a,
            None => break,
        }
    }
    let listed_ids: Vec<i64> = listed.iter().map(|d| d["id"].as_i64().unwrap()).collect();
    assert_eq!(
        listed_ids.iter().collect::<HashSet<_>>().len(),
        listed_ids.len(),
        "a document is listed twice"
    );
    let missing: Vec<String> = acks
        .iter()
        .filter(|a| !listed_ids.contains(&a.id))
        .map(|a| format!("{} (document {})", docs[a.doc].filename(), a.id))
        .collect();
    assert!(
        missing.is_empty(),
        "acknowledged documents lost: {missing:?}"
    );
    let extra: Vec<&Value> = listed
        .iter()
        .filter(|d| !by_id.contains_key(&d["id"].as_i64().unwrap()))
        .collect();
    assert!(
        extra.is_empty(),
        "documents nobody was told about: {extra:?}"
    );
    assert_eq!(settled["counts"]["documents"], docs.len(), "{settled}");
    let not_indexed: Vec<&Value> = listed.iter().filter(|d| d["status"] != "indexed").collect();
    assert!(
        not_indexed.is_empty(),
        "documents not indexed: {not_indexed:#?}"
    );
    for d in &listed {
        let doc = &docs[by_id[&d["id"].as_i64().unwrap()]];
        assert_eq!(d["filename"], doc.filename().as_str(), "{d}");
        assert!(d["chunks"].as_i64().unwrap() >= 1, "{d}");
    }

    // The originals are intact.
    for a in &acks {
        let body = http
            .get(format!("{base}/api/v1/documents/{}/content", a.id))
            .bearer_auth(&key)
            .send()
            .expect("content")
            .bytes()
            .expect("content bytes");
        assert!(
            body.as_ref() == docs[a.doc].text.as_bytes(),
            "the original of {} differs",
            docs[a.doc].filename()
        );
    }

    // No chunk twice, no orphan index entry: documents' chunks == stored chunks == both indexes.
    // The index applier may still be replaying the last changes; give it a moment.
    let chunks: i64 = listed.iter().map(|d| d["chunks"].as_i64().unwrap()).sum();
    let deadline = Instant::now() + Duration::from_secs(60);
    let c = loop {
        let c = collection(&http, &base, &key).expect("collection");
        let index = &c["index"];
        if c["counts"]["chunks"] == chunks
            && index["vectors"] == chunks
            && index["text_chunks"] == chunks
        {
            break c;
        }
        assert!(
            Instant::now() < deadline,
            "documents hold {chunks} chunks; the collection says counts.chunks {}, index {}\nlog:\n{}",
            c["counts"]["chunks"],
            index,
            daemon.logs()
        );
        std::thread::sleep(Duration::from_millis(250));
    };
    println!("{chunks} chunks, index {}", c["index"]);

    // Search finds each document by a phrase of its text: all in text mode, a sample by vector.
    let mut not_found = Vec::new();
    let mut searches = 0;
    for (a, mode) in acks.iter().flat_map(|a| {
        let vector = a.doc % VECTOR_SAMPLE == 0;
        std::iter::once((a, "text")).chain(vector.then_some((a, "vector")))
    }) {
        searches += 1;
        let query = match mode {
            "text" => phrases[a.doc].clone(),
            _ => docs[a.doc].words[..OPENING_WORDS].join(" "),
        };
        let resp = http
            .post(format!("{base}/api/v1/search"))
            .bearer_auth(&key)
            .json(&json!({"query": query, "collections": [COLLECTION], "mode": mode, "top_k": 10}))
            .send()
            .expect("search");
        assert_eq!(resp.status(), 200);
        let hits: Value = resp.json().unwrap();
        let found: Vec<i64> = hits["hits"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|h| h["document"].as_i64())
            .collect();
        if !found.contains(&a.id) {
            not_found.push(format!(
                "{mode} {query:?} -> {} (document {}) not in {found:?}",
                docs[a.doc].filename(),
                a.id
            ));
        }
    }
    println!("{searches} searches found their document in the top 10");
    assert!(
        not_found.is_empty(),
        "search misses {} documents:\n{}",
        not_found.len(),
        not_found.join("\n")
    );

    // No run panicked, killed or not.
    let panicked: Vec<String> = logs
        .iter()
        .flat_map(|l| {
            panics(l)
                .into_iter()
                .map(move |p| format!("{}: {p}", l.display()))
        })
        .collect();
    assert!(
        panicked.is_empty(),
        "the daemon panicked:\n{}",
        panicked.join("\n")
    );
    println!(
        "{} daemon runs, no panic; took {:?}",
        logs.len(),
        started.elapsed()
    );
}
