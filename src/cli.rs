//! The `handler` command line: `serve` for the Functions host, the rest for operators.
//!
//! clap's derive API, so that [`Command`] is the single list of commands (help, usage errors
//! and dispatch all come from it). Parsing is pure ([`parse_args`], [`resolve_port`]) and
//! tested; [`run`] takes the jobs factory as a parameter so that `main.rs` decides which
//! [`Jobs`] implementation is wired in.

use std::ffi::OsString;
use std::process::ExitCode;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use clap::{Parser, Subcommand};

use crate::cdc::TableRef;
use crate::config::{Settings, FUNCTIONS_CUSTOMHANDLER_PORT};
use crate::host::{self, FullLoadRequest, Jobs, TimerTrigger};
use crate::report::{Report, Status};

/// Azure Functions custom handler copying SQL Server CDC changes to Blob Storage as CSV.
#[derive(Debug, Parser)]
#[command(
    name = "handler",
    version,
    args_conflicts_with_subcommands = true,
    after_help = "Settings are environment variables (see docs/settings.md). Logs: RUST_LOG \
                  (default info), CDC_LOG_FORMAT=json for JSON lines."
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// Port for `serve`, which is what runs without a command.
    #[arg(long, value_name = "N", value_parser = port_flag)]
    port: Option<u16>,
}

/// A parsed command line.
#[derive(Debug, Clone, PartialEq, Eq, Subcommand)]
pub enum Command {
    /// Serve the Functions host contract on 127.0.0.1 (the default command).
    Serve {
        /// Port to listen on (default: FUNCTIONS_CUSTOMHANDLER_PORT, which the host sets).
        #[arg(long, value_name = "N", value_parser = port_flag)]
        port: Option<u16>,
    },
    /// Run one incremental copy now.
    IncrementalCopy {
        /// Trigger time, e.g. 2026-11-21T10:15:00Z (default: now, UTC).
        #[arg(long, value_name = "TIME", value_parser = time_flag)]
        at: Option<DateTime<Utc>>,
    },
    /// Run a full load, resuming from each checkpoint until done.
    FullLoad {
        /// A table to load, schema.table; repeatable (default: every table in CDC_TABLES).
        #[arg(long = "table", value_name = "schema.table", value_parser = TableRef::parse)]
        tables: Vec<TableRef>,
        /// Re-baseline tables that already have a watermark.
        #[arg(long)]
        reset: bool,
    },
    /// Validate the settings and check connectivity; exit 1 on any problem.
    Check,
    /// Show where each table stands: mode, capture instance, window end, LSNs, lag, pending
    /// window, full-load progress by range, last error. Exit 1 if a table cannot be read.
    Status {
        /// Print JSON (`{"tables": [...]}`, stable field names; docs/scale-out.md).
        #[arg(long)]
        json: bool,
    },
}

impl Command {
    /// Serve logs to stdout (the host collects it); the operator commands print their
    /// result on stdout and log to stderr.
    pub fn logs_to_stdout(&self) -> bool {
        matches!(self, Command::Serve { .. })
    }
}

/// A port that cannot be used. Exit status 2.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CliError {
    #[error("{FUNCTIONS_CUSTOMHANDLER_PORT} is not set: the Functions host sets it; to run by hand use --port N or set it")]
    PortUnset,
    #[error("{FUNCTIONS_CUSTOMHANDLER_PORT}={0:?} is not a port (1-65535)")]
    PortInvalid(String),
}

/// Parses the arguments after the program name. `--help`, `--version` and usage errors
/// come back as clap errors: `main` prints them and exits (0, or 2 for a usage error).
pub fn parse_args<I, T>(args: I) -> Result<Command, clap::Error>
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let cli = Cli::try_parse_from(
        std::iter::once(OsString::from("handler")).chain(args.into_iter().map(Into::into)),
    )?;
    Ok(match cli.command {
        None => Command::Serve { port: cli.port },
        Some(Command::FullLoad { tables, reset }) => {
            // `--table` given twice loads the table once.
            let mut unique = Vec::new();
            for table in tables {
                if !unique.contains(&table) {
                    unique.push(table);
                }
            }
            Command::FullLoad {
                tables: unique,
                reset,
            }
        }
        Some(command) => command,
    })
}

