//! The SQL Server settings, read once: `CDC_SQL_CONNECTION_STRING` through tiberius's own
//! parser (so the string means what the driver will do with it), or `CDC_SQL_SERVER` +
//! `CDC_SQL_DATABASE` for Entra ID. The connection string is secret as a whole: a driver error
//! quoting part of it is passed on with every value masked.

use std::collections::HashMap;

use super::{
    invalid, shown, ConfigError, Secret, CDC_SQL_CONNECTION_STRING, CDC_SQL_DATABASE,
    CDC_SQL_SERVER,
};

/// How to reach SQL Server, decided once from the settings: what tiberius dials, with the
/// encryption already allowed (plaintext only when `CDC_ALLOW_PLAINTEXT_SQL` said so).
#[derive(Clone)]
pub enum SqlTarget {
    /// `CDC_SQL_CONNECTION_STRING`: a SQL login.
    Login(Box<SqlLogin>),
    /// `CDC_SQL_SERVER` + `CDC_SQL_DATABASE`: an Entra ID token from [`crate::identity`];
    /// `AZURE_CLIENT_ID` picks a user-assigned identity.
    Entra {
        host: String,
        port: u16,
        database: String,
        client_id: Option<String>,
    },
}

impl std::fmt::Debug for SqlTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SqlTarget::Login(login) => login.fmt(f),
            SqlTarget::Entra {
                host,
                port,
                database,
                client_id,
            } => f
                .debug_struct("Entra")
                .field("host", host)
                .field("port", port)
                .field("database", database)
                .field("client_id", client_id)
                .finish(),
        }
    }
}

impl SqlTarget {
    /// A SQL login from an ADO.NET connection string, checked as `CDC_SQL_CONNECTION_STRING`
    /// is (the live suite and the TDS tests build theirs this way).
    pub fn from_connection_string(
        connection_string: &Secret,
        allow_plaintext: bool,
    ) -> Result<SqlTarget, ConfigError> {
        parse_sql_login(connection_string.expose(), allow_plaintext)
            .map(|login| SqlTarget::Login(Box::new(login)))
    }

    /// The database whose CDC is copied.
    pub fn database(&self) -> &str {
        match self {
            SqlTarget::Login(login) => login.database(),
            SqlTarget::Entra { database, .. } => database,
        }
    }

    /// The setting to fix when this target cannot be used.
    pub fn setting(&self) -> &'static str {
        match self {
            SqlTarget::Login(_) => CDC_SQL_CONNECTION_STRING,
            SqlTarget::Entra { .. } => CDC_SQL_SERVER,
        }
    }
}

/// A SQL login as tiberius parsed it from the connection string: tiberius's reading is the
/// only one (its parser's pieces are private to it, so the parsed `Config` is what is kept).
/// `Debug` shows the address and database, never the password.
#[derive(Clone)]
pub struct SqlLogin {
    config: tiberius::Config,
    database: String,
    plaintext: bool,
}

impl SqlLogin {
    /// What tiberius dials (the password is inside).
    pub fn config(&self) -> &tiberius::Config {
        &self.config
    }

    pub fn database(&self) -> &str {
        &self.database
    }

    /// `Encrypt=DANGER_PLAINTEXT`, allowed by `CDC_ALLOW_PLAINTEXT_SQL`.
    pub fn plaintext(&self) -> bool {
        self.plaintext
    }
}

impl std::fmt::Debug for SqlLogin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqlLogin")
            .field("addr", &self.config.get_addr())
            .field("database", &self.database)
            .field("plaintext", &self.plaintext)
            .field("password", &"<redacted>")
            .finish()
    }
}

