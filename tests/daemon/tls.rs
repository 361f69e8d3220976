//! TLS on non-loopback binds: TLS 1.3 only, a self-signed certificate that survives restarts,
//! and `sparkbrain status` pinning it.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::Duration;

use crate::common::{Daemon, Setup};
use crate::support::{logs, loopback, run_limited, run_limited_input, stderr, stdout, stop};

fn s_client(port: u16, extra: &[&str]) -> std::process::Output {
    let mut cmd = Command::new("openssl");
    cmd.args(["s_client", "-connect", &format!("127.0.0.1:{port}")])
        .args(extra);
    run_limited(&mut cmd, Duration::from_secs(20))
}

/// SHA-256 fingerprint of the certificate the daemon serves, as openssl computes it.
fn served_fingerprint(port: u16) -> String {
    let out = s_client(port, &["-showcerts"]);
    assert!(out.status.success(), "s_client failed: {}", stderr(&out));
    let mut x509 = Command::new("openssl");
    x509.args(["x509", "-noout", "-fingerprint", "-sha256"]);
    let fp = run_limited_input(&mut x509, Some(&out.stdout), Duration::from_secs(20));
    assert!(fp.status.success(), "x509 failed: {}", stderr(&fp));
    // "sha256 Fingerprint=AA:BB:…" (the prefix's case differs between openssl versions).
    let text = stdout(&fp);
    text.trim()
        .split_once('=')
        .map(|(_, f)| f.to_string())
        .unwrap_or_else(|| panic!("unexpected x509 output {text:?}"))
}

/// `sparkbrain status --json` for the setup.
fn status_json(setup: &Setup) -> serde_json::Value {
    let out = run_limited(
        setup.command().args(["status", "--json"]),
        Duration::from_secs(20),
    );
    assert!(out.status.success(), "status failed: {}", stderr(&out));
    serde_json::from_slice(&out.stdout).expect("status --json output")
}

fn start_ready(setup: &Setup) -> Daemon {
    let daemon = setup.start();
    assert!(daemon.base.starts_with("https://"), "{}", daemon.base);
    daemon.wait_ready();
    daemon
}

#[test]
fn only_tls_1_3_is_offered() {
    let setup = Setup::new().tls();
    setup.write_config(None);
    let _daemon = start_ready(&setup);

    // A TLS 1.2-only client: the server answers with a protocol_version alert. s_client still
    // prints an "SSL-Session" block with "Protocol : TLSv1.2" (what it offered), so the
    // assertion looks at the exit status, the alert and the negotiated-cipher line instead.
    let old = s_client(setup.port, &["-tls1_2"]);
    let text = format!("{}{}", stdout(&old), stderr(&old));
    assert!(
        !old.status.success(),
        "TLS 1.2 handshake succeeded:\n{text}"
    );
    assert!(
        text.contains("alert protocol version"),
        "expected a protocol_version alert:\n{text}"
    );
    assert!(
        text.contains("Cipher is (NONE)") && !text.contains("New, TLSv1.2"),
        "a TLS 1.2 session was established:\n{text}"
    );

    let new = s_client(setup.port, &["-tls1_3"]);
    let text = stdout(&new);
    assert!(
        new.status.success(),
        "TLS 1.3 handshake failed:\n{text}{}",
        stderr(&new)
    );
    assert!(text.contains("New, TLSv1.3, Cipher is"), "{text}");
}

#[test]
fn plain_http_on_the_tls_port_gets_no_http_answer() {
    let setup = Setup::new().tls();
    setup.write_config(None);
    let daemon = start_ready(&setup);

    let mut stream = TcpStream::connect(loopback(setup.port)).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(15)))
        .unwrap();
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        .expect("write");
    let mut answer = Vec::new();
    // The server drops the connection (maybe after a TLS alert); a timeout would also mean no
    // HTTP answer, but is not expected.
    let _ = stream.read_to_end(&mut answer);
    assert!(
        !answer.starts_with(b"HTTP/"),
        "plain HTTP was answered: {:?}",
        String::from_utf8_lossy(&answer)
    );
    // The failed handshake did not hurt the daemon.
    let resp = daemon.get("/healthz");
    assert_eq!(resp.status(), 200);
}

#[test]
fn certificate_persists_across_restarts_and_matches_status_and_log() {
    let setup = Setup::new().tls();
    setup.write_config(None);

    let mut first = start_ready(&setup);
    let status = status_json(&setup);
    let fingerprint = status["tls_sha256_fingerprint"]
        .as_str()
        .unwrap_or_else(|| panic!("no fingerprint in {status}"))
        .to_string();
    assert_eq!(fingerprint.len(), 32 * 3 - 1, "{fingerprint}");
    let served = served_fingerprint(setup.port);
    assert!(
        served.eq_ignore_ascii_case(&fingerprint),
        "served {served}, status says {fingerprint}"
    );
    assert!(
        logs(&first).contains(&fingerprint),
        "log does not show the fingerprint {fingerprint}:\n{}",
        logs(&first)
    );
    stop(&mut first, Duration::from_secs(15));

    let second = start_ready(&setup);
    let status = status_json(&setup);
    assert_eq!(
        status["tls_sha256_fingerprint"].as_str(),
        Some(fingerprint.as_str()),
        "certificate changed on restart"
    );
    let served = served_fingerprint(setup.port);
    assert!(
        served.eq_ignore_ascii_case(&fingerprint),
        "restarted daemon serves {served}, expected {fingerprint}"
    );
    let log = logs(&second);
    assert!(log.contains(&fingerprint), "{log}");
    assert!(
        !log.contains("generated a self-signed TLS certificate"),
        "a new certificate was generated on restart:\n{log}"
    );
}

#[test]
fn status_reaches_the_tls_daemon() {
    let setup = Setup::new().tls();
    setup.write_config(None);
    let daemon = start_ready(&setup);
    // `status` connects over TLS 1.3 pinned to the certificate in the data directory.
    let out = run_limited(setup.command().arg("status"), Duration::from_secs(20));
    let text = stdout(&out);
    assert_eq!(
        out.status.code(),
        Some(0),
        "status failed:\n{text}{}",
        stderr(&out)
    );
    assert!(
        text.contains(&format!("running (PID {})", daemon.child.id())),
        "{text}"
    );
    assert!(text.contains("ready:        yes"), "{text}");
    assert!(text.contains("TLS 1.3:      SHA-256 "), "{text}");
}
