//! The log: text for a terminal, or one JSON object a line for a log
//! pipeline (`[log] format = "json"`), on stderr either way.
//!
//! A JSON line has `timestamp`, `level`, `target` and `message` at its top,
//! beside the line's own fields: every line about one event carries its
//! `event_id`, `source`, `destination` (when it concerns one) and `trace_id`.

use tracing_subscriber::EnvFilter;

/// Installs the process's logger: `level` is a level or a filter
/// ("hookgate=debug,info"); `RUST_LOG`, when set, wins over it. A level
/// names hookgate's own crates, so "info" does not open the libraries' logs.
pub fn init(level: &str, json: bool) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(directive(level)));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    if json {
        builder.json().flatten_event(true).with_current_span(false).with_span_list(false).init();
    } else {
        builder.with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr())).init();
    }
}

/// A bare level is hookgate's crates at that level and everything else at
/// WARN; a filter with a target in it is taken as it is.
fn directive(level: &str) -> String {
    if level.contains('=') || level.contains(',') {
        return level.to_owned();
    }
    let crates =
        ["hookgate", "hookgate_core", "hookgate_store", "hookgate_sqlite", "hookgate_postgres", "hookgate_verify"];
    let mut directive = String::from("warn");
    for name in crates {
        directive.push_str(&format!(",{name}={level}"));
    }
    directive
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_level_names_our_crates_and_a_filter_is_kept() {
        assert!(directive("debug").starts_with("warn,hookgate=debug,"));
        assert!(directive("info").contains("hookgate_sqlite=info"));
        assert_eq!(directive("hookgate=trace,info"), "hookgate=trace,info");
    }
}
