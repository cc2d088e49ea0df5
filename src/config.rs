//! Settings from the environment (app settings), validated, with secrets redacted.
//!
//! Every setting is read in one place so that the README's table, the Bicep app settings and
//! the code can be checked against each other: [`SETTINGS`] lists every variable this crate
//! reads (a test compares it with `local.settings.example.json`, and `docs/settings.md` is
//! written from it). Errors name the setting and never carry a secret's value: secrets are
//! wrapped in [`Secret`], and messages about them describe the problem, not the text.
//!
//! Parsing is pure ([`Settings::from_map`]); [`Settings::from_env`] only gathers the variables.
//! Each setting is understood here and only here: the storage and SQL settings become typed
//! values ([`StorageAccount`], [`SqlTarget`]) that the blob client and the SQL source take as
//! they are, so no other module re-reads a connection string or the environment. Nothing here
//! touches the network, so the handler can start (and answer the host's readiness probe)
//! before anything is reachable.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use crate::cdc::{validate_identifier, AllRowFilter, ChangeMode, RowFilter, TableRef};
use crate::naming::{validate_container_name, PathTemplate, DEFAULT_INCREMENTAL_TEMPLATE};

mod sql;
mod storage;

use sql::{parse_sql_login, parse_sql_server, validate_database_name};
pub use sql::{SqlLogin, SqlTarget};
use storage::parse_storage_connection_string;
pub use storage::{AccountKey, StorageAccount, StorageAuth, DEV_ACCOUNT, DEV_ACCOUNT_KEY};

/// A value that must never be printed. `Debug` and `Display` show `<redacted>`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }
    /// The secret itself, for the one place that hands it to a driver or signer.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

impl std::fmt::Display for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

/// A table to copy: `schema.table`, optionally `=capture_instance`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableSpec {
    pub table: TableRef,
    /// `=capture_instance`: read only this instance (no automatic switch to a newer one).
    pub capture_instance: Option<String>,
    /// `:net` or `:all`; `None` lets the capture instance decide (net changes when it has them).
    pub mode: Option<ChangeMode>,
}

/// All settings the handler reads.
#[derive(Debug, Clone)]
pub struct Settings {
    pub sql: SqlTarget,
    pub tables: Vec<TableSpec>,
    pub storage: StorageAccount,
    pub container: String,
    /// Rendered with the extension of [`Settings::format`].
    pub path_template: PathTemplate,
    /// `CDC_FORMAT`: the file format of every blob written.
    pub format: crate::sink::format::Format,
    pub capture_wait: Duration,
    pub capture_poll: Duration,
    pub watermark_table: TableRef,
    pub row_filter: RowFilter,
    /// `CDC_ALL_CHANGES_ROW_FILTER`: the row filter of tables read by all changes.
    pub all_row_filter: AllRowFilter,
    pub table_concurrency: usize,
    pub block_size: usize,
    /// `CDC_UPLOAD_BLOCKS_IN_FLIGHT`: Put Blocks each blob writer keeps in flight.
    pub upload_blocks_in_flight: usize,
    pub full_load_part_rows: u64,
    /// `CDC_FULL_LOAD_RANGES` and `CDC_FULL_LOAD_RANGE_MIN_ROWS`: how a keyed table's full
    /// load is split (`jobs::full_load::ranges::count`).
    pub full_load_ranges: u32,
    pub full_load_range_min_rows: u64,
    /// How long an HTTP-triggered FullLoad works before answering 202 and leaving the rest
    /// to the next invocation.
    pub full_load_http_budget: Duration,
    /// `CDC_SQL_COMMAND_TIMEOUT_SECONDS`: applied to every SQL Server connection.
    pub sql_command_timeout: CommandTimeout,
    /// `INCREMENTAL_COPY_SCHEDULE`, the six-field NCRONTAB expression the timer trigger reads
    /// (`%INCREMENTAL_COPY_SCHEDULE%` in function.json). `None` when unset: the handler itself
    /// can run without it (the Functions host cannot). Validated for shape only.
    pub schedule: Option<String>,
    /// `CDC_FANOUT`: how the timer's tables are copied.
    pub fanout: Fanout,
    /// `CDC_QUEUE_MAX_DEQUEUE_COUNT`: host.json's `extensions.queues.maxDequeueCount`, so a
    /// `CopyTable` run knows when a failure is the message's last try.
    pub queue_max_dequeue_count: i64,
}

/// `CDC_FANOUT`: where the `IncrementalCopy` timer's per-table work runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Fanout {
    /// Every table in the timer's own invocation, `CDC_TABLE_CONCURRENCY` at a time.
    #[default]
    Inline,
    /// One `cdc-copy-tables` message per table; `CopyTable` invocations, on as many instances
    /// as the host scales to, copy them (`docs/scale-out.md`).
    Queue,
}

fn parse_fanout(v: &str) -> Result<Fanout, String> {
    match v.trim().to_ascii_lowercase().as_str() {
        "inline" => Ok(Fanout::Inline),
        "queue" => Ok(Fanout::Queue),
        _ => Err(format!("{} is not `inline` or `queue`", shown(v))),
    }
}

/// How long one SQL Server round trip may take before the statement fails (tiberius's
/// `Config::command_timeout`: the wait for the next part of a reply, reset by every token the
/// server sends, so a long result that keeps streaming never trips it). Never zero and never
/// beyond [`CommandTimeout::MAX`], so a stalled statement always ends before the function
/// timeout does and the run can say which statement stalled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CommandTimeout(Duration);

impl CommandTimeout {
    /// 25 minutes: under the 30-minute `functionTimeout` of host.json.
    pub const MAX: Duration = Duration::from_secs(1500);
    /// `CDC_SQL_COMMAND_TIMEOUT_SECONDS`'s default: see its [`SETTINGS`] entry for why.
    pub const DEFAULT: CommandTimeout = CommandTimeout(Duration::from_secs(300));

    /// `None` for zero or more than [`CommandTimeout::MAX`].
    pub fn new(timeout: Duration) -> Option<CommandTimeout> {
        (!timeout.is_zero() && timeout <= Self::MAX).then_some(CommandTimeout(timeout))
    }

    pub fn duration(&self) -> Duration {
        self.0
    }
}

impl Default for CommandTimeout {
    fn default() -> CommandTimeout {
        CommandTimeout::DEFAULT
    }
}

impl std::fmt::Display for CommandTimeout {
    /// `300 s`, or `0.2 s` below a second (the tests' short timeouts).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.0.subsec_nanos() == 0 {
            write!(f, "{} s", self.0.as_secs())
        } else {
            write!(f, "{} s", self.0.as_secs_f64())
        }
    }
}

/// One documented environment variable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SettingDoc {
    pub name: &'static str,
    /// The default when unset, as text; `None` when there is none (required, or optional
    /// without a default).
    pub default: Option<&'static str>,
    /// For whole-number settings, the inclusive range the parser accepts (and the docs
    /// state); the parser reads the default from `default`.
    pub range: Option<(u64, u64)>,
    pub description: &'static str,
    /// Never printed, logged or echoed in an error.
    pub secret: bool,
}

