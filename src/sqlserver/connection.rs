//! Opening tiberius connections: SQL login or Entra ID token, gateway redirects, typed errors.
//!
//! A [`SqlServerSource`] is cheap to build (no network I/O) and opens one TCP connection per
//! [`CdcSource::session`] call, i.e. per concurrently processed table. Error mapping lives
//! here because the same server numbers mean the same thing at login and later: the jobs only
//! ask `is_transient()`, so what matters is putting each failure on the right side of that
//! line and writing a message an operator can act on — without the password or token.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use azure_core::credentials::TokenCredential;
use tiberius::{AuthMethod, Client, Config, EncryptionLevel};
use tokio::net::TcpStream;
use tokio_util::compat::{Compat, TokioAsyncWriteCompatExt};

use crate::cdc::{CdcError, CdcSession, CdcSource, TableRef};
use crate::config::{Secret, SqlTarget};

use super::session::SqlServerSession;

/// The tiberius client over a tokio TCP stream.
pub type SqlClient = Client<Compat<TcpStream>>;

/// Scope of an Entra ID token for Azure SQL.
pub const SQL_TOKEN_SCOPE: &str = "https://database.windows.net/.default";

/// Give up on a TCP connect or a login after this long (transient error).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
/// Refresh a cached token when it has less than this left.
const TOKEN_REFRESH_MARGIN_SECS: i64 = 300;
/// Azure SQL's gateway may redirect once; more means something is wrong.
const MAX_REDIRECTS: usize = 2;

/// Server error numbers a retry may fix: deadlock victim, lock timeout, Azure SQL throttling
/// and reconfiguration, transport errors reported by the server.
/// <https://learn.microsoft.com/azure/azure-sql/database/troubleshoot-common-errors-issues>
pub const TRANSIENT_ERRORS: &[u32] = &[
    20, 64, 233, 1205, 1222, 4221, 10053, 10054, 10060, 10928, 10929, 18401, 40143, 40197, 40501,
    40540, 40613, 42108, 42109, 49918, 49919, 49920,
];

/// Maps a tiberius error (connection or statement) to a [`CdcError`].
pub fn map_error(error: tiberius::error::Error) -> CdcError {
    use tiberius::error::Error as E;
    match error {
        E::Server(token) => sql_error(token.code(), token.message()),
        E::Io { kind, message } => CdcError::connection(format!("{kind:?}: {message}")),
        E::Tls(message) => CdcError::Config(format!(
            "TLS handshake with SQL Server failed ({message}); check Encrypt, \
             TrustServerCertificate and the server certificate"
        )),
        E::Routing { host, port } => CdcError::connection(format!(
            "SQL Server kept redirecting (last to {host}:{port})"
        )),
        other => CdcError::Driver(Box::new(other)),
    }
}

/// A server error by number, with the messages operators need for the common ones.
pub fn sql_error(number: u32, server_message: &str) -> CdcError {
    let message = match number {
        18456 => format!(
            "{server_message} Check the user name and password (or that the Entra identity \
             is a user of the database)."
        ),
        4060 => format!(
            "{server_message} The database in the connection settings does not exist or \
             the login may not open it."
        ),
        229 | 230 | 297 | 300 => format!(
            "{server_message} The copier's login lacks a permission: run \
             sql/grant-managed-identity.sql for its database user and the CDC_TABLES setting \
             (SELECT on the captured columns, the capture instance's gating role and \
             net-changes function, cdc.change_tables, cdc.captured_columns, and SELECT, \
             INSERT, UPDATE on the watermark table); see docs/sql.md, \"Permissions\"."
        ),
        _ => server_message.to_string(),
    };
    CdcError::Sql {
        number,
        message,
        transient: TRANSIENT_ERRORS.contains(&number),
    }
}

/// Where to connect and how to authenticate.
enum Target {
    /// A ready-made tiberius configuration: a SQL login as `config` parsed it, or the tests'.
    Config(Config),
    /// Entra ID token for `host`/`database`.
    Entra {
        host: String,
        port: u16,
        database: String,
        tokens: TokenCache,
    },
}

/// Implements [`CdcSource`] for SQL Server / Azure SQL.
pub struct SqlServerSource {
    target: Target,
    watermark_table: TableRef,
}

impl std::fmt::Debug for SqlServerSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let target = match &self.target {
            Target::Entra { host, database, .. } => format!("Entra ID to {host}/{database}"),
            Target::Config(config) => format!("config for {}", config.get_addr()),
        };
        f.debug_struct("SqlServerSource")
            .field("target", &target)
            .field("watermark_table", &self.watermark_table)
            .finish()
    }
}

impl SqlServerSource {
    /// From the settings' target. No network I/O: credentials are created, tokens are fetched
    /// on the first connect.
    pub fn new(target: &SqlTarget, watermark_table: TableRef) -> Result<SqlServerSource, CdcError> {
        let target = match target {
            SqlTarget::Login(login) => Target::Config(login.config().clone()),
            SqlTarget::Entra {
                host,
                port,
                database,
                client_id,
            } => Target::Entra {
                host: host.clone(),
                port: *port,
                database: database.clone(),
                tokens: TokenCache::new(
                    crate::identity::credential(client_id.as_deref())
                        .map_err(|e| CdcError::Config(format!("Entra ID credential: {e}")))?,
                ),
            },
        };
        Ok(SqlServerSource {
            target,
            watermark_table,
        })
    }

    /// From a tiberius configuration built by the caller (the TDS test double).
    pub fn from_config(config: Config, watermark_table: TableRef) -> SqlServerSource {
        SqlServerSource {
            target: Target::Config(config),
            watermark_table,
        }
    }

    /// Opens one connection and its session.
    async fn connect(&self) -> Result<SqlServerSession, CdcError> {
        let client = self.client().await?;
        Ok(SqlServerSession::new(client, self.watermark_table.clone()))
    }

