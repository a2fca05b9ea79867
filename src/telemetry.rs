//! Log set-up: human-readable in development, JSON lines in production.

use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

/// Installs the global subscriber; a second call (tests) is ignored.
pub fn init(level: &str, format: LogFormat) {
    let filter = EnvFilter::try_new(level).unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_target(true);
    let _ = match format {
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
        LogFormat::Pretty => builder.try_init(),
    };
    // A panic is a bug: log it like everything else (one JSON line in production, with
    // where it happened) rather than as bare text on stderr. Supervision decides what
    // happens next (src/supervisor.rs).
    std::panic::set_hook(Box::new(|info| {
        let location = info.location().map(|l| format!("{}:{}", l.file(), l.line()));
        let message = crate::supervisor::panic_message(info.payload());
        tracing::error!(panic = %message, location = location.as_deref().unwrap_or("unknown"), "panic");
    }));
}