fn parse_port(text: &str) -> Option<u16> {
    text.trim().parse::<u16>().ok().filter(|p| *p != 0)
}

fn port_flag(text: &str) -> Result<u16, String> {
    parse_port(text).ok_or_else(|| format!("{text:?} is not a port (1-65535)"))
}

fn time_flag(text: &str) -> Result<DateTime<Utc>, String> {
    host::parse_host_time(text)
        .ok()
        .flatten()
        .ok_or_else(|| format!("{text:?} is not a timestamp like 2026-11-21T10:15:00Z"))
}

/// The port to listen on: `--port` if given, else `FUNCTIONS_CUSTOMHANDLER_PORT`.
pub fn resolve_port(flag: Option<u16>, env: Option<&str>) -> Result<u16, CliError> {
    if let Some(port) = flag {
        return Ok(port);
    }
    match env {
        None => Err(CliError::PortUnset),
        Some(v) if v.trim().is_empty() => Err(CliError::PortUnset),
        Some(v) => parse_port(v).ok_or_else(|| CliError::PortInvalid(v.to_string())),
    }
}

/// Runs a command. `make_jobs` is called once, and must be cheap and offline (no network):
/// `serve` calls it before answering the readiness probe.
pub async fn run(command: Command, make_jobs: fn() -> Arc<dyn Jobs>) -> ExitCode {
    match command {
        Command::Serve { port } => serve(port, make_jobs).await,
        Command::IncrementalCopy { at } => {
            let trigger = TimerTrigger {
                trigger_time: at.unwrap_or_else(Utc::now),
                last: None,
                is_past_due: false,
            };
            let report = make_jobs().incremental_copy(trigger).await;
            print_report(&report)
        }
        Command::FullLoad { tables, reset } => {
            // No HTTP front end to answer in time: resume from each checkpoint until done.
            let request = FullLoadRequest { tables, reset };
            let jobs = make_jobs();
            let mut report = with_progress(jobs.as_ref(), jobs.full_load(request.clone())).await;
            while report.status == Status::InProgress {
                // A keyless table's load that did not fit the budget starts over on every
                // call: it is the timer run's (`handler incremental-copy`), not a loop's.
                let keyless_only = report
                    .tables
                    .iter()
                    .filter(|t| t.status == Status::InProgress)
                    .all(|t| t.note == crate::jobs::full_load::KEYLESS_HANDED_OFF);
                if keyless_only {
                    break;
                }
                for line in report.logs() {
                    eprintln!("{line}");
                }
                let resume = FullLoadRequest {
                    reset: false,
                    ..request.clone()
                };
                report = with_progress(jobs.as_ref(), jobs.full_load(resume)).await;
            }
            print_report(&report)
        }
        Command::Check => check(make_jobs).await,
        Command::Status { json } => status(make_jobs, json).await,
    }
}

async fn status(make_jobs: fn() -> Arc<dyn Jobs>, json: bool) -> ExitCode {
    match make_jobs().status().await {
        Err(e) => {
            eprintln!("handler: {e}");
            ExitCode::from(1)
        }
        Ok(tables) => {
            if json {
                println!("{}", crate::status::to_json(&tables));
            } else {
                print!("{}", crate::status::render(&tables));
            }
            if tables.iter().any(|t| t.error.is_some()) {
                ExitCode::from(1)
            } else {
                ExitCode::SUCCESS
            }
        }
    }
}

/// Runs `job`; while it runs and stdout is a terminal, a progress line on stderr every two
/// seconds (rewritten in place). Not a terminal: nothing extra, the logs say it all.
async fn with_progress(jobs: &dyn Jobs, job: impl std::future::Future<Output = Report>) -> Report {
    use std::io::{IsTerminal, Write};
    if !std::io::stdout().is_terminal() {
        return job.await;
    }
    tokio::pin!(job);
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(2));
    tick.tick().await;
    let mut shown = false;
    loop {
        tokio::select! {
            report = &mut job => {
                if shown {
                    eprintln!();
                }
                return report;
            }
            _ = tick.tick() => {
                if let Ok(tables) = jobs.status().await {
                    eprint!("\r{}", crate::status::progress_line(&tables));
                    let _ = std::io::stderr().flush();
                    shown = true;
                }
            }
        }
    }
}