    async fn config(&self) -> Result<Config, CdcError> {
        match &self.target {
            Target::Entra {
                host,
                port,
                database,
                tokens,
            } => {
                let mut config = Config::new();
                config.host(host);
                config.port(*port);
                config.database(database);
                config.encryption(EncryptionLevel::Required);
                config.application_name("cdc-copy");
                config.authentication(AuthMethod::aad_token(tokens.token().await?));
                Ok(config)
            }
            Target::Config(config) => Ok(config.clone()),
        }
    }

    async fn client(&self) -> Result<SqlClient, CdcError> {
        let mut config = self.config().await?;
        config.handshake_timeout(Some(CONNECT_TIMEOUT));
        for _ in 0..=MAX_REDIRECTS {
            let addr = config.get_addr();
            let tcp = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(&addr))
                .await
                .map_err(|_| CdcError::connection(format!("connecting to {addr} timed out")))?
                .map_err(|e| CdcError::connection_from(format!("connecting to {addr}"), e))?;
            tcp.set_nodelay(true)
                .map_err(|e| CdcError::connection_from("setting TCP_NODELAY", e))?;
            match Client::connect(config.clone(), tcp.compat_write()).await {
                Ok(client) => {
                    tracing::debug!(%addr, "connected to SQL Server");
                    return Ok(client);
                }
                Err(tiberius::error::Error::Routing { host, port }) => {
                    tracing::debug!(%host, port, "SQL Server gateway redirected the connection");
                    config.host(&host);
                    config.port(port);
                }
                Err(e) => return Err(map_error(e)),
            }
        }
        Err(CdcError::connection(format!(
            "SQL Server redirected more than {MAX_REDIRECTS} times"
        )))
    }
}

#[async_trait]
impl CdcSource for SqlServerSource {
    async fn session(&self) -> Result<Box<dyn CdcSession>, CdcError> {
        Ok(Box::new(self.connect().await?))
    }
}

/// One token shared by all sessions, refreshed a few minutes before it expires.
struct TokenCache {
    credential: Arc<dyn TokenCredential>,
    cached: tokio::sync::Mutex<Option<(Secret, i64)>>,
}

impl TokenCache {
    fn new(credential: Arc<dyn TokenCredential>) -> TokenCache {
        TokenCache {
            credential,
            cached: tokio::sync::Mutex::new(None),
        }
    }

    async fn token(&self) -> Result<String, CdcError> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0);
        let mut cached = self.cached.lock().await;
        if let Some((token, expires)) = cached.as_ref() {
            if expires - now > TOKEN_REFRESH_MARGIN_SECS {
                return Ok(token.expose().to_string());
            }
        }
        let access = self
            .credential
            .get_token(&[SQL_TOKEN_SCOPE], None)
            .await
            // Credential errors describe the failing source, never the token.
            .map_err(|e| CdcError::connection_from("getting an Entra ID token for SQL", e))?;
        let token = access.token.secret().to_string();
        *cached = Some((
            Secret::new(token.clone()),
            access.expires_on.unix_timestamp(),
        ));
        tracing::debug!(expires_on = %access.expires_on, "got an Entra ID token for SQL Server");
        Ok(token)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_errors_are_classified() {
        let cases: &[(u32, bool)] = &[
            (18456, false),
            (4060, false),
            (229, false),
            (313, false),
            (208, false),
            (1205, true),
            (40501, true),
            (40613, true),
            (49918, true),
            (49919, true),
            (49920, true),
        ];
        for (number, transient) in cases {
            let error = sql_error(*number, "msg");
            assert_eq!(error.is_transient(), *transient, "{number}");
            assert!(error.to_string().contains(&number.to_string()));
        }
    }

    #[test]
    fn io_errors_are_transient_tls_errors_are_not() {
        let io = map_error(tiberius::error::Error::Io {
            kind: std::io::ErrorKind::ConnectionReset,
            message: "reset".into(),
        });
        assert!(io.is_transient());
        let tls = map_error(tiberius::error::Error::Tls("bad cert".into()));
        assert!(!tls.is_transient());
        assert!(tls.to_string().contains("TrustServerCertificate"));
    }

    /// Hands out numbered tokens that expire `lifetime_secs` after they are issued.
    #[derive(Debug)]
    struct CountingCredential {
        issued: std::sync::atomic::AtomicU32,
        lifetime_secs: i64,
    }

    #[async_trait]
    impl TokenCredential for CountingCredential {
        async fn get_token(
            &self,
            scopes: &[&str],
            _: Option<azure_core::credentials::TokenRequestOptions<'_>>,
        ) -> azure_core::Result<azure_core::credentials::AccessToken> {
            assert_eq!(scopes, [SQL_TOKEN_SCOPE]);
            let n = self
                .issued
                .fetch_add(1, std::sync::atomic::Ordering::SeqCst)
                + 1;
            let expires = azure_core::time::OffsetDateTime::now_utc()
                + azure_core::time::Duration::seconds(self.lifetime_secs);
            Ok(azure_core::credentials::AccessToken::new(
                format!("token-{n}"),
                expires,
            ))
        }
    }

    #[tokio::test]
    async fn tokens_are_cached_until_close_to_expiry() {
        let cases = [
            (3600, ["token-1", "token-1", "token-1"]),
            // Expires within the refresh margin: fetched again each time.
            (60, ["token-1", "token-2", "token-3"]),
        ];
        for (lifetime_secs, expected) in cases {
            let cache = TokenCache::new(Arc::new(CountingCredential {
                issued: Default::default(),
                lifetime_secs,
            }));
            for want in expected {
                assert_eq!(cache.token().await.unwrap(), want);
            }
        }
    }
}