/// `host`, `host,port` or `tcp:host,port`.
pub(super) fn parse_sql_server(v: &str) -> Result<(String, u16), ConfigError> {
    let bad = |reason: &str| invalid(CDC_SQL_SERVER, format!("{} {reason}", shown(v)));
    let rest = match v.get(..4) {
        Some(prefix) if prefix.eq_ignore_ascii_case("tcp:") => &v[4..],
        _ => v,
    };
    let (host, port) = match rest.split_once(',') {
        Some((host, port)) => {
            let port = port
                .trim()
                .parse::<u16>()
                .ok()
                .filter(|p| *p != 0)
                .ok_or_else(|| bad("has a port that is not 1-65535"))?;
            (host.trim(), port)
        }
        None => (rest.trim(), 1433),
    };
    if host.is_empty()
        || !host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
    {
        return Err(bad(
            "is not host, host,port or tcp:host,port (e.g. tcp:myserver.database.windows.net,1433)",
        ));
    }
    Ok((host.to_string(), port))
}

pub(super) fn validate_database_name(v: &str) -> Result<(), ConfigError> {
    if v.chars().count() > 128 || v.chars().any(|c| c.is_control() || matches!(c, ';' | ']')) {
        return Err(invalid(
            CDC_SQL_DATABASE,
            format!("{} is not a database name", shown(v)),
        ));
    }
    Ok(())
}

/// `key=value;…` pairs with lower-cased keys, values untouched. Only used to look up keys
/// whose values are never secret (quoting in passwords may confuse it; it is not a parser).
fn pairs(conn: &str) -> HashMap<String, String> {
    conn.split(';')
        .filter_map(|part| part.split_once('='))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect()
}

/// Reads the connection string the way tiberius does (its parse is the one kept), without
/// connecting. The driver's error text is passed on with every value of the string masked,
/// since a parse error may quote the part it could not read (which might be the password).
pub(super) fn parse_sql_login(conn: &str, allow_plaintext: bool) -> Result<SqlLogin, ConfigError> {
    let config = tiberius::Config::from_ado_string(conn).map_err(|e| {
        invalid(
            CDC_SQL_CONNECTION_STRING,
            format!(
                "the connection string does not parse: {}",
                mask_values(&e.to_string(), conn)
            ),
        )
    })?;
    let keys = pairs(conn);
    let Some(database) = ["database", "initial catalog"]
        .iter()
        .find_map(|k| keys.get(*k).filter(|v| !v.is_empty()))
    else {
        return Err(invalid(
            CDC_SQL_CONNECTION_STRING,
            "the connection string names no Database= (or Initial Catalog=): CDC is per database",
        ));
    };
    let plaintext = keys
        .get("encrypt")
        .is_some_and(|v| v.eq_ignore_ascii_case("DANGER_PLAINTEXT"));
    if plaintext && !allow_plaintext {
        return Err(invalid(
            CDC_SQL_CONNECTION_STRING,
            "Encrypt=DANGER_PLAINTEXT sends everything (the password too) unencrypted; use Encrypt=true (CDC_ALLOW_PLAINTEXT_SQL=true exists for test doubles only)",
        ));
    }
    Ok(SqlLogin {
        config,
        database: database.clone(),
        plaintext,
    })
}

/// Replaces in `message` every value of `source` (the text after `=` in each `;`-separated
/// part, or a whole part without `=`) of three characters or more. Keywords are kept, so the
/// driver's message still says which key is wrong.
fn mask_values(message: &str, source: &str) -> String {
    let mut values: Vec<&str> = source
        .split(';')
        .map(|part| part.split_once('=').map_or(part, |(_, v)| v).trim())
        .filter(|v| v.len() >= 3)
        .collect();
    // Longest first, so a value containing a shorter one is masked whole.
    values.sort_by_key(|v| std::cmp::Reverse(v.len()));
    let mut out = message.to_string();
    for value in values {
        out = out.replace(value, "<redacted>");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mask_values_keeps_keywords() {
        let source = "Server=tcp:h,1433;Password=s3cr3t;junk";
        assert_eq!(
            mask_values("Server value faulty near s3cr3t and junk", source),
            "Server value faulty near <redacted> and <redacted>"
        );
    }
}
