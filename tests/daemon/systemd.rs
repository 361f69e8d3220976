//! sd_notify: READY=1, watchdog pings, STOPPING=1, sent to `$NOTIFY_SOCKET`.

use std::os::unix::net::UnixDatagram;
use std::time::{Duration, Instant};

use crate::common::Setup;
use crate::support::logs;

/// Receives datagrams until one satisfies `want` (returning it) or `limit` passes (panicking
/// with everything seen). Every datagram is appended to `seen`.
fn receive_until(
    socket: &UnixDatagram,
    seen: &mut Vec<String>,
    limit: Duration,
    want: impl Fn(&str) -> bool,
) -> String {
    let deadline = Instant::now() + limit;
    let mut buf = vec![0u8; 4096];
    while Instant::now() < deadline {
        match socket.recv(&mut buf) {
            Ok(n) => {
                let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
                seen.push(msg.clone());
                if want(&msg) {
                    return msg;
                }
            }
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut => {}
            Err(e) => panic!("recv: {e}"),
        }
    }
    panic!("no matching notification in {limit:?}; received: {seen:?}");
}

fn has_line(msg: &str, line: &str) -> bool {
    msg.lines().any(|l| l == line)
}

#[test]
fn notifies_ready_watchdog_and_stopping() {
    let setup = Setup::new();
    setup.write_config(None);
    let path = setup.dir.path().join("notify.sock");
    let socket = UnixDatagram::bind(&path).expect("bind notify socket");
    socket
        .set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();

    // WATCHDOG_USEC = 200 ms: the daemon pings every half of that.
    let mut daemon = setup.start_with(|cmd| {
        cmd.env("NOTIFY_SOCKET", &path)
            .env("WATCHDOG_USEC", "200000");
    });
    let mut seen = Vec::new();
    let ready = receive_until(&socket, &mut seen, Duration::from_secs(30), |m| {
        has_line(m, "READY=1")
    });
    assert!(
        ready.contains(&format!(
            "STATUS=serving on http://127.0.0.1:{}",
            setup.port
        )),
        "{ready:?}"
    );
    assert!(
        !seen.iter().any(|m| has_line(m, "WATCHDOG=1")),
        "watchdog ping before READY=1: {seen:?}"
    );

    let started = Instant::now();
    let before = seen.len();
    for _ in 0..2 {
        receive_until(&socket, &mut seen, Duration::from_secs(5), |m| {
            has_line(m, "WATCHDOG=1")
        });
    }
    // Two pings at a 100 ms interval; 5 s leaves room for a loaded machine but would catch
    // pings at the full WATCHDOG_USEC or slower by a large factor.
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "pings too slow: {:?}",
        &seen[before..]
    );

    daemon.terminate();
    receive_until(&socket, &mut seen, Duration::from_secs(15), |m| {
        has_line(m, "STOPPING=1")
    });
    let status = daemon.wait_exit(Duration::from_secs(15));
    assert_eq!(status.code(), Some(0), "log:\n{}", logs(&daemon));
}
