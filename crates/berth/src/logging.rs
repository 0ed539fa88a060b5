//! Where the binary's log lines go and how they read: text for a person, coloured only when
//! standard error is a terminal, or one JSON object a line for a collector. The spans the
//! server and the runner open carry the request id and the task id, so every line logged
//! inside them names them, in both formats.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

/// Installs the logger once; later calls (a command that loads its settings twice) keep it.
pub fn init(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let installed = match format {
        LogFormat::Text => builder
            .with_ansi(std::io::stderr().is_terminal())
            .try_init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(true)
            .try_init(),
    };
    drop(installed);
}
