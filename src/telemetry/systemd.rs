//! sd_notify: READY=1 once ready, STOPPING=1 on shutdown, WATCHDOG=1 pings when asked for.

use std::time::Duration;

use systemd::daemon;

fn notify(state: &[(&str, &str)]) {
    if let Err(e) = daemon::notify(state.iter()) {
        tracing::warn!(error = %e, "cannot notify systemd");
    }
}

/// Tells systemd the daemon is ready, with a one-line status.
pub fn ready(status: &str) {
    notify(&[(daemon::STATE_READY, "1"), (daemon::STATE_STATUS, status)]);
}

/// Updates the one-line status `systemctl status` shows.
pub fn status(status: &str) {
    notify(&[(daemon::STATE_STATUS, status)]);
}

/// Tells systemd the daemon is stopping.
pub fn stopping() {
    notify(&[
        (daemon::STATE_STOPPING, "1"),
        (daemon::STATE_STATUS, "stopping"),
    ]);
}

/// The watchdog ping interval (half of `WATCHDOG_USEC`), if systemd asked for pings and
/// `WATCHDOG_PID`, when set, names this process.
pub fn watchdog_interval() -> Option<Duration> {
    if let Some(pid) = std::env::var("WATCHDOG_PID").ok()
        && pid.trim() != std::process::id().to_string()
    {
        return None;
    }
    let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.trim().parse().ok()?;
    (usec > 0).then(|| Duration::from_micros(usec / 2))
}

/// Pings the watchdog every `interval` until the task is dropped.
pub async fn watchdog(interval: Duration) {
    let mut ticker = tokio::time::interval(interval);
    loop {
        ticker.tick().await;
        notify(&[(daemon::STATE_WATCHDOG, "1")]);
    }
}