async fn serve(port: Option<u16>, make_jobs: fn() -> Arc<dyn Jobs>) -> ExitCode {
    let env_port = std::env::var(FUNCTIONS_CUSTOMHANDLER_PORT).ok();
    let port = match resolve_port(port, env_port.as_deref()) {
        Ok(port) => port,
        Err(e) => {
            eprintln!("handler: {e}");
            return ExitCode::from(2);
        }
    };
    let shutdown = shutdown_signal();
    let listener = match tokio::net::TcpListener::bind(("127.0.0.1", port)).await {
        Ok(listener) => listener,
        Err(e) => {
            eprintln!("handler: cannot listen on 127.0.0.1:{port}: {e}");
            return ExitCode::from(1);
        }
    };
    let jobs = make_jobs();
    tracing::info!(port, "listening on 127.0.0.1");
    for e in Settings::check_env() {
        tracing::warn!(setting = e.setting(), error = %e, "invalid setting: invocations will fail until it is fixed");
    }
    host::run(listener, jobs, shutdown).await;
    tracing::info!("stopped");
    ExitCode::SUCCESS
}

/// Ctrl-C, or SIGTERM (what the host and container runtimes send). The handlers are
/// installed when this is called, before the listener is bound, so a signal that arrives
/// right after the first readiness answer is not missed.
fn shutdown_signal() -> impl std::future::Future<Output = ()> + Send + 'static {
    #[cfg(unix)]
    let signals = {
        use tokio::signal::unix::{signal, SignalKind};
        (
            signal(SignalKind::interrupt()).ok(),
            signal(SignalKind::terminate()).ok(),
        )
    };
    async move {
        #[cfg(unix)]
        {
            let (interrupt, terminate) = signals;
            tokio::select! {
                () = recv(interrupt) => {}
                () = recv(terminate) => {}
            }
        }
        #[cfg(not(unix))]
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
        tracing::info!("shutdown signal received; finishing invocations in flight");
    }
}

/// The next delivery of `signal`; never, when it could not be installed.
#[cfg(unix)]
async fn recv(signal: Option<tokio::signal::unix::Signal>) {
    match signal {
        Some(mut signal) => {
            signal.recv().await;
        }
        None => std::future::pending::<()>().await,
    }
}

