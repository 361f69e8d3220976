//! Running [`extract`] in a child process with time and memory bounds.
//!
//! Parsers of hostile files can loop, allocate without bound (a PDF's compressed streams are
//! not limited by [`Limits`]) or crash. The daemon therefore runs `sparkbrain __extract` as a
//! child with an address-space limit and no core dumps, reads one JSON line from its stdout,
//! and kills it when the deadline passes. Whatever happens to the child becomes an
//! [`ExtractError`]; nothing here panics or takes the daemon down.
//!
//! The protocol (arguments in, one line out) lives in this one file, so parent and child cannot
//! drift apart.

use std::io::{Read, Write};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::{Document, ExtractError, FailureReason, Format, Limits, extract, human_bytes};

/// The hidden subcommand's arguments (`sparkbrain __extract --format F --limits-json J PATH`).
#[derive(Debug, clap::Args)]
pub struct ChildArgs {
    /// Format from sniffing: pdf, docx, odt, epub, html, markdown or text.
    #[arg(long)]
    pub format: String,
    /// The [`Limits`] as JSON.
    #[arg(long = "limits-json")]
    pub limits_json: String,
    /// The file to read.
    pub path: PathBuf,
}

/// The child's one line of output.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
enum Reply {
    /// Extraction succeeded.
    Ok(Document),
    /// Extraction failed for the given reason.
    Err(ExtractError),
}

/// Runs in the child: extracts and prints the reply line. Touches neither configuration nor the
/// data directory.
pub fn child_main(args: ChildArgs) -> anyhow::Result<()> {
    let reply = match (
        Format::parse(&args.format),
        serde_json::from_str::<Limits>(&args.limits_json),
    ) {
        (Some(format), Ok(limits)) => match extract(&args.path, format, &limits) {
            Ok(doc) => Reply::Ok(doc),
            Err(err) => Reply::Err(err),
        },
        (None, _) => anyhow::bail!("unknown format {:?}", args.format),
        (_, Err(err)) => anyhow::bail!("invalid --limits-json: {err}"),
    };
    let mut out = std::io::stdout().lock();
    serde_json::to_writer(&mut out, &reply)?;
    out.write_all(b"\n")?;
    out.flush()?;
    Ok(())
}

/// Captured stderr beyond this is dropped (panic messages and allocation failures are short).
const STDERR_KEEP: usize = 16 * 1024;