pub const CDC_SQL_CONNECTION_STRING: &str = "CDC_SQL_CONNECTION_STRING";
pub const CDC_ALLOW_PLAINTEXT_SQL: &str = "CDC_ALLOW_PLAINTEXT_SQL";
pub const CDC_SQL_SERVER: &str = "CDC_SQL_SERVER";
pub const CDC_SQL_DATABASE: &str = "CDC_SQL_DATABASE";
pub const CDC_SQL_COMMAND_TIMEOUT_SECONDS: &str = "CDC_SQL_COMMAND_TIMEOUT_SECONDS";
pub const AZURE_CLIENT_ID: &str = "AZURE_CLIENT_ID";
pub const CDC_TABLES: &str = "CDC_TABLES";
pub const CDC_STORAGE_CONNECTION_STRING: &str = "CDC_STORAGE_CONNECTION_STRING";
pub const CDC_STORAGE_ACCOUNT_URL: &str = "CDC_STORAGE_ACCOUNT_URL";
pub const CDC_CONTAINER: &str = "CDC_CONTAINER";
pub const CDC_PATH_TEMPLATE: &str = "CDC_PATH_TEMPLATE";
pub const CDC_CAPTURE_WAIT_SECONDS: &str = "CDC_CAPTURE_WAIT_SECONDS";
pub const CDC_CAPTURE_POLL_SECONDS: &str = "CDC_CAPTURE_POLL_SECONDS";
pub const CDC_WATERMARK_TABLE: &str = "CDC_WATERMARK_TABLE";
pub const CDC_ROW_FILTER: &str = "CDC_ROW_FILTER";
pub const CDC_FORMAT: &str = "CDC_FORMAT";
pub const CDC_ALL_CHANGES_ROW_FILTER: &str = "CDC_ALL_CHANGES_ROW_FILTER";
pub const CDC_TABLE_CONCURRENCY: &str = "CDC_TABLE_CONCURRENCY";
pub const CDC_BLOCK_SIZE_MIB: &str = "CDC_BLOCK_SIZE_MIB";
pub const CDC_UPLOAD_BLOCKS_IN_FLIGHT: &str = "CDC_UPLOAD_BLOCKS_IN_FLIGHT";
pub const CDC_FULL_LOAD_PART_ROWS: &str = "CDC_FULL_LOAD_PART_ROWS";
pub const CDC_FULL_LOAD_HTTP_BUDGET_SECONDS: &str = "CDC_FULL_LOAD_HTTP_BUDGET_SECONDS";
pub const CDC_FULL_LOAD_RANGES: &str = "CDC_FULL_LOAD_RANGES";
pub const CDC_FULL_LOAD_RANGE_MIN_ROWS: &str = "CDC_FULL_LOAD_RANGE_MIN_ROWS";
pub const CDC_FANOUT: &str = "CDC_FANOUT";
pub const CDC_QUEUE_MAX_DEQUEUE_COUNT: &str = "CDC_QUEUE_MAX_DEQUEUE_COUNT";
pub const INCREMENTAL_COPY_SCHEDULE: &str = "INCREMENTAL_COPY_SCHEDULE";
pub const FUNCTIONS_CUSTOMHANDLER_PORT: &str = "FUNCTIONS_CUSTOMHANDLER_PORT";
pub const RUST_LOG: &str = "RUST_LOG";
pub const CDC_LOG_FORMAT: &str = "CDC_LOG_FORMAT";

pub const DEFAULT_CONTAINER: &str = "raw";
pub const DEFAULT_WATERMARK_TABLE: &str = "cdc_copy.watermark";
/// The log filter when `RUST_LOG` is unset or invalid: our INFO lines, and only warnings from
/// the Azure SDK, whose HTTP pipeline logs every failed response at INFO (`<== Failed
/// response …`), noise beside our own error line in `handler check` and the other commands.
pub const DEFAULT_LOG_FILTER: &str =
    "info,azure_core=warn,azure_identity=warn,azure_storage_blob=warn,typespec_client_core=warn";

