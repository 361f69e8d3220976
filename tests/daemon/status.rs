//! `sparkbrain status` finds the running daemon where it really listens.

use std::time::Duration;

use crate::common::{Setup, free_port};
use crate::support::{run_limited, stdout};

#[test]
fn status_follows_a_bind_flag_that_overrides_the_config() {
    // The config names one port; `serve --bind` another. status reads the config, so it must
    // learn the real address from the running daemon (its record in the lock file).
    let mut setup = Setup::new();
    let real = format!("127.0.0.1:{}", setup.port);
    setup.bind = format!("127.0.0.1:{}", free_port());
    setup.write_config(None);
    let daemon = setup.start_with(|cmd| {
        cmd.args(["--bind", &real]);
    });
    daemon.wait_ready();

    let out = run_limited(
        setup.command().args(["status", "--json"]),
        Duration::from_secs(20),
    );
    let text = stdout(&out);
    assert!(out.status.success(), "{text}");
    let status: serde_json::Value = serde_json::from_str(&text).expect("status json");
    assert_eq!(status["url"], format!("http://{real}"), "{status}");
    assert_eq!(status["pid"], daemon.child.id(), "{status}");
    assert_eq!(status["ready"], true, "{status}");
}
