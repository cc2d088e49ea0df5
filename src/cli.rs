//! The `handler` command line: `serve` for the Functions host, the rest for operators.
//!
//! Hand-rolled (no clap) because there are five commands and four flags; a parser
//! dependency would cost more build time than this file. Parsing is pure ([`parse_args`],
//! [`resolve_port`]) and tested; [`run`] takes the jobs factory as a parameter so that
//! `main.rs` decides which [`Jobs`] implementation is wired in.

use std::process::ExitCode;
use std::sync::Arc;

use chrono::{DateTime, Utc};

use crate::cdc::TableRef;
use crate::config::{Settings, FUNCTIONS_CUSTOMHANDLER_PORT};
use crate::host::{self, render, FullLoadRequest, Jobs, TimerTrigger};
use crate::report::{Report, Status};

pub const USAGE: &str = "\
handler: Azure Functions custom handler copying SQL Server CDC changes to Blob Storage as CSV

USAGE:
    handler [serve] [--port N]
        Serve the Functions host contract on 127.0.0.1 (port from --port, else
        FUNCTIONS_CUSTOMHANDLER_PORT, which the Functions host sets).
    handler incremental-copy [--at RFC3339]
        Run one incremental copy now, with trigger time --at (default: now, UTC).
    handler full-load [--table schema.table]... [--reset]
        Run a full load of the given tables (default: every table in CDC_TABLES).
    handler check
        Validate the settings and check connectivity; exit 1 on any problem.
    handler --help | --version

Settings are environment variables (see docs/settings.md). Logs: RUST_LOG (default info),
CDC_LOG_FORMAT=json for JSON lines.
";

/// A parsed command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Serve { port: Option<u16> },
    IncrementalCopy { at: Option<DateTime<Utc>> },
    FullLoad(FullLoadRequest),
    Check,
    Help,
    Version,
}

impl Command {
    /// Serve logs to stdout (the host collects it); the operator commands print their
    /// result on stdout and log to stderr.
    pub fn logs_to_stdout(&self) -> bool {
        matches!(self, Command::Serve { .. })
    }
}

/// A command line or port that cannot be used. Exit status 2.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CliError {
    #[error("unknown command {0:?}; see --help")]
    UnknownCommand(String),
    #[error("{command}: unexpected argument {arg:?}; see --help")]
    UnexpectedArgument { command: &'static str, arg: String },
    #[error("{flag} needs a value")]
    MissingValue { flag: &'static str },
    #[error("{flag}: {reason}")]
    InvalidValue { flag: &'static str, reason: String },
    #[error("{FUNCTIONS_CUSTOMHANDLER_PORT} is not set: the Functions host sets it; to run by hand use --port N or set it")]
    PortUnset,
    #[error("{FUNCTIONS_CUSTOMHANDLER_PORT}={0:?} is not a port (1-65535)")]
    PortInvalid(String),
}

/// Parses the arguments after the program name.
pub fn parse_args<I>(args: I) -> Result<Command, CliError>
where
    I: IntoIterator<Item = String>,
{
    let mut args = args.into_iter().peekable();
    let command = match args.peek().map(String::as_str) {
        None => return Ok(Command::Serve { port: None }),
        Some(a) if a.starts_with("--port") => "serve",
        Some(_) => match args.next().unwrap_or_default().as_str() {
            "serve" => "serve",
            "incremental-copy" => "incremental-copy",
            "full-load" => "full-load",
            "check" => "check",
            "help" | "--help" | "-h" => return Ok(Command::Help),
            "--version" | "-V" => return Ok(Command::Version),
            other => return Err(CliError::UnknownCommand(other.to_string())),
        },
    };
    let mut port = None;
    let mut at = None;
    let mut tables: Vec<TableRef> = Vec::new();
    let mut reset = false;
    while let Some(arg) = args.next() {
        let (flag, inline) = match arg.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f.to_string(), Some(v.to_string())),
            _ => (arg.clone(), None),
        };
        let mut value = |flag: &'static str| -> Result<String, CliError> {
            inline
                .clone()
                .or_else(|| args.next())
                .ok_or(CliError::MissingValue { flag })
        };
        match (command, flag.as_str()) {
            (_, "--help" | "-h") => return Ok(Command::Help),
            ("serve", "--port") => {
                let v = value("--port")?;
                port = Some(parse_port(&v).ok_or_else(|| CliError::InvalidValue {
                    flag: "--port",
                    reason: format!("{v:?} is not a port (1-65535)"),
                })?);
            }
            ("incremental-copy", "--at") => {
                let v = value("--at")?;
                let t = host::parse_host_time(&v).ok().flatten().ok_or_else(|| {
                    CliError::InvalidValue {
                        flag: "--at",
                        reason: format!("{v:?} is not a timestamp like 2026-11-21T10:15:00Z"),
                    }
                })?;
                at = Some(t);
            }
            ("full-load", "--table") => {
                let v = value("--table")?;
                let t = TableRef::parse(&v).map_err(|e| CliError::InvalidValue {
                    flag: "--table",
                    reason: e.to_string(),
                })?;
                if !tables.contains(&t) {
                    tables.push(t);
                }
            }
            ("full-load", "--reset") if inline.is_none() => reset = true,
            (command, _) => return Err(CliError::UnexpectedArgument { command, arg }),
        }
    }
    Ok(match command {
        "serve" => Command::Serve { port },
        "incremental-copy" => Command::IncrementalCopy { at },
        "full-load" => Command::FullLoad(FullLoadRequest { tables, reset }),
        _ => Command::Check,
    })
}