/// Every environment variable this crate reads, in the order `docs/settings.md` lists them.
pub const SETTINGS: &[SettingDoc] = &[
    SettingDoc {
        name: CDC_SQL_CONNECTION_STRING,
        default: None,
        range: None,
        description: "SQL login: ADO.NET connection string, e.g. `Server=tcp:host,1433;Database=db;User ID=u;Password=p;Encrypt=true;TrustServerCertificate=false`. Must name a Database. Set this OR CDC_SQL_SERVER + CDC_SQL_DATABASE, not both.",
        secret: true,
    },
    SettingDoc {
        name: CDC_ALLOW_PLAINTEXT_SQL,
        default: Some("false"),
        range: None,
        description: "`true` lets CDC_SQL_CONNECTION_STRING use `Encrypt=DANGER_PLAINTEXT` (no TLS at all). For test doubles only; never set it in production.",
        secret: false,
    },
    SettingDoc {
        name: CDC_SQL_SERVER,
        default: None,
        range: None,
        description: "Entra ID (managed identity) login: server as `host`, `host,port` or `tcp:host,port` (port 1433 when omitted), e.g. `tcp:myserver.database.windows.net,1433`. Needs CDC_SQL_DATABASE.",
        secret: false,
    },
    SettingDoc {
        name: CDC_SQL_DATABASE,
        default: None,
        range: None,
        description: "Entra ID login: the database whose CDC is copied (with CDC_SQL_SERVER).",
        secret: false,
    },
    SettingDoc {
        name: CDC_SQL_COMMAND_TIMEOUT_SECONDS,
        default: Some("300"),
        range: Some((1, 1500)),
        description: "How long (seconds) one SQL Server round trip may wait for the server's next reply before the statement fails with an error naming it (tiberius would cut off at 30 s). Long enough for the net-changes function over a busy window, or a keyset page of a large table, to produce its first row; short enough that a stalled statement ends well inside the 30-minute function timeout (after up to `CDC_CAPTURE_WAIT_SECONDS` of waiting, or the 20 minutes a timer run spends on a full load), so the run reports it and the host's retry gets a fresh invocation.",
        secret: false,
    },
    SettingDoc {
        name: AZURE_CLIENT_ID,
        default: None,
        range: None,
        description: "Client id (GUID) of the user-assigned managed identity used for Entra ID logins to SQL (CDC_SQL_SERVER) and Storage (CDC_STORAGE_ACCOUNT_URL). Unset: system-assigned identity / developer credentials.",
        secret: false,
    },
    SettingDoc {
        name: CDC_TABLES,
        default: None,
        range: None,
        description: "Required. Comma-separated tables to copy: `schema.table`, optionally `=capture_instance` to read only that instance (no automatic switch to a newer one after DDL) and `:net` or `:all` to force net changes or all changes (by default net changes when the capture instance has them, all changes otherwise), e.g. `dbo.customers,dbo.orders=dbo_orders_v2,dbo.audit_log:all`.",
        secret: false,
    },
    SettingDoc {
        name: CDC_STORAGE_CONNECTION_STRING,
        default: None,
        range: None,
        description: "Storage by account key: a connection string with AccountName and AccountKey, or `UseDevelopmentStorage=true` (Azurite). Set this OR CDC_STORAGE_ACCOUNT_URL.",
        secret: true,
    },
    SettingDoc {
        name: CDC_STORAGE_ACCOUNT_URL,
        default: None,
        range: None,
        description: "Storage by Entra ID: the blob endpoint, e.g. `https://myaccount.blob.core.windows.net` (https; no query string, so no SAS token).",
        secret: false,
    },
    SettingDoc {
        name: CDC_CONTAINER,
        default: Some(DEFAULT_CONTAINER),
        range: None,
        description: "Blob container the CSV files land in (3–63 lowercase letters, digits and single hyphens).",
        secret: false,
    },
    SettingDoc {
        name: CDC_PATH_TEMPLATE,
        default: Some(DEFAULT_INCREMENTAL_TEMPLATE),
        range: None,
        description: "Blob path of an incremental file, from the trigger time (UTC). The full load is written under `{schema}/{table}/full/{yyyyMMddHHmmssfff}/part-NNNNN.csv`.",
        secret: false,
    },
    SettingDoc {
        name: CDC_CAPTURE_WAIT_SECONDS,
        default: Some("120"),
        range: Some((0, 1800)),
        description: "How long (seconds) a run waits for the CDC capture job to pass the trigger time before copying what is captured (a late change lands in the next window).",
        secret: false,
    },
    SettingDoc {
        name: CDC_CAPTURE_POLL_SECONDS,
        default: Some("5"),
        range: Some((1, 60)),
        description: "How often (seconds) the capture progress is polled while waiting.",
        secret: false,
    },
    SettingDoc {
        name: CDC_WATERMARK_TABLE,
        default: Some(DEFAULT_WATERMARK_TABLE),
        range: None,
        description: "`schema.table` of the watermark table in the source database (created by the setup script).",
        secret: false,
    },
    SettingDoc {
        name: CDC_FORMAT,
        default: Some("csv"),
        range: None,
        description: "File format of every blob (full-load parts, incremental windows, tail blobs): `csv` (docs/csv-format.md) or `parquet` (docs/parquet-format.md). Names end in `.csv` or `.parquet`: a path template's `{ext}`, or a `.csv` at its end, becomes the format's extension.",
        secret: false,
    },
    SettingDoc {
        name: CDC_ROW_FILTER,
        default: Some("all"),
        range: None,
        description: "Row filter of `cdc.fn_cdc_get_net_changes_*`: `all` (operations 1, 2, 4) or `all with merge` (1 and 5).",
        secret: false,
    },
    SettingDoc {
        name: CDC_ALL_CHANGES_ROW_FILTER,
        default: Some("all update old"),
        range: None,
        description: "Row filter of `cdc.fn_cdc_get_all_changes_*`, for tables read by all changes (no primary key or unique index, or `:all`): `all update old` (an update is two rows, operation 3 with the values before and 4 with the values after; without a key the before-image is what tells a consumer which row changed) or `all` (operations 1, 2, 4).",
        secret: false,
    },
    SettingDoc {
        name: CDC_TABLE_CONCURRENCY,
        default: Some("4"),
        range: Some((1, 64)),
        description: "How many tables are copied at the same time.",
        secret: false,
    },
    SettingDoc {
        name: CDC_BLOCK_SIZE_MIB,
        default: Some("4"),
        range: Some((1, 100)),
        description: "Size in MiB of each staged blob block; memory use is at most this times (CDC_UPLOAD_BLOCKS_IN_FLIGHT + 1) times the table concurrency.",
        secret: false,
    },
    SettingDoc {
        name: CDC_UPLOAD_BLOCKS_IN_FLIGHT,
        default: Some("4"),
        range: Some((1, 16)),
        description: "Put Block requests each blob keeps in flight while the next block fills, so an upload is not capped at one block per round trip to Blob Storage. Memory: at most (this + 1) × CDC_BLOCK_SIZE_MIB per table being copied, times CDC_TABLE_CONCURRENCY (defaults: 5 × 4 MiB × 4 = 80 MiB).",
        secret: false,
    },
    SettingDoc {
        name: CDC_FULL_LOAD_PART_ROWS,
        default: Some("1000000"),
        range: Some((1, 100000000)),
        description: "Rows per full-load part blob.",
        secret: false,
    },
    SettingDoc {
        name: CDC_FULL_LOAD_RANGES,
        default: Some("1"),
        range: Some((1, 64)),
        description: "Most key ranges a keyed table's full load is split into, each loaded by its own worker (1: no split).",
        secret: false,
    },
    SettingDoc {
        name: CDC_FULL_LOAD_RANGE_MIN_ROWS,
        default: Some("1000000"),
        range: Some((1, 1000000000)),
        description: "Rows per range at least: a table of fewer than twice this many rows is loaded as one range.",
        secret: false,
    },
    SettingDoc {
        name: CDC_FANOUT,
        default: Some("inline"),
        range: None,
        description: "`inline`: the IncrementalCopy timer copies every table itself. `queue`: it copies nothing and sends one message per table to the `cdc-copy-tables` queue, and the CopyTable function copies each table, on as many instances as the host scales out to (docs/scale-out.md). `handler incremental-copy` always copies inline.",
        secret: false,
    },
    SettingDoc {
        name: CDC_QUEUE_MAX_DEQUEUE_COUNT,
        default: Some("5"),
        range: Some((1, 100)),
        description: "host.json `extensions.queues.maxDequeueCount`, repeated here so that a CopyTable run knows its last try: a transient failure on that delivery is logged as the table's final failure before the host moves the message to `cdc-copy-tables-poison`. Keep the two equal.",
        secret: false,
    },
    SettingDoc {
        name: CDC_FULL_LOAD_HTTP_BUDGET_SECONDS,
        default: Some("180"),
        range: Some((1, 200)),
        description: "How long (seconds) an HTTP FullLoad call works before answering 202 and leaving the rest to the next call; kept under the ~230 s HTTP front-end limit.",
        secret: false,
    },
    SettingDoc {
        name: INCREMENTAL_COPY_SCHEDULE,
        default: None,
        range: None,
        description: "Six-field NCRONTAB schedule of IncrementalCopy (`{second} {minute} {hour} {day} {month} {day-of-week}`), e.g. `0 */15 * * * *`. Read by the Functions host (function.json `%INCREMENTAL_COPY_SCHEDULE%`); required there, checked for shape here.",
        secret: false,
    },
    SettingDoc {
        name: FUNCTIONS_CUSTOMHANDLER_PORT,
        default: None,
        range: None,
        description: "Set by the Functions host: the loopback port `handler serve` listens on (`--port` overrides it).",
        secret: false,
    },
    SettingDoc {
        name: RUST_LOG,
        default: Some(DEFAULT_LOG_FILTER),
        range: None,
        description: "Log filter (tracing-subscriber EnvFilter syntax), e.g. `info,cdc_copy=debug`.",
        secret: false,
    },
    SettingDoc {
        name: CDC_LOG_FORMAT,
        default: Some("text"),
        range: None,
        description: "`text` or `json` (one JSON object per line on stdout).",
        secret: false,
    },
];

/// A setting is missing or wrong. Messages name the setting; values of secret settings never
/// appear (for other settings the offending text is quoted, shortened, to help fix it).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("{name} is not set: {what}")]
    Missing {
        name: &'static str,
        what: &'static str,
    },
    #[error("{name} is invalid: {reason}")]
    Invalid { name: &'static str, reason: String },
    #[error("set either {first} or {second}, not both")]
    Conflict {
        first: &'static str,
        second: &'static str,
    },
}

impl ConfigError {
    /// The setting to fix (the first one for a conflict).
    pub fn setting(&self) -> &'static str {
        match self {
            ConfigError::Missing { name, .. } | ConfigError::Invalid { name, .. } => name,
            ConfigError::Conflict { first, .. } => first,
        }
    }
}

fn invalid(name: &'static str, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        name,
        reason: reason.into(),
    }
}

/// Quotes a non-secret value for an error message, shortened so a pasted blob cannot flood a log.
fn shown(value: &str) -> String {
    const MAX: usize = 80;
    if value.chars().count() <= MAX {
        format!("{value:?}")
    } else {
        let head: String = value.chars().take(MAX).collect();
        format!("{head:?}…")
    }
}

impl Settings {
    /// Reads every variable in [`SETTINGS`] from the process environment and validates them.
    pub fn from_env() -> Result<Settings, ConfigError> {
        Settings::from_map(&env_map()?)
    }

    /// Validates settings from a name → value map (empty values count as unset, since
    /// `local.settings.json` and app settings often carry `""`). Returns the first error in
    /// [`SETTINGS`] order; [`Settings::check_map`] returns all of them.
    pub fn from_map(vars: &HashMap<String, String>) -> Result<Settings, ConfigError> {
        Parser::new(vars).parse()
    }

    /// Every problem with these settings, in [`SETTINGS`] order (empty when they are valid).
    pub fn check_map(vars: &HashMap<String, String>) -> Vec<ConfigError> {
        let mut parser = Parser::new(vars);
        let _ = parser.parse_all();
        parser.errors
    }

    /// [`Settings::check_map`] over the process environment.
    pub fn check_env() -> Vec<ConfigError> {
        match env_map() {
            Ok(vars) => Settings::check_map(&vars),
            Err(e) => vec![e],
        }
    }
}

/// The variables of [`SETTINGS`] present in the environment.
fn env_map() -> Result<HashMap<String, String>, ConfigError> {
    let mut vars = HashMap::new();
    for doc in SETTINGS {
        match std::env::var(doc.name) {
            Ok(value) => {
                vars.insert(doc.name.to_string(), value);
            }
            Err(std::env::VarError::NotPresent) => {}
            Err(std::env::VarError::NotUnicode(_)) => {
                return Err(invalid(doc.name, "is not valid UTF-8"));
            }
        }
    }
    Ok(vars)
}

