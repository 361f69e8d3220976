//! Helpers shared by the daemon tests: bounded child processes, raw HTTP, log cleanup.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::process::{Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

use crate::common::Daemon;

/// Runs `cmd` to completion with `input` on stdin, killing it (and failing the test) after
/// `limit`, so that a command which unexpectedly starts serving cannot hang the suite.
pub fn run_limited_input(cmd: &mut Command, input: Option<&[u8]>, limit: Duration) -> Output {
    let mut child = cmd
        .stdin(if input.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot spawn {cmd:?}: {e}"));
    if let Some(input) = input {
        let mut stdin = child.stdin.take().expect("stdin");
        let input = input.to_vec();
        std::thread::spawn(move || {
            let _ = stdin.write_all(&input);
        });
    }
    let mut out = child.stdout.take().expect("stdout");
    let mut err = child.stderr.take().expect("stderr");
    let out_reader = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = out.read_to_end(&mut v);
        v
    });
    let err_reader = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = err.read_to_end(&mut v);
        v
    });
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            let stdout = out_reader.join().unwrap_or_default();
            let stderr = err_reader.join().unwrap_or_default();
            panic!(
                "{cmd:?} did not finish in {limit:?}\nstdout:\n{}\nstderr:\n{}",
                String::from_utf8_lossy(&stdout),
                String::from_utf8_lossy(&stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Output {
        status,
        stdout: out_reader.join().expect("stdout reader"),
        stderr: err_reader.join().expect("stderr reader"),
    }
}

/// As [`run_limited_input`] with nothing on stdin.
pub fn run_limited(cmd: &mut Command, limit: Duration) -> Output {
    run_limited_input(cmd, None, limit)
}

pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Removes ANSI colour sequences: the terminal log format colours field names even when stderr
/// is a file.
pub fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' && chars.peek() == Some(&'[') {
            chars.next();
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// The daemon's log without colour codes.
pub fn logs(daemon: &Daemon) -> String {
    strip_ansi(&daemon.logs())
}

pub fn loopback(port: u16) -> SocketAddr {
    SocketAddr::from((Ipv4Addr::LOCALHOST, port))
}

/// Whether a fresh TCP connection to the loopback port is refused.
pub fn connection_refused(port: u16) -> bool {
    match TcpStream::connect_timeout(&loopback(port), Duration::from_secs(2)) {
        Ok(_) => false,
        Err(e) => e.kind() == std::io::ErrorKind::ConnectionRefused,
    }
}

/// Reads one HTTP/1.1 response (headers, then a `Content-Length` body or until EOF). Returns
/// the raw text.
pub fn read_http_response(stream: &mut TcpStream) -> String {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(end) = find(&buf, b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
            let length = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse::<usize>().ok());
            if let Some(length) = length
                && buf.len() >= end + 4 + length
            {
                break;
            }
        }
        match stream.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) => panic!(
                "reading the response failed ({e}); got so far: {:?}",
                String::from_utf8_lossy(&buf)
            ),
        }
    }
    String::from_utf8_lossy(&buf).into_owned()
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Polls `/readyz` until `done(status, body)` holds (30 s at most) and returns the last answer.
pub fn poll_readyz(
    daemon: &Daemon,
    done: impl Fn(u16, &serde_json::Value) -> bool,
) -> (u16, serde_json::Value) {
    let client = daemon.client();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let resp = client.get(daemon.url("/readyz")).send().expect("readyz");
        let status = resp.status().as_u16();
        let body: serde_json::Value = resp.json().expect("readyz json");
        if done(status, &body) || Instant::now() >= deadline {
            return (status, body);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The `reasons` array of a `/readyz` body as strings.
pub fn reasons(body: &serde_json::Value) -> Vec<String> {
    body["reasons"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|r| r.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// Sends SIGTERM and waits for a clean exit (status 0) within `limit`.
pub fn stop(daemon: &mut Daemon, limit: Duration) -> ExitStatus {
    daemon.terminate();
    let status = daemon.wait_exit(limit);
    assert_eq!(
        status.code(),
        Some(0),
        "daemon did not exit cleanly ({status}); log:\n{}",
        logs(daemon)
    );
    status
}