fn parse_port(text: &str) -> Option<u16> {
    text.trim().parse::<u16>().ok().filter(|p| *p != 0)
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
        Command::Help => {
            print!("{USAGE}");
            ExitCode::SUCCESS
        }
        Command::Version => {
            println!("handler {}", env!("CARGO_PKG_VERSION"));
            ExitCode::SUCCESS
        }
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
        Command::FullLoad(request) => {
            // No HTTP front end to answer in time: resume from each checkpoint until done.
            let jobs = make_jobs();
            let mut report = jobs.full_load(request.clone()).await;
            while report.status == Status::InProgress {
                for line in render::logs(&report) {
                    eprintln!("{line}");
                }
                let resume = FullLoadRequest {
                    reset: false,
                    ..request.clone()
                };
                report = jobs.full_load(resume).await;
            }
            print_report(&report)
        }
        Command::Check => check(make_jobs).await,
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
    host::run(listener, jobs, shutdown_signal()).await;
    tracing::info!("stopped");
    ExitCode::SUCCESS
}

/// Ctrl-C, or SIGTERM (what the host and container runtimes send).
async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
    tracing::info!("shutdown signal received; finishing invocations in flight");
}

/// Prints the report as the host would log it; success when every table is done.
fn print_report(report: &Report) -> ExitCode {
    for line in render::logs(report) {
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

    fn parse(args: &[&str]) -> Result<Command, CliError> {
        parse_args(args.iter().map(|s| s.to_string()))
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
                Command::FullLoad(FullLoadRequest {
                    tables: vec![],
                    reset: false,
                }),
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
                Command::FullLoad(FullLoadRequest {
                    tables: vec![t("dbo.a"), t("sales.b")],
                    reset: true,
                }),
            ),
            (&["check"], Command::Check),
            (&["--help"], Command::Help),
            (&["-h"], Command::Help),
            (&["help"], Command::Help),
            (&["check", "--help"], Command::Help),
            (&["--version"], Command::Version),
        ];
        for (args, want) in cases {
            assert_eq!(parse(args), Ok(want), "{args:?}");
        }
    }

    #[test]
    fn errors_name_the_flag() {
        let cases: &[(&[&str], &str)] = &[
            (&["copy"], "unknown command \"copy\""),
            (&["serve", "--port"], "--port needs a value"),
            (&["serve", "--port", "0"], "--port"),
            (&["serve", "--port", "65536"], "--port"),
            (&["serve", "--at", "x"], "unexpected argument \"--at\""),
            (&["incremental-copy", "--at", "soon"], "--at"),
            (&["incremental-copy", "--at", "0001-01-01T00:00:00"], "--at"),
            (&["full-load", "--table", "customers"], "--table"),
            (&["full-load", "--table", "dbo.x;drop"], "--table"),
            (&["full-load", "--reset=yes"], "unexpected argument"),
            (&["check", "extra"], "check: unexpected argument"),
        ];
        for (args, text) in cases {
            let e = parse(args).expect_err(&format!("{args:?}"));
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