/// Collects every error while parsing, so `check` can list them all at once.
struct Parser<'a> {
    vars: &'a HashMap<String, String>,
    errors: Vec<ConfigError>,
}

impl<'a> Parser<'a> {
    fn new(vars: &'a HashMap<String, String>) -> Parser<'a> {
        Parser {
            vars,
            errors: Vec::new(),
        }
    }

    /// The trimmed value, `None` when unset or blank.
    fn get(&self, name: &'static str) -> Option<&'a str> {
        self.vars
            .get(name)
            .map(|v| v.trim())
            .filter(|v| !v.is_empty())
    }

    fn record<T>(&mut self, result: Result<T, ConfigError>) -> Option<T> {
        match result {
            Ok(value) => Some(value),
            Err(e) => {
                self.errors.push(e);
                None
            }
        }
    }

    fn parse(mut self) -> Result<Settings, ConfigError> {
        match self.parse_all() {
            Some(settings) if self.errors.is_empty() => Ok(settings),
            _ => Err(self.errors.remove(0)),
        }
    }

    fn parse_all(&mut self) -> Option<Settings> {
        let client_id = self.get(AZURE_CLIENT_ID).map(parse_client_id);
        let client_id = match client_id {
            Some(r) => self.record(r).map(Some),
            None => Some(None),
        };
        let sql = self.sql(client_id.clone().flatten());
        let tables = self
            .get(CDC_TABLES)
            .ok_or(ConfigError::Missing {
                name: CDC_TABLES,
                what: "list the tables to copy, e.g. dbo.customers,dbo.orders",
            })
            .and_then(parse_tables);
        let tables = self.record(tables);
        let storage = self.storage(client_id.flatten());
        let container = self.text(CDC_CONTAINER, DEFAULT_CONTAINER, |v| {
            validate_container_name(v)
                .map(|()| v.to_string())
                .map_err(|e| e.to_string())
        });
        let path_template = self.text(CDC_PATH_TEMPLATE, DEFAULT_INCREMENTAL_TEMPLATE, |v| {
            v.parse::<PathTemplate>().map_err(|e| e.to_string())
        });
        let capture_wait = self.number(CDC_CAPTURE_WAIT_SECONDS);
        let capture_poll = self.number(CDC_CAPTURE_POLL_SECONDS);
        let watermark_table = self.text(CDC_WATERMARK_TABLE, DEFAULT_WATERMARK_TABLE, |v| {
            TableRef::parse(v).map_err(|e| e.to_string())
        });
        let format = self.text(CDC_FORMAT, "csv", crate::sink::format::Format::parse);
        let path_template = match (path_template, format) {
            (Some(template), Some(format)) => Some(template.with_extension(format.extension())),
            _ => None,
        };
        let row_filter = self.text(CDC_ROW_FILTER, "all", parse_row_filter);
        let all_row_filter = self.text(
            CDC_ALL_CHANGES_ROW_FILTER,
            "all update old",
            parse_all_row_filter,
        );
        let table_concurrency = self.number(CDC_TABLE_CONCURRENCY);
        let block_size_mib = self.number(CDC_BLOCK_SIZE_MIB);
        let blocks_in_flight = self.number(CDC_UPLOAD_BLOCKS_IN_FLIGHT);
        let full_load_part_rows = self.number(CDC_FULL_LOAD_PART_ROWS);
        let full_load_ranges = self.number(CDC_FULL_LOAD_RANGES);
        let full_load_range_min_rows = self.number(CDC_FULL_LOAD_RANGE_MIN_ROWS);
        let budget = self.number(CDC_FULL_LOAD_HTTP_BUDGET_SECONDS);
        let command_timeout = self
            .number(CDC_SQL_COMMAND_TIMEOUT_SECONDS)
            .and_then(|secs| {
                let r = CommandTimeout::new(Duration::from_secs(secs)).ok_or_else(|| {
                    invalid(
                        CDC_SQL_COMMAND_TIMEOUT_SECONDS,
                        format!("{secs} is not a usable timeout"),
                    )
                });
                self.record(r)
            });
        let fanout = self.text(CDC_FANOUT, "inline", parse_fanout);
        let max_dequeue = self.number(CDC_QUEUE_MAX_DEQUEUE_COUNT);
        let schedule = match self.get(INCREMENTAL_COPY_SCHEDULE) {
            None => Some(None),
            Some(v) => {
                let r = validate_schedule(v)
                    .map(|()| Some(v.to_string()))
                    .map_err(|reason| invalid(INCREMENTAL_COPY_SCHEDULE, reason));
                self.record(r)
            }
        };
        Some(Settings {
            sql: sql?,
            tables: tables?,
            storage: storage?,
            container: container?,
            path_template: path_template?,
            format: format?,
            capture_wait: Duration::from_secs(capture_wait?),
            capture_poll: Duration::from_secs(capture_poll?),
            watermark_table: watermark_table?,
            row_filter: row_filter?,
            all_row_filter: all_row_filter?,
            table_concurrency: table_concurrency? as usize,
            block_size: (block_size_mib? * 1024 * 1024) as usize,
            upload_blocks_in_flight: blocks_in_flight? as usize,
            full_load_part_rows: full_load_part_rows?,
            full_load_ranges: full_load_ranges? as u32,
            full_load_range_min_rows: full_load_range_min_rows?,
            full_load_http_budget: Duration::from_secs(budget?),
            sql_command_timeout: command_timeout?,
            schedule: schedule?,
            fanout: fanout?,
            queue_max_dequeue_count: max_dequeue? as i64,
        })
    }

    /// A text setting with a default, checked by `check` (whose error is the reason).
    fn text<T>(
        &mut self,
        name: &'static str,
        default: &str,
        check: impl FnOnce(&str) -> Result<T, String>,
    ) -> Option<T> {
        let value = self.get(name).unwrap_or(default);
        let r = check(value).map_err(|reason| invalid(name, reason));
        self.record(r)
    }

    /// A whole number, with the default and inclusive range its [`SETTINGS`] entry gives.
    fn number(&mut self, name: &'static str) -> Option<u64> {
        let (default, min, max) = number_doc(name);
        let r = match self.get(name) {
            None => Ok(default),
            Some(v) => match v.parse::<u64>() {
                Ok(n) if (min..=max).contains(&n) => Ok(n),
                Ok(n) => Err(invalid(name, format!("{n} is outside {min}..={max}"))),
                Err(_) => Err(invalid(
                    name,
                    format!("{} is not a whole number ({min}..={max})", shown(v)),
                )),
            },
        };
        self.record(r)
    }

    fn sql(&mut self, client_id: Option<String>) -> Option<SqlTarget> {
        let conn = self.get(CDC_SQL_CONNECTION_STRING);
        let server = self.get(CDC_SQL_SERVER);
        let database = self.get(CDC_SQL_DATABASE);
        let allow_plaintext = match self.get(CDC_ALLOW_PLAINTEXT_SQL) {
            None => Some(false),
            Some(v) => {
                let r = parse_bool(v).ok_or_else(|| {
                    invalid(
                        CDC_ALLOW_PLAINTEXT_SQL,
                        format!("{} is not true or false", shown(v)),
                    )
                });
                self.record(r)
            }
        };
        let r = match (conn, server, database) {
            (Some(_), Some(_), _) => Err(ConfigError::Conflict {
                first: CDC_SQL_CONNECTION_STRING,
                second: CDC_SQL_SERVER,
            }),
            (Some(_), None, Some(_)) => Err(ConfigError::Conflict {
                first: CDC_SQL_CONNECTION_STRING,
                second: CDC_SQL_DATABASE,
            }),
            (Some(conn), None, None) => {
                parse_sql_login(conn, allow_plaintext.unwrap_or(false))
                    .map(|login| SqlTarget::Login(Box::new(login)))
            }
            (None, Some(server), Some(database)) => {
                parse_sql_server(server).and_then(|(host, port)| {
                    validate_database_name(database)?;
                    Ok(SqlTarget::Entra {
                        host,
                        port,
                        database: database.to_string(),
                        client_id,
                    })
                })
            }
            (None, Some(_), None) => Err(ConfigError::Missing {
                name: CDC_SQL_DATABASE,
                what: "CDC_SQL_SERVER needs CDC_SQL_DATABASE (the database to copy from)",
            }),
            (None, None, Some(_)) => Err(ConfigError::Missing {
                name: CDC_SQL_SERVER,
                what: "CDC_SQL_DATABASE needs CDC_SQL_SERVER (host[,port])",
            }),
            (None, None, None) => Err(ConfigError::Missing {
                name: CDC_SQL_CONNECTION_STRING,
                what: "set CDC_SQL_CONNECTION_STRING (SQL login) or CDC_SQL_SERVER + CDC_SQL_DATABASE (Entra ID)",
            }),
        };
        self.record(r)
    }

    fn storage(&mut self, client_id: Option<String>) -> Option<StorageAccount> {
        let conn = self.get(CDC_STORAGE_CONNECTION_STRING);
        let url = self.get(CDC_STORAGE_ACCOUNT_URL);
        let r = match (conn, url) {
            (Some(_), Some(_)) => Err(ConfigError::Conflict {
                first: CDC_STORAGE_CONNECTION_STRING,
                second: CDC_STORAGE_ACCOUNT_URL,
            }),
            (Some(conn), None) => parse_storage_connection_string(conn),
            (None, Some(url)) => StorageAccount::from_account_url(url, client_id),
            (None, None) => Err(ConfigError::Missing {
                name: CDC_STORAGE_CONNECTION_STRING,
                what: "set CDC_STORAGE_CONNECTION_STRING (account key or UseDevelopmentStorage=true) or CDC_STORAGE_ACCOUNT_URL (Entra ID)",
            }),
        };
        self.record(r)
    }
}

/// Default and range of a whole-number setting, from its [`SETTINGS`] entry.
fn number_doc(name: &str) -> (u64, u64, u64) {
    let doc = SETTINGS
        .iter()
        .find(|d| d.name == name)
        .unwrap_or_else(|| panic!("{name} is not in SETTINGS"));
    let (min, max) = doc
        .range
        .unwrap_or_else(|| panic!("{name} has no range in SETTINGS"));
    let default = doc
        .default
        .and_then(|d| d.parse().ok())
        .unwrap_or_else(|| panic!("{name}'s default in SETTINGS is not a number"));
    (default, min, max)
}

fn parse_bool(v: &str) -> Option<bool> {
    match v.to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" => Some(true),
        "false" | "0" | "no" => Some(false),
        _ => None,
    }
}

fn parse_client_id(v: &str) -> Result<String, ConfigError> {
    uuid::Uuid::parse_str(v)
        .map(|_| v.to_string())
        .map_err(|_| {
            invalid(
                AZURE_CLIENT_ID,
                format!(
                    "{} is not a GUID (the managed identity's client id)",
                    shown(v)
                ),
            )
        })
}

/// `schema.table[=capture_instance]`, comma-separated, no duplicates, at least one.
fn parse_tables(v: &str) -> Result<Vec<TableSpec>, ConfigError> {
    let mut specs: Vec<TableSpec> = Vec::new();
    let mut seen = HashSet::new();
    for (i, item) in v.split(',').map(str::trim).enumerate() {
        if item.is_empty() {
            return Err(invalid(
                CDC_TABLES,
                format!("entry {} is empty (stray comma?)", i + 1),
            ));
        }
        let (item, mode) = match item.rsplit_once(':') {
            Some((rest, mode)) => (rest.trim(), Some(parse_mode(mode.trim(), i)?)),
            None => (item, None),
        };
        let (table, capture_instance) = match item.split_once('=') {
            Some((t, ci)) => (t.trim(), Some(ci.trim())),
            None => (item, None),
        };
        let table = TableRef::parse(table)
            .map_err(|e| invalid(CDC_TABLES, format!("entry {}: {e}", i + 1)))?;
        if let Some(ci) = capture_instance {
            validate_identifier(ci).map_err(|e| {
                invalid(
                    CDC_TABLES,
                    format!("entry {}: capture instance: {e}", i + 1),
                )
            })?;
        }
        if !seen.insert(table.clone()) {
            return Err(invalid(CDC_TABLES, format!("{table} is listed twice")));
        }
        specs.push(TableSpec {
            table,
            capture_instance: capture_instance.map(str::to_string),
            mode,
        });
    }
    Ok(specs)
}

fn parse_mode(v: &str, entry: usize) -> Result<ChangeMode, ConfigError> {
    match v.to_ascii_lowercase().as_str() {
        "net" => Ok(ChangeMode::Net),
        "all" => Ok(ChangeMode::All),
        _ => Err(invalid(
            CDC_TABLES,
            format!(
                "entry {}: {} after `:` is not `net` or `all`",
                entry + 1,
                shown(v)
            ),
        )),
    }
}

fn parse_all_row_filter(v: &str) -> Result<AllRowFilter, String> {
    let normal = v.split_whitespace().collect::<Vec<_>>().join(" ");
    match normal.to_ascii_lowercase().as_str() {
        "all update old" => Ok(AllRowFilter::AllUpdateOld),
        "all" => Ok(AllRowFilter::All),
        _ => Err(format!("{} is not `all update old` or `all`", shown(v))),
    }
}

fn parse_row_filter(v: &str) -> Result<RowFilter, String> {
    let normal = v.split_whitespace().collect::<Vec<_>>().join(" ");
    match normal.to_ascii_lowercase().as_str() {
        "all" => Ok(RowFilter::All),
        "all with merge" => Ok(RowFilter::AllWithMerge),
        _ => Err(format!("{} is not `all` or `all with merge`", shown(v))),
    }
}

/// Six whitespace-separated NCRONTAB fields made of the characters cron fields use.
fn validate_schedule(v: &str) -> Result<(), String> {
    let fields: Vec<&str> = v.split_whitespace().collect();
    if fields.len() != 6 {
        let hint = if fields.len() == 5 {
            " (a five-field cron: prepend the seconds field, e.g. `0 */15 * * * *`)"
        } else {
            ""
        };
        return Err(format!(
            "{} has {} fields; NCRONTAB needs six: {{second}} {{minute}} {{hour}} {{day}} {{month}} {{day-of-week}}{hint}",
            shown(v),
            fields.len()
        ));
    }
    for field in fields {
        if let Some(c) = field
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '*' | ',' | '-' | '/')))
        {
            return Err(format!("{} has {c:?} in field {field:?}", shown(v)));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Minimal valid settings (SQL login + Azurite + one table).
    fn base() -> HashMap<String, String> {
        [
            (
                CDC_SQL_CONNECTION_STRING,
                "Server=tcp:localhost,1433;Database=shop;User ID=sa;Password=Str0ng!Pass;Encrypt=true;TrustServerCertificate=true",
            ),
            (CDC_TABLES, "dbo.customers"),
            (CDC_STORAGE_CONNECTION_STRING, "UseDevelopmentStorage=true"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
    }

    fn with(changes: &[(&str, Option<&str>)]) -> HashMap<String, String> {
        let mut vars = base();
        for (k, v) in changes {
            match v {
                Some(v) => vars.insert(k.to_string(), v.to_string()),
                None => vars.remove(*k),
            };
        }
        vars
    }

    fn err(changes: &[(&str, Option<&str>)]) -> ConfigError {
        Settings::from_map(&with(changes)).expect_err("settings should be refused")
    }

    fn ok(changes: &[(&str, Option<&str>)]) -> Settings {
        Settings::from_map(&with(changes)).unwrap_or_else(|e| panic!("{changes:?}: {e}"))
    }

    #[test]
    fn defaults() {
        let s = ok(&[]);
        assert_eq!(s.container, "raw");
        assert_eq!(
            s.path_template,
            DEFAULT_INCREMENTAL_TEMPLATE.parse().unwrap()
        );
        assert_eq!(s.capture_wait, Duration::from_secs(120));
        assert_eq!(s.capture_poll, Duration::from_secs(5));
        assert_eq!(
            s.watermark_table,
            TableRef::parse("cdc_copy.watermark").unwrap()
        );
        assert_eq!(s.row_filter, RowFilter::All);
        assert_eq!(s.table_concurrency, 4);
        assert_eq!(s.block_size, 4 * 1024 * 1024);
        assert_eq!(s.upload_blocks_in_flight, 4);
        assert_eq!(
            number_doc(CDC_UPLOAD_BLOCKS_IN_FLIGHT),
            (
                crate::sink::blob::DEFAULT_BLOCKS_IN_FLIGHT as u64,
                1,
                crate::sink::blob::MAX_BLOCKS_IN_FLIGHT as u64
            ),
            "the setting's default and range are the writer's"
        );
        assert_eq!(s.full_load_part_rows, 1_000_000);
        assert_eq!(s.full_load_http_budget, Duration::from_secs(180));
        assert_eq!(s.sql_command_timeout.duration(), Duration::from_secs(300));
        assert_eq!(s.schedule, None);
        assert_eq!(s.fanout, Fanout::Inline);
        assert_eq!(s.queue_max_dequeue_count, 5);
        assert_eq!(
            s.tables,
            vec![TableSpec {
                table: TableRef::parse("dbo.customers").unwrap(),
                capture_instance: None,
                mode: None,
            }]
        );
        assert_eq!(
            s.storage.endpoint.as_str(),
            "http://127.0.0.1:10000/devstoreaccount1"
        );
        assert!(matches!(s.storage.auth, StorageAuth::SharedKey { .. }));
        assert!(matches!(&s.sql, SqlTarget::Login(l) if l.database() == "shop" && !l.plaintext()));
    }

    /// Every documented default is the one the parser applies (blank counts as unset).
    #[test]
    fn documented_defaults_match_and_blank_is_unset() {
        let parsed = format!("{:?}", ok(&[]));
        for doc in SETTINGS.iter().filter(|d| d.name.starts_with("CDC_")) {
            let Some(default) = doc.default else { continue };
            if matches!(doc.name, CDC_LOG_FORMAT | CDC_ALLOW_PLAINTEXT_SQL) {
                continue; // read by main / the SQL check, not a Settings field
            }
            let explicit = format!("{:?}", ok(&[(doc.name, Some(default))]));
            assert_eq!(parsed, explicit, "{}", doc.name);
            let blank = format!("{:?}", ok(&[(doc.name, Some("  "))]));
            assert_eq!(parsed, blank, "{}", doc.name);
        }
    }

    #[test]
    fn valid_values() {
        type Check = fn(&Settings) -> bool;
        let cases: &[(&str, &str, Check)] = &[
            (CDC_CONTAINER, "cdc-landing-01", |s| s.container == "cdc-landing-01"),
            (CDC_PATH_TEMPLATE, "{table}/incremental/{yyyy}/{MM}/{dd}/{yyyyMMddHHmmssfff}.csv", |s| {
                s.path_template
                    == "{table}/incremental/{yyyy}/{MM}/{dd}/{yyyyMMddHHmmssfff}.csv".parse().unwrap()
            }),
            (CDC_CAPTURE_WAIT_SECONDS, "0", |s| s.capture_wait.is_zero()),
            (CDC_CAPTURE_WAIT_SECONDS, "1800", |s| s.capture_wait.as_secs() == 1800),
            (CDC_CAPTURE_POLL_SECONDS, "1", |s| s.capture_poll.as_secs() == 1),
            (CDC_CAPTURE_POLL_SECONDS, "60", |s| s.capture_poll.as_secs() == 60),
            (CDC_WATERMARK_TABLE, "etl.cdc_watermark", |s| {
                s.watermark_table == TableRef::parse("etl.cdc_watermark").unwrap()
            }),
            (CDC_FORMAT, "Parquet", |s| {
                s.format == crate::sink::format::Format::Parquet
                    && s.path_template.extension() == "parquet"
            }),
            (CDC_FORMAT, "csv", |s| {
                s.format == crate::sink::format::Format::Csv && s.path_template.extension() == "csv"
            }),
            (CDC_ROW_FILTER, "ALL  with Merge", |s| s.row_filter == RowFilter::AllWithMerge),
            (CDC_ROW_FILTER, "all", |s| s.row_filter == RowFilter::All),
            (CDC_TABLE_CONCURRENCY, "1", |s| s.table_concurrency == 1),
            (CDC_TABLE_CONCURRENCY, "64", |s| s.table_concurrency == 64),
            (CDC_BLOCK_SIZE_MIB, "100", |s| s.block_size == 100 << 20),
            (CDC_BLOCK_SIZE_MIB, "1", |s| s.block_size == 1 << 20),
            (CDC_UPLOAD_BLOCKS_IN_FLIGHT, "1", |s| s.upload_blocks_in_flight == 1),
            (CDC_UPLOAD_BLOCKS_IN_FLIGHT, "16", |s| s.upload_blocks_in_flight == 16),
            (CDC_FULL_LOAD_PART_ROWS, "50000", |s| s.full_load_part_rows == 50_000),
            (CDC_FULL_LOAD_RANGES, "4", |s| s.full_load_ranges == 4),
            (CDC_FULL_LOAD_RANGE_MIN_ROWS, "500", |s| s.full_load_range_min_rows == 500),
            (CDC_FANOUT, "queue", |s| s.fanout == Fanout::Queue),
            (CDC_FANOUT, " Inline ", |s| s.fanout == Fanout::Inline),
            (CDC_QUEUE_MAX_DEQUEUE_COUNT, "3", |s| s.queue_max_dequeue_count == 3),
            (CDC_FULL_LOAD_HTTP_BUDGET_SECONDS, "200", |s| s.full_load_http_budget.as_secs() == 200),
            (CDC_FULL_LOAD_HTTP_BUDGET_SECONDS, "1", |s| s.full_load_http_budget.as_secs() == 1),
            (INCREMENTAL_COPY_SCHEDULE, "0 */15 * * * *", |s| {
                s.schedule.as_deref() == Some("0 */15 * * * *")
            }),
            (INCREMENTAL_COPY_SCHEDULE, "0 0 6 * * MON-FRI", |s| s.schedule.is_some()),
            (CDC_TABLES, " dbo.customers , sales.orders=sales_orders_v2 ", |s| {
                s.tables
                    == vec![
                        TableSpec { table: TableRef::parse("dbo.customers").unwrap(), capture_instance: None, mode: None },
                        TableSpec {
                            table: TableRef::parse("sales.orders").unwrap(),
                            capture_instance: Some("sales_orders_v2".into()),
                            mode: None,
                        },
                    ]
            }),
            (CDC_TABLES, "dbo.audit_log:all, dbo.orders=dbo_orders_v2 : NET,dbo.x", |s| {
                s.tables.iter().map(|t| t.mode).collect::<Vec<_>>()
                    == [Some(ChangeMode::All), Some(ChangeMode::Net), None]
                    && s.tables[1].capture_instance.as_deref() == Some("dbo_orders_v2")
            }),
            (CDC_ALL_CHANGES_ROW_FILTER, "ALL", |s| s.all_row_filter == AllRowFilter::All),
            (CDC_ALL_CHANGES_ROW_FILTER, " all  update OLD", |s| {
                s.all_row_filter == AllRowFilter::AllUpdateOld
            }),
            (CDC_STORAGE_CONNECTION_STRING,
             "DefaultEndpointsProtocol=https;AccountName=acct;AccountKey=a2V5;EndpointSuffix=core.windows.net",
             |s| s.storage.endpoint.as_str() == "https://acct.blob.core.windows.net/"),
            (CDC_ALLOW_PLAINTEXT_SQL, "false", |_| true),
        ];
        for (name, value, check) in cases {
            let s = ok(&[(name, Some(value))]);
            assert!(check(&s), "{name}={value:?} parsed as {s:?}");
        }
    }

    #[test]
    fn invalid_values_name_the_setting() {
        let cases: &[(&str, &str)] = &[
            (CDC_CONTAINER, "Raw"),
            (CDC_CONTAINER, "ab"),
            (CDC_CONTAINER, "a--b"),
            (CDC_CONTAINER, "-abc"),
            (CDC_PATH_TEMPLATE, "/abs/{table}.csv"),
            (CDC_CAPTURE_WAIT_SECONDS, "1801"),
            (CDC_CAPTURE_WAIT_SECONDS, "-1"),
            (CDC_CAPTURE_WAIT_SECONDS, "2m"),
            (CDC_CAPTURE_POLL_SECONDS, "0"),
            (CDC_CAPTURE_POLL_SECONDS, "61"),
            (CDC_WATERMARK_TABLE, "watermark"),
            (CDC_WATERMARK_TABLE, "dbo.water;drop"),
            (CDC_ROW_FILTER, "all with mask"),
            (CDC_FORMAT, "json"),
            (CDC_ALL_CHANGES_ROW_FILTER, "all with merge"),
            (CDC_TABLES, "dbo.audit_log:merge"),
            (CDC_TABLES, "dbo.audit_log:"),
            (CDC_TABLE_CONCURRENCY, "0"),
            (CDC_TABLE_CONCURRENCY, "65"),
            (CDC_BLOCK_SIZE_MIB, "0"),
            (CDC_BLOCK_SIZE_MIB, "101"),
            (CDC_UPLOAD_BLOCKS_IN_FLIGHT, "0"),
            (CDC_UPLOAD_BLOCKS_IN_FLIGHT, "17"),
            (CDC_FULL_LOAD_PART_ROWS, "0"),
            (CDC_FULL_LOAD_PART_ROWS, "1e6"),
            (CDC_FULL_LOAD_RANGES, "0"),
            (CDC_FULL_LOAD_RANGES, "65"),
            (CDC_FULL_LOAD_RANGE_MIN_ROWS, "0"),
            (CDC_FANOUT, "queues"),
            (CDC_FANOUT, "both"),
            (CDC_QUEUE_MAX_DEQUEUE_COUNT, "0"),
            (CDC_FULL_LOAD_HTTP_BUDGET_SECONDS, "201"),
            (CDC_FULL_LOAD_HTTP_BUDGET_SECONDS, "0"),
            (INCREMENTAL_COPY_SCHEDULE, "*/15 * * * *"),
            (INCREMENTAL_COPY_SCHEDULE, "0 */15 * * * * *"),
            (INCREMENTAL_COPY_SCHEDULE, "0 */15 * * * ;"),
            (CDC_TABLES, "customers"),
            (CDC_TABLES, "dbo.customers,"),
            (CDC_TABLES, "dbo.customers,dbo.customers=x"),
            (CDC_TABLES, "dbo.[customers]"),
            (CDC_TABLES, "dbo.customers=bad name"),
            (CDC_STORAGE_CONNECTION_STRING, "AccountName=acct"),
            (CDC_ALLOW_PLAINTEXT_SQL, "maybe"),
            (AZURE_CLIENT_ID, "not-a-guid"),
            (
                CDC_SQL_CONNECTION_STRING,
                "Server=tcp:localhost,1433;User ID=sa;Password=x",
            ),
            (
                CDC_SQL_CONNECTION_STRING,
                "Server=tcp:localhost,notaport;Database=d",
            ),
            (
                CDC_SQL_CONNECTION_STRING,
                "Server=tcp:h,1433;Database=d;Encrypt=maybe",
            ),
            (
                CDC_SQL_CONNECTION_STRING,
                "Server=tcp:h,1433;Database=d;Encrypt=DANGER_PLAINTEXT",
            ),
        ];
        for (name, value) in cases {
            let e = err(&[(name, Some(value))]);
            assert_eq!(e.setting(), *name, "{name}={value:?}: {e}");
            assert!(e.to_string().contains(name), "{name}={value:?}: {e}");
        }
    }

    #[test]
    fn plaintext_needs_the_test_only_escape() {
        let conn =
            "Server=tcp:127.0.0.1,1433;Database=d;User ID=sa;Password=x;Encrypt=DANGER_PLAINTEXT";
        let e = err(&[(CDC_SQL_CONNECTION_STRING, Some(conn))]);
        assert!(e.to_string().contains("DANGER_PLAINTEXT"), "{e}");
        ok(&[
            (CDC_SQL_CONNECTION_STRING, Some(conn)),
            (CDC_ALLOW_PLAINTEXT_SQL, Some("true")),
        ]);
    }

    #[test]
    fn sql_entra_and_exactly_one_way() {
        let entra = |server: &str| {
            ok(&[
                (CDC_SQL_CONNECTION_STRING, None),
                (CDC_SQL_SERVER, Some(server)),
                (CDC_SQL_DATABASE, Some("shop")),
                (
                    AZURE_CLIENT_ID,
                    Some("0d6a9d1e-5a7e-4c1c-9d59-8a0e8d3c6f21"),
                ),
            ])
            .sql
        };
        let entra = |server: &str| match entra(server) {
            SqlTarget::Entra {
                host,
                port,
                database,
                client_id,
            } => (host, port, database, client_id),
            other => panic!("{other:?}"),
        };
        let want = |host: &str, port| {
            (
                host.to_string(),
                port,
                "shop".to_string(),
                Some("0d6a9d1e-5a7e-4c1c-9d59-8a0e8d3c6f21".to_string()),
            )
        };
        assert_eq!(
            entra("tcp:srv.database.windows.net,1433"),
            want("srv.database.windows.net", 1433)
        );
        assert_eq!(
            entra("srv.example.org,14330"),
            want("srv.example.org", 14330)
        );
        assert_eq!(entra("localhost"), want("localhost", 1433));

        for bad in ["tcp:", "srv,0", "srv,99999", "srv x", "tcp:srv,port"] {
            let e = err(&[
                (CDC_SQL_CONNECTION_STRING, None),
                (CDC_SQL_SERVER, Some(bad)),
                (CDC_SQL_DATABASE, Some("shop")),
            ]);
            assert_eq!(e.setting(), CDC_SQL_SERVER, "{bad}: {e}");
        }
        let e = err(&[(CDC_SQL_SERVER, Some("srv"))]);
        assert!(matches!(e, ConfigError::Conflict { .. }), "{e}");
        let e = err(&[(CDC_SQL_DATABASE, Some("shop"))]);
        assert!(matches!(e, ConfigError::Conflict { .. }), "{e}");
        let e = err(&[(CDC_SQL_CONNECTION_STRING, None)]);
        let text = e.to_string();
        assert!(
            text.contains(CDC_SQL_CONNECTION_STRING) && text.contains(CDC_SQL_SERVER),
            "{text}"
        );
        let e = err(&[
            (CDC_SQL_CONNECTION_STRING, None),
            (CDC_SQL_SERVER, Some("srv")),
        ]);
        assert_eq!(e.setting(), CDC_SQL_DATABASE);
        let e = err(&[
            (CDC_SQL_CONNECTION_STRING, None),
            (CDC_SQL_DATABASE, Some("shop")),
        ]);
        assert_eq!(e.setting(), CDC_SQL_SERVER);
    }

    #[test]
    fn storage_exactly_one_way() {
        let url = |u: &str| {
            ok(&[
                (CDC_STORAGE_CONNECTION_STRING, None),
                (CDC_STORAGE_ACCOUNT_URL, Some(u)),
            ])
            .storage
        };
        assert_eq!(
            url("https://acct.blob.core.windows.net/"),
            StorageAccount {
                endpoint: url::Url::parse("https://acct.blob.core.windows.net").unwrap(),
                auth: StorageAuth::Entra { client_id: None }
            }
        );
        assert_eq!(
            url("http://127.0.0.1:10000/devstoreaccount1//")
                .endpoint
                .as_str(),
            "http://127.0.0.1:10000/devstoreaccount1"
        );
        for bad in [
            "acct.blob.core.windows.net",
            "http://acct.blob.core.windows.net",
            "ftp://acct.blob.core.windows.net",
            "https://user@acct.blob.core.windows.net",
            "https://acct.blob.core.windows.net/?sv=2024&sig=SECRETSIG",
        ] {
            let e = err(&[
                (CDC_STORAGE_CONNECTION_STRING, None),
                (CDC_STORAGE_ACCOUNT_URL, Some(bad)),
            ]);
            assert_eq!(e.setting(), CDC_STORAGE_ACCOUNT_URL, "{bad}: {e}");
            assert!(!e.to_string().contains("SECRETSIG"), "{e}");
        }
        let e = err(&[(
            CDC_STORAGE_ACCOUNT_URL,
            Some("https://acct.blob.core.windows.net"),
        )]);
        assert!(matches!(e, ConfigError::Conflict { .. }), "{e}");
        let e = err(&[(CDC_STORAGE_CONNECTION_STRING, None)]);
        assert!(e.to_string().contains(CDC_STORAGE_ACCOUNT_URL), "{e}");
    }

    #[test]
    fn missing_tables() {
        let e = err(&[(CDC_TABLES, None)]);
        assert_eq!(e.setting(), CDC_TABLES);
        let e = err(&[(CDC_TABLES, Some(" "))]);
        assert_eq!(e.setting(), CDC_TABLES);
    }

    #[test]
    fn check_lists_every_problem_in_order() {
        let errors = Settings::check_map(&with(&[
            (CDC_TABLES, None),
            (CDC_CONTAINER, Some("X")),
            (CDC_BLOCK_SIZE_MIB, Some("0")),
        ]));
        let names: Vec<_> = errors.iter().map(ConfigError::setting).collect();
        assert_eq!(names, vec![CDC_TABLES, CDC_CONTAINER, CDC_BLOCK_SIZE_MIB]);
        assert!(Settings::check_map(&base()).is_empty());
    }

    /// A recognisable password never shows in Debug, Display or any error text.
    #[test]
    fn secrets_never_printed() {
        const PASSWORD: &str = "Hunter2-Recognisable-Pa55";
        const KEY: &str = "QUNDT1VOVEtFWVNFQ1JFVA==";
        let good = format!(
            "Server=tcp:localhost,1433;Database=shop;User ID=sa;Password={PASSWORD};Encrypt=true"
        );
        let storage = format!("AccountName=acct;AccountKey={KEY};EndpointSuffix=core.windows.net");
        let s = ok(&[
            (CDC_SQL_CONNECTION_STRING, Some(&good)),
            (CDC_STORAGE_CONNECTION_STRING, Some(&storage)),
        ]);
        let debug = format!("{s:?} {s:#?} {:?} {:?}", s.sql, s.storage);
        assert!(!debug.contains(PASSWORD) && !debug.contains(KEY), "{debug}");
        assert_eq!(Secret::new(PASSWORD).to_string(), "<redacted>");

        let broken = [
            format!("Server=tcp:localhost,1433;Database=shop;User ID=sa;Password={PASSWORD};Encrypt=DANGER_PLAINTEXT"),
            format!("Server=tcp:localhost,1433;User ID=sa;Password={PASSWORD}"),
            format!("Server=tcp:localhost,1433;Database=shop;Password={PASSWORD};Encrypt={PASSWORD}"),
            format!("Server=tcp:localhost,{PASSWORD};Database=shop;Password={PASSWORD}"),
            format!("Server=tcp:localhost,1433;Database=shop;Password='{PASSWORD}"),
            format!("Server=tcp:localhost,1433;Database=shop;Password={{{PASSWORD}"),
            format!("Server=tcp:localhost,1433;Database=shop;Password={PASSWORD};TrustServerCertificate={PASSWORD}"),
        ];
        for conn in &broken {
            let e = err(&[(CDC_SQL_CONNECTION_STRING, Some(conn))]);
            let text = format!("{e} {e:?}");
            assert_eq!(e.setting(), CDC_SQL_CONNECTION_STRING, "{text}");
            assert!(!text.contains(PASSWORD), "password leaked: {text}");
        }
        let e = err(&[(
            CDC_STORAGE_CONNECTION_STRING,
            Some(&format!("AccountKey={KEY}")),
        )]);
        assert!(!format!("{e} {e:?}").contains(KEY), "{e}");
    }

    /// Whole-number settings: the parser takes default and range from [`SETTINGS`], and
    /// `docs/settings.md` and the README state the same (`| `default` | min–max.`).
    #[test]
    fn number_ranges_are_the_documented_ones() {
        let numbers: Vec<_> = SETTINGS.iter().filter(|d| d.range.is_some()).collect();
        assert_eq!(numbers.len(), 11);
        for doc in numbers {
            let (default, min, max) = number_doc(doc.name);
            assert!((min..=max).contains(&default), "{}", doc.name);
            for (value, accepted) in [(min, true), (max, true), (max + 1, false)] {
                let r = Settings::from_map(&with(&[(doc.name, Some(&value.to_string()))]));
                assert_eq!(r.is_ok(), accepted, "{}={value}: {r:?}", doc.name);
            }
            if min > 0 {
                let r = Settings::from_map(&with(&[(doc.name, Some(&(min - 1).to_string()))]));
                assert!(r.is_err(), "{}={}", doc.name, min - 1);
            }
            let row = format!("| `{}` | `{default}` | {min}–{max}.", doc.name);
            for (page, text) in [
                ("docs/settings.md", include_str!("../docs/settings.md")),
                ("README.md", include_str!("../README.md")),
            ] {
                assert!(text.contains(&row), "{page} lacks {row:?}");
            }
        }
    }

    #[test]
    fn command_timeout_is_bounded_and_named_when_wrong() {
        let cases: &[(&str, Option<u64>)] = &[
            ("1", Some(1)),
            ("45", Some(45)),
            ("1500", Some(1500)),
            ("0", None),
            ("1501", None),
            ("-5", None),
            ("30s", None),
            ("2.5", None),
        ];
        for (text, want) in cases {
            let r = Settings::from_map(&with(&[(CDC_SQL_COMMAND_TIMEOUT_SECONDS, Some(text))]));
            match (r, want) {
                (Ok(s), Some(secs)) => {
                    assert_eq!(s.sql_command_timeout.duration(), Duration::from_secs(*secs))
                }
                (Err(e), None) => {
                    assert_eq!(e.setting(), CDC_SQL_COMMAND_TIMEOUT_SECONDS, "{text}");
                    assert!(
                        e.to_string().contains(CDC_SQL_COMMAND_TIMEOUT_SECONDS),
                        "{e}"
                    );
                }
                (r, want) => panic!("{text}: {r:?}, wanted {want:?}"),
            }
        }
        assert_eq!(CommandTimeout::new(Duration::ZERO), None);
        assert_eq!(
            CommandTimeout::new(CommandTimeout::MAX + Duration::from_millis(1)),
            None
        );
        let short = CommandTimeout::new(Duration::from_millis(200)).unwrap();
        assert_eq!(short.to_string(), "0.2 s");
        assert_eq!(CommandTimeout::DEFAULT.to_string(), "300 s");
        assert_eq!(
            CommandTimeout::DEFAULT.duration().as_secs(),
            number_doc(CDC_SQL_COMMAND_TIMEOUT_SECONDS).0,
            "the const and the documented default agree"
        );
    }

    #[test]
    fn settings_list_is_unique_and_documented() {
        let mut seen = HashSet::new();
        for doc in SETTINGS {
            assert!(seen.insert(doc.name), "{} listed twice", doc.name);
            assert!(!doc.description.is_empty(), "{}", doc.name);
        }
        let secrets: Vec<_> = SETTINGS
            .iter()
            .filter(|d| d.secret)
            .map(|d| d.name)
            .collect();
        assert_eq!(
            secrets,
            vec![CDC_SQL_CONNECTION_STRING, CDC_STORAGE_CONNECTION_STRING]
        );
    }
}
