//! Log set-up: human-readable in development, JSON lines in production.

use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

/// Targets of dependencies that log whole requests (URI and query included) below `info`.
/// Tokens can travel in the query (`?token=`, older clients), and query strings are never
/// logged: these stay at `info` whatever `LOG_LEVEL` asks.
const REQUEST_LOGGING_TARGETS: [&str; 1] = ["engineioxide::service::parser"];

/// The filter for `level` (a `tracing` directive list), falling back to `info`.
fn filter(level: &str) -> EnvFilter {
    let filter = EnvFilter::try_new(level).unwrap_or_else(|_| EnvFilter::new("info"));
    REQUEST_LOGGING_TARGETS
        .iter()
        .fold(filter, |f, target| match format!("{target}=info").parse() {
            Ok(directive) => f.add_directive(directive),
            Err(_) => f,
        })
}

/// Installs the global subscriber; a second call (tests) is ignored.
pub fn init(level: &str, format: LogFormat) {
    let filter = filter(level);
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

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn request_dumps_stay_out_of_the_logs_even_at_debug() {
        let out = Captured::default();
        let writer = out.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_env_filter(filter("debug"))
            .with_writer(move || writer.clone())
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            tracing::debug!(target: "engineioxide::service::parser", "invalid request: /socket.io/?token=secret.jwt");
            tracing::debug!(target: "realtime_bridge::socket", "socket connected");
        });
        let logged = String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
        assert!(!logged.contains("secret.jwt"), "{logged}");
        assert!(logged.contains("socket connected"), "debug is on for the rest: {logged}");
    }
}
