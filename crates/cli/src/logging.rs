//! Logging for `serve` and `dev`: structured lines on stderr (JSON, or text for people),
//! coloured only on a terminal, and PostgreSQL's notices at debug level.
//!
//! tokio-postgres logs every notice a PostgreSQL server sends (`NOTICE: relation "meta"
//! already exists, skipping`, from a `CREATE ... IF NOT EXISTS`) through the `log` crate at
//! info, with its own source file and line. Those are PostgreSQL's remarks, not events of
//! mezzanine, so the bridge from `log` to `tracing` installed here re-emits them as debug
//! events of target `postgres` (a `WARNING` as a warn event), without source paths; every
//! other `log` record passes through as `tracing-log` would pass it. `LOG_LEVEL=debug` (or
//! `LOG_LEVEL=info,postgres=debug`) shows them.
//!
//! At debug, tokio-postgres also logs every statement it executes with its parameters: the
//! bodies of client cells, and a backend's URL with its password (`backend add` records it in
//! the catalog). Those records are never logged, whatever the level: [`withheld`].

use std::io::IsTerminal;

use tracing::level_filters::LevelFilter;
use tracing::Level;
use tracing_log::AsTrace;

/// The `log` target under which tokio-postgres reports the notices its connections receive
/// (at info, and nothing else at info).
const NOTICE_TARGET: &str = "tokio_postgres::connection";

/// The `log` target under which tokio-postgres logs each statement with its parameters.
const PARAMETERS_TARGET: &str = "tokio_postgres::query";

/// Whether a `log` record is never logged: tokio-postgres's statements with their parameters
/// (by target, so that tokio-postgres does not even format them, and by their words, should a
/// later version log them under another target).
fn withheld(target: &str, message: Option<&str>) -> bool {
    target == PARAMETERS_TARGET
        || (target.starts_with("tokio_postgres")
            && message.is_some_and(|m| m.contains("parameters")))
}

/// Sets up logging on stderr: JSON lines by default, human-readable with `text`; `level` is a
/// level or a tracing filter (`info` when it does not parse). ANSI colours only when stderr
/// is a terminal and `NO_COLOR` is not set.
pub fn init_logging(level: &str, format: &str) {
    JSON_LOGS.store(
        !format.eq_ignore_ascii_case("text"),
        std::sync::atomic::Ordering::Relaxed,
    );
    let filter = tracing_subscriber::EnvFilter::try_new(level)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(colours());
    let installed = if format.eq_ignore_ascii_case("text") {
        tracing::subscriber::set_global_default(builder.finish())
    } else {
        tracing::subscriber::set_global_default(builder.json().flatten_event(true).finish())
    };
    if installed.is_ok() && log::set_boxed_logger(Box::new(Bridge)).is_ok() {
        // `log` skips records above this at once (as tracing-subscriber's own set-up does).
        log::set_max_level(log_level(LevelFilter::current()));
    }
}

/// Whether the logs are JSON lines (set by [`init_logging`]): a fatal error is then logged as
/// one too, for log collectors, besides the plain line for people.
static JSON_LOGS: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Whether [`init_logging`] set up JSON lines.
pub fn json() -> bool {
    JSON_LOGS.load(std::sync::atomic::Ordering::Relaxed)
}

/// Colours for people at a terminal; never in a pipe or a file, nor with `NO_COLOR` set.
fn colours() -> bool {
    std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

fn log_level(max: LevelFilter) -> log::LevelFilter {
    match max.into_level() {
        None => log::LevelFilter::Off,
        Some(Level::ERROR) => log::LevelFilter::Error,
        Some(Level::WARN) => log::LevelFilter::Warn,
        Some(Level::INFO) => log::LevelFilter::Info,
        Some(Level::DEBUG) => log::LevelFilter::Debug,
        Some(Level::TRACE) => log::LevelFilter::Trace,
    }
}

/// How a PostgreSQL notice is logged: at warn for a `WARNING`, at debug for anything else
/// (`NOTICE`, `INFO`, `LOG`, `DEBUG`).
fn notice_level(text: &str) -> Level {
    match text.split_once(':') {
        Some(("WARNING", _)) => Level::WARN,
        _ => Level::DEBUG,
    }
}

/// Emits a PostgreSQL notice (`SEVERITY: message`, as tokio-postgres formats it).
fn notice(text: &str) {
    if notice_level(text) == Level::WARN {
        tracing::warn!(target: "postgres", "{text}");
    } else {
        tracing::debug!(target: "postgres", "{text}");
    }
}

/// The `log` → `tracing` bridge: notices re-levelled, everything else passed through.
struct Bridge;

impl Bridge {
    fn is_notice(metadata: &log::Metadata<'_>) -> bool {
        metadata.target() == NOTICE_TARGET && metadata.level() == log::Level::Info
    }
}

impl log::Log for Bridge {
    fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
        if metadata.level() > log::max_level() || withheld(metadata.target(), None) {
            return false;
        }
        if Bridge::is_notice(metadata) {
            return true; // re-levelled in `log`, filtered there
        }
        tracing::dispatcher::get_default(|d| d.enabled(&metadata.as_trace()))
    }

    fn log(&self, record: &log::Record<'_>) {
        // Only tokio-postgres's records are read here (the rest are formatted once, below).
        let message = record
            .target()
            .starts_with("tokio_postgres")
            .then(|| record.args().to_string());
        if withheld(record.target(), message.as_deref()) {
            return;
        }
        if Bridge::is_notice(record.metadata()) {
            notice(message.as_deref().unwrap_or_default());
        } else {
            // Checks the subscriber's filter, as tracing-log's own LogTracer does.
            let _ = tracing_log::format_trace(record);
        }
    }

    fn flush(&self) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warnings_stay_warnings_and_the_rest_is_debug() {
        assert_eq!(
            notice_level("NOTICE: relation \"meta\" already exists, skipping"),
            Level::DEBUG
        );
        assert_eq!(notice_level("INFO: x"), Level::DEBUG);
        assert_eq!(
            notice_level("WARNING: there is no transaction in progress"),
            Level::WARN
        );
        assert_eq!(notice_level("no severity"), Level::DEBUG);
    }

    #[test]
    fn statements_with_parameters_are_withheld() {
        assert!(withheld("tokio_postgres::query", None));
        assert!(withheld(
            "tokio_postgres::something_new",
            Some("executing statement s1 with parameters: [\"postgres://u:pw@h/db\"]")
        ));
        assert!(!withheld("tokio_postgres::connection", Some("NOTICE: x")));
        assert!(!withheld(
            "tokio_postgres::prepare",
            Some("preparing query s1: SELECT 1")
        ));
        assert!(!withheld("mezzanine_server", Some("parameters")));
    }

    #[test]
    fn log_levels_follow_the_filter() {
        assert_eq!(log_level(LevelFilter::INFO), log::LevelFilter::Info);
        assert_eq!(log_level(LevelFilter::OFF), log::LevelFilter::Off);
        assert_eq!(log_level(LevelFilter::TRACE), log::LevelFilter::Trace);
    }
}
