//! Settings from the environment (app settings), validated, with secrets redacted.
//!
//! Every setting is read in one place so that the README's table, the Bicep app settings and
//! the code can be checked against each other (`SETTINGS` lists them). Errors name the setting.
//! TODO(helper): parsing, validation, Debug redaction, tests.

use std::time::Duration;

use crate::cdc::{RowFilter, TableRef};
use crate::sink::naming::PathTemplate;

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

/// How to reach SQL Server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SqlSettings {
    /// `CDC_SQL_CONNECTION_STRING`: an ADO.NET-style connection string (SQL login).
    ConnectionString(Secret),
    /// `CDC_SQL_SERVER` + `CDC_SQL_DATABASE`: Entra ID token from azure_identity (managed
    /// identity in Azure, developer credentials locally); `AZURE_CLIENT_ID` picks a
    /// user-assigned identity.
    Entra {
        server: String,
        port: u16,
        database: String,
        client_id: Option<String>,
    },
}

/// How to reach Blob Storage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StorageSettings {
    /// `CDC_STORAGE_CONNECTION_STRING`: account-key connection string or
    /// `UseDevelopmentStorage=true` (Azurite).
    ConnectionString(Secret),
    /// `CDC_STORAGE_ACCOUNT_URL` (e.g. `https://acct.blob.core.windows.net`): Entra ID.
    AccountUrl {
        url: String,
        client_id: Option<String>,
    },
}

/// A table to copy: `schema.table`, optionally `=capture_instance`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableSpec {
    pub table: TableRef,
    pub capture_instance: Option<String>,
}

/// All settings the handler reads.
#[derive(Debug, Clone)]
pub struct Settings {
    pub sql: SqlSettings,
    pub tables: Vec<TableSpec>,
    pub storage: StorageSettings,
    pub container: String,
    pub path_template: PathTemplate,
    pub capture_wait: Duration,
    pub capture_poll: Duration,
    pub watermark_table: TableRef,
    pub row_filter: RowFilter,
    pub table_concurrency: usize,
    pub block_size: usize,
    pub full_load_part_rows: u64,
    /// How long an HTTP-triggered FullLoad works before answering 202 and leaving the rest
    /// to the next invocation.
    pub full_load_http_budget: Duration,
}
