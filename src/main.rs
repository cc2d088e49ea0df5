//! `handler`: the binary the Functions host starts (host.json `defaultExecutablePath`).
//!
//! Kept thin: logging set-up, argument parsing, and the choice of [`Jobs`] implementation;
//! everything else is in the library so that tests drive the same code.

use std::io::IsTerminal;
use std::process::ExitCode;
use std::sync::Arc;

use cdc_copy::cli;
use cdc_copy::config::{Settings, CDC_LOG_FORMAT, DEFAULT_LOG_FILTER, RUST_LOG};
use cdc_copy::host::{Jobs, NotConfigured};
use cdc_copy::jobs::Runner;
use cdc_copy::sink::blob::BlobTarget;
use cdc_copy::sqlserver::SqlServerSource;
use tracing_subscriber::EnvFilter;

/// The jobs behind the two functions: SQL Server and Blob Storage from the settings. Cheap and
/// offline: `serve` calls it before it answers the host's readiness probe, so invalid settings
/// become a per-invocation failure (with the setting named) rather than a handler that never
/// starts.
fn make_jobs() -> Arc<dyn Jobs> {
    let settings = match Settings::from_env() {
        Ok(settings) => Arc::new(settings),
        Err(_) => return Arc::new(NotConfigured::from_env()),
    };
    let invalid = |setting: &str, e: &dyn std::fmt::Display| -> Arc<dyn Jobs> {
        Arc::new(NotConfigured::new(format!(
            "settings are invalid: {setting}: {e}"
        )))
    };
    let blobs = match BlobTarget::new(&settings.storage, &settings.container) {
        Ok(blobs) => blobs.with_blocks_in_flight(settings.upload_blocks_in_flight),
        Err(e) => return invalid(settings.storage.setting(), &e),
    };
    let source = match SqlServerSource::new(&settings.sql, settings.watermark_table.clone()) {
        Ok(source) => source.with_command_timeout(settings.sql_command_timeout),
        Err(e) => return invalid(settings.sql.setting(), &e),
    };
    Arc::new(Runner::new(settings, Arc::new(source), blobs))
}

fn main() -> ExitCode {
    // Help, version and usage errors: clap prints them and exits (0, or 2 for a usage error).
    let command = cli::parse_args(std::env::args_os().skip(1)).unwrap_or_else(|e| e.exit());
    init_tracing(command.logs_to_stdout());
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("handler: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    runtime.block_on(cli::run(command, make_jobs))
}

/// `RUST_LOG` filter (default [`DEFAULT_LOG_FILTER`]), text or JSON lines
/// (`CDC_LOG_FORMAT=json`).
fn init_tracing(stdout: bool) {
    let (filter, bad_filter) = match std::env::var(RUST_LOG) {
        Ok(spec) if !spec.trim().is_empty() => match EnvFilter::try_new(&spec) {
            Ok(filter) => (filter, None),
            Err(e) => (EnvFilter::new(DEFAULT_LOG_FILTER), Some(e.to_string())),
        },
        _ => (EnvFilter::new(DEFAULT_LOG_FILTER), None),
    };
    let format = std::env::var(CDC_LOG_FORMAT).unwrap_or_default();
    let json = format.trim().eq_ignore_ascii_case("json");
    // Colour only on a terminal: the Functions host forwards stdout to Application Insights.
    let terminal = if stdout {
        std::io::stdout().is_terminal()
    } else {
        std::io::stderr().is_terminal()
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(terminal);
    let result = match (json, stdout) {
        (true, true) => builder.json().with_writer(std::io::stdout).try_init(),
        (true, false) => builder.json().with_writer(std::io::stderr).try_init(),
        (false, true) => builder.with_writer(std::io::stdout).try_init(),
        (false, false) => builder.with_writer(std::io::stderr).try_init(),
    };
    if let Err(e) = result {
        eprintln!("handler: logging not initialised: {e}");
    }
    if let Some(e) = bad_filter {
        tracing::warn!(error = %e, "{RUST_LOG} is invalid; using {DEFAULT_LOG_FILTER}");
    }
    if !json && !format.trim().is_empty() && !format.trim().eq_ignore_ascii_case("text") {
        tracing::warn!(value = %format, "{CDC_LOG_FORMAT} is neither text nor json; using text");
    }
}