/// Extracts `path` in a child process running `exe __extract`, bounded by `timeout` (wall
/// clock) and `memory_bytes` (address space).
///
/// `exe` is normally `std::env::current_exe()`. Blocks the calling thread until the child is
/// done; call it from a blocking-capable thread (e.g. `tokio::task::spawn_blocking`). Should
/// the daemon die meanwhile, the child gets SIGKILL (`PR_SET_PDEATHSIG` fires when the thread
/// that spawned it exits, and that thread waits here until the child is gone).
pub fn extract_isolated(
    exe: &Path,
    path: &Path,
    format: Format,
    limits: &Limits,
    timeout: Duration,
    memory_bytes: u64,
) -> Result<Document, ExtractError> {
    let limits_json = serde_json::to_string(limits)
        .map_err(|e| internal(format!("could not encode the limits: {e}")))?;
    let parent = nix::unistd::getpid();
    // CPU time is a backstop should the wall-clock kill below never happen (it is the parent
    // that enforces the deadline).
    let cpu_seconds = timeout.as_secs().saturating_add(5);
    let mut command = Command::new(exe);
    command
        .arg("__extract")
        .arg("--format")
        .arg(format.as_str())
        .arg("--limits-json")
        .arg(&limits_json)
        .arg("--")
        .arg(path)
        // The child parses untrusted bytes: it gets no environment (no secrets, no config
        // overrides) and no stdin.
        .env_clear()
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    // SAFETY: the closure runs between fork and exec and only makes async-signal-safe system
    // calls (setrlimit, prctl, getppid); it allocates nothing.
    unsafe {
        command.pre_exec(move || {
            use nix::sys::resource::{Resource, setrlimit};
            setrlimit(Resource::RLIMIT_AS, memory_bytes, memory_bytes)?;
            setrlimit(Resource::RLIMIT_CORE, 0, 0)?;
            setrlimit(Resource::RLIMIT_CPU, cpu_seconds, cpu_seconds)?;
            nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL)?;
            // The parent may have died before the death signal was armed.
            if nix::unistd::getppid() != parent {
                return Err(std::io::Error::other("parent exited"));
            }
            Ok(())
        });
    }
    let mut child = command.spawn().map_err(|e| {
        internal(format!(
            "could not start the extractor {}: {e}",
            exe.display()
        ))
    })?;

    // Read both pipes on their own threads so a chatty child never blocks on a full pipe
    // while we wait for it.
    let stdout_limit = limits
        .max_text_bytes
        .saturating_mul(8)
        .saturating_add(1 << 20);
    let stdout = child.stdout.take().map(|pipe| {
        std::thread::spawn(move || -> std::io::Result<Vec<u8>> {
            let mut out = Vec::new();
            pipe.take(stdout_limit).read_to_end(&mut out)?;
            Ok(out)
        })
    });
    let stderr = child.stderr.take().map(|pipe| {
        std::thread::spawn(move || -> Vec<u8> {
            let mut kept = Vec::new();
            let mut reader = std::io::BufReader::new(pipe);
            let mut buf = [0u8; 4096];
            while let Ok(n) = reader.read(&mut buf) {
                if n == 0 {
                    break;
                }
                // Keep the tail: the fatal message comes last.
                kept.extend_from_slice(&buf[..n]);
                if kept.len() > STDERR_KEEP {
                    kept.drain(..kept.len() - STDERR_KEEP);
                }
            }
            kept
        })
    });

    let deadline = Instant::now() + timeout;
    let mut pause = Duration::from_millis(1);
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) => {}
            Err(e) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(internal(format!("lost track of the extractor: {e}")));
            }
        }
        let now = Instant::now();
        if now >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            // Reap the reader threads; the pipes closed with the child.
            let _ = stdout.map(std::thread::JoinHandle::join);
            let _ = stderr.map(std::thread::JoinHandle::join);
            return Err(ExtractError::new(
                FailureReason::Timeout,
                format!(
                    "extraction took longer than {} s and was stopped",
                    seconds(timeout)
                ),
            ));
        }
        // Polling keeps this free of signal handling; the pause grows so long extractions cost
        // little, and short ones return within a few milliseconds.
        std::thread::sleep(pause.min(deadline - now));
        pause = (pause * 2).min(Duration::from_millis(50));
    };
    let out = stdout
        .and_then(|h| h.join().ok())
        .and_then(Result::ok)
        .unwrap_or_default();
    let err = stderr.and_then(|h| h.join().ok()).unwrap_or_default();
    let err = String::from_utf8_lossy(&err);

    if status.success() {
        // The reply is the last line: anything a library printed before it is ignored.
        let line = out
            .split(|&b| b == b'\n')
            .rev()
            .find(|l| !l.is_empty())
            .unwrap_or_default();
        return match serde_json::from_slice::<Reply>(line) {
            Ok(Reply::Ok(doc)) => Ok(doc),
            Ok(Reply::Err(err)) => Err(err),
            Err(e) => Err(internal(format!(
                "the extractor's reply could not be read ({e}); {} bytes",
                out.len()
            ))),
        };
    }
    Err(failure(status, &err, timeout, memory_bytes))
}