/// Prints the report as the host would log it; success when every table is done.
fn print_report(report: &Report) -> ExitCode {
    for line in report.logs() {
        println!("{line}");
    }
    match serde_json::to_string_pretty(report) {
        Ok(summary) => println!("{summary}"),
        Err(e) => eprintln!("handler: summary not printable: {e}"),
    }
    if report.status <= Status::Superseded {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

async fn check(make_jobs: fn() -> Arc<dyn Jobs>) -> ExitCode {
    let mut failed = false;
    let errors = Settings::check_env();
    if errors.is_empty() {
        println!("ok    settings");
    }
    for e in &errors {
        failed = true;
        println!("FAIL  {}: {e}", e.setting());
    }
    if errors.is_empty() {
        for (what, result) in make_jobs().check().await {
            match result {
                Ok(()) => println!("ok    {what}"),
                Err(e) => {
                    failed = true;
                    println!("FAIL  {what}: {e}");
                }
            }
        }
    }
    if failed {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::error::ErrorKind;

    fn parse(args: &[&str]) -> Result<Command, clap::Error> {
        parse_args(args.iter().copied())
    }

    #[test]
    fn commands() {
        let t = |s: &str| TableRef::parse(s).unwrap();
        let at = DateTime::parse_from_rfc3339("2026-11-21T10:15:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let cases: Vec<(&[&str], Command)> = vec![
            (&[], Command::Serve { port: None }),
            (&["serve"], Command::Serve { port: None }),
            (
                &["serve", "--port", "7071"],
                Command::Serve { port: Some(7071) },
            ),
            (
                &["serve", "--port=7071"],
                Command::Serve { port: Some(7071) },
            ),
            (&["--port", "8080"], Command::Serve { port: Some(8080) }),
            (&["incremental-copy"], Command::IncrementalCopy { at: None }),
            (
                &["incremental-copy", "--at", "2026-11-21T10:15:00Z"],
                Command::IncrementalCopy { at: Some(at) },
            ),
            (
                &["incremental-copy", "--at=2026-11-21T10:15:00"],
                Command::IncrementalCopy { at: Some(at) },
            ),
            (
                &["full-load"],
                Command::FullLoad {
                    tables: vec![],
                    reset: false,
                },
            ),
            (
                &[
                    "full-load",
                    "--table",
                    "dbo.a",
                    "--table=sales.b",
                    "--reset",
                    "--table",
                    "dbo.a",
                ],
                Command::FullLoad {
                    tables: vec![t("dbo.a"), t("sales.b")],
                    reset: true,
                },
            ),
            (&["check"], Command::Check),
            (&["status"], Command::Status { json: false }),
            (&["status", "--json"], Command::Status { json: true }),
        ];
        for (args, want) in cases {
            assert_eq!(parse(args).map_err(|e| e.to_string()), Ok(want), "{args:?}");
        }
    }

    /// Help and version are printed by `main` from the error clap returns, with exit status 0.
    #[test]
    fn help_and_version() {
        let cases: &[(&[&str], ErrorKind)] = &[
            (&["--help"], ErrorKind::DisplayHelp),
            (&["-h"], ErrorKind::DisplayHelp),
            (&["help"], ErrorKind::DisplayHelp),
            (&["check", "--help"], ErrorKind::DisplayHelp),
            (&["--version"], ErrorKind::DisplayVersion),
            (&["-V"], ErrorKind::DisplayVersion),
        ];
        for (args, kind) in cases {
            let e = parse(args).expect_err(&format!("{args:?}"));
            assert_eq!((e.kind(), e.exit_code()), (*kind, 0), "{args:?}");
        }
    }

    #[test]
    fn errors_name_the_flag() {
        let cases: &[(&[&str], &str)] = &[
            (&["copy"], "unrecognized subcommand 'copy'"),
            (&["serve", "--port"], "a value is required for '--port <N>'"),
            (&["serve", "--port", "0"], "--port"),
            (&["serve", "--port", "65536"], "--port"),
            (&["serve", "--at", "x"], "unexpected argument '--at'"),
            (&["incremental-copy", "--at", "soon"], "--at"),
            (&["incremental-copy", "--at", "0001-01-01T00:00:00"], "--at"),
            (&["full-load", "--table", "customers"], "--table"),
            (&["full-load", "--table", "dbo.x;drop"], "--table"),
            (&["full-load", "--reset=yes"], "--reset"),
            (&["check", "extra"], "unexpected argument 'extra'"),
            (&["--port", "1", "check"], "--port"),
        ];
        for (args, text) in cases {
            let e = parse(args).expect_err(&format!("{args:?}"));
            assert_eq!(e.exit_code(), 2, "{args:?}: {e}");
            assert!(e.to_string().contains(text), "{args:?}: {e}");
        }
    }

    #[test]
    fn port_resolution() {
        assert_eq!(resolve_port(Some(9000), Some("7071")), Ok(9000));
        assert_eq!(resolve_port(None, Some("7071")), Ok(7071));
        assert_eq!(resolve_port(None, Some(" 7071 ")), Ok(7071));
        for (env, want) in [
            (None, CliError::PortUnset),
            (Some(""), CliError::PortUnset),
            (Some("0"), CliError::PortInvalid("0".into())),
            (Some("70000"), CliError::PortInvalid("70000".into())),
            (Some("http"), CliError::PortInvalid("http".into())),
        ] {
            let e = resolve_port(None, env).unwrap_err();
            assert_eq!(e, want);
            assert!(e.to_string().contains(FUNCTIONS_CUSTOMHANDLER_PORT), "{e}");
        }
    }
}
