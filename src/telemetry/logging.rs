//! Logging: journald with structured fields under systemd, a readable terminal format otherwise.

use std::io::IsTerminal;

use tracing_journald::{Priority, PriorityMappings};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

use crate::config::LogFormat;

/// Whether stderr is connected to the journal (systemd sets `JOURNAL_STREAM` for its services).
pub fn under_journald() -> bool {
    std::env::var_os("JOURNAL_STREAM").is_some()
}

/// The filter for `level`. ONNX Runtime logs every graph transformation at info level; unless
/// the filter names `ort` itself, only its warnings and errors pass.
fn filter(level: &str) -> EnvFilter {
    let directives = if level.contains("ort") {
        level.to_string()
    } else {
        format!("{level},ort=warn")
    };
    EnvFilter::try_new(directives).unwrap_or_else(|_| EnvFilter::new("info,ort=warn"))
}

/// syslog's meaning of the levels (info = 6, debug = 7), so `journalctl -p info` shows what
/// an operator expects; tracing-journald's default shifts each level one step up.
fn syslog_priorities() -> PriorityMappings {
    PriorityMappings {
        error: Priority::Error,
        warn: Priority::Warning,
        info: Priority::Informational,
        debug: Priority::Debug,
        trace: Priority::Debug,
    }
}

/// Installs the global subscriber. `level` was validated with the configuration.
pub fn init(level: &str, format: LogFormat) {
    let filter = filter(level);
    let journald = match format {
        LogFormat::Journald => true,
        LogFormat::Terminal => false,
        LogFormat::Auto => under_journald(),
    };
    if journald {
        match tracing_journald::layer() {
            Ok(layer) => {
                let _ = tracing_subscriber::registry()
                    .with(filter)
                    .with(
                        layer
                            .with_syslog_identifier("sparkbrain".into())
                            .with_priority_mappings(syslog_priorities()),
                    )
                    .try_init();
                return;
            }
            Err(e) => eprintln!("sparkbrain: journald is not reachable ({e}); logging to stderr"),
        }
    }
    let _ = tracing_subscriber::registry()
        .with(filter)
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .with_ansi(std::io::stderr().is_terminal())
                .with_target(false),
        )
        .try_init();
}