/// Explains a child that did not exit cleanly.
fn failure(
    status: std::process::ExitStatus,
    stderr: &str,
    timeout: Duration,
    memory_bytes: u64,
) -> ExtractError {
    let out_of_memory = stderr.contains("memory allocation of") || stderr.contains("out of memory");
    let memory = human_bytes(memory_bytes);
    if out_of_memory {
        return ExtractError::new(
            FailureReason::TooLarge,
            format!("extracting the document needs more than {memory} of memory"),
        );
    }
    if let Some(signal) = status.signal() {
        use nix::sys::signal::Signal;
        let name = Signal::try_from(signal)
            .map_or_else(|_| format!("signal {signal}"), |s| s.as_str().to_string());
        return match Signal::try_from(signal) {
            // Nobody else kills our child: the kernel's OOM killer did.
            Ok(Signal::SIGKILL) => ExtractError::new(
                FailureReason::TooLarge,
                format!(
                    "the extractor was killed (SIGKILL), most likely for running out of memory (limit {memory})"
                ),
            ),
            Ok(Signal::SIGXCPU) => ExtractError::new(
                FailureReason::Timeout,
                format!(
                    "extraction used more than {} s of CPU time and was stopped",
                    seconds(timeout) + 5
                ),
            ),
            Ok(Signal::SIGSEGV | Signal::SIGBUS) if stderr.contains("overflowed its stack") => {
                ExtractError::new(
                    FailureReason::Corrupt,
                    "the document is nested too deeply to read (the extractor overflowed its stack)",
                )
            }
            _ => ExtractError::new(
                FailureReason::Corrupt,
                format!(
                    "the extractor crashed ({name}) on this file{}",
                    last_line(stderr)
                        .map(|l| format!(": {l}"))
                        .unwrap_or_default()
                ),
            ),
        };
    }
    let code = status.code().unwrap_or(-1);
    if code == 101 {
        // Rust's exit status for a panic that escaped.
        return ExtractError::new(
            FailureReason::Corrupt,
            format!(
                "the extractor failed on this file{}",
                panic_line(stderr)
                    .map(|l| format!(": {l}"))
                    .unwrap_or_default()
            ),
        );
    }
    internal(format!(
        "the extractor exited with status {code}{}",
        last_line(stderr)
            .map(|l| format!(": {l}"))
            .unwrap_or_default()
    ))
}

fn internal(message: String) -> ExtractError {
    ExtractError::new(FailureReason::Internal, message)
}

fn seconds(d: Duration) -> u64 {
    d.as_secs_f64().ceil() as u64
}

fn last_line(stderr: &str) -> Option<&str> {
    stderr.lines().rev().map(str::trim).find(|l| !l.is_empty())
}

/// The message line after "thread '…' panicked at file:line:".
fn panic_line(stderr: &str) -> Option<&str> {
    let mut lines = stderr.lines();
    while let Some(line) = lines.next() {
        if line.contains("panicked at") {
            return lines.next().map(str::trim).filter(|l| !l.is_empty());
        }
    }
    last_line(stderr)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_round_trip() {
        let ok = Reply::Ok(Document {
            title: None,
            pages: None,
            blocks: vec![],
        });
        let line = serde_json::to_string(&ok).unwrap();
        assert!(line.starts_with("{\"ok\":"), "{line}");
        let err = Reply::Err(ExtractError::new(FailureReason::NoText, "empty"));
        let line = serde_json::to_string(&err).unwrap();
        assert_eq!(line, r#"{"err":{"reason":"no_text","message":"empty"}}"#);
    }

    #[test]
    fn missing_executable_is_an_internal_error() {
        let err = extract_isolated(
            Path::new("/nonexistent/sparkbrain"),
            Path::new("/dev/null"),
            Format::Text,
            &Limits::default(),
            Duration::from_secs(1),
            1 << 30,
        )
        .unwrap_err();
        assert_eq!(err.reason, FailureReason::Internal);
    }

    #[test]
    fn deaths_are_explained() {
        use std::process::ExitStatus;
        let t = Duration::from_secs(30);
        // Raw wait statuses: a signal number alone means "killed by that signal".
        let segv = failure(ExitStatus::from_raw(11), "", t, 1 << 30);
        assert_eq!(segv.reason, FailureReason::Corrupt);
        assert!(segv.message.contains("SIGSEGV"), "{segv}");
        let oom = failure(
            ExitStatus::from_raw(6),
            "memory allocation of 1073741824 bytes failed\n",
            t,
            1 << 30,
        );
        assert_eq!(oom.reason, FailureReason::TooLarge);
        assert!(oom.message.contains("1024 MiB"), "{oom}");
        let killed = failure(ExitStatus::from_raw(9), "", t, 1 << 30);
        assert_eq!(killed.reason, FailureReason::TooLarge);
        let cpu = failure(ExitStatus::from_raw(24), "", t, 1 << 30);
        assert_eq!(cpu.reason, FailureReason::Timeout);
        let panicked = failure(
            ExitStatus::from_raw(101 << 8),
            "thread 'main' panicked at src/x.rs:1:1:\nindex out of bounds\n",
            t,
            1 << 30,
        );
        assert_eq!(panicked.reason, FailureReason::Corrupt);
        assert!(
            panicked.message.ends_with("index out of bounds"),
            "{panicked}"
        );
        let usage = failure(ExitStatus::from_raw(2 << 8), "error: bad flag", t, 1 << 30);
        assert_eq!(usage.reason, FailureReason::Internal);
    }
}
