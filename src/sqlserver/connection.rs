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
use crate::config::{CommandTimeout, Secret, SqlTarget};

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
/// The TDS packet size asked for at login: the largest SQL Server allows on an encrypted
/// connection ("The maximum network packet size for encrypted connections is 16,383 bytes").
/// A result then streams in 4× fewer packets (and TLS records) than with the 4096-byte
/// default; on loopback the bench measured no difference (docs/benchmarks.md, "The TDS read
/// path"), over a network each packet costs a header and a record. The server may answer
/// with a smaller size (ENVCHANGE), which tiberius then uses.
/// <https://learn.microsoft.com/sql/database-engine/configure-windows/configure-the-network-packet-size-server-configuration-option>
pub const PACKET_SIZE: u32 = 16_383;

/// Server error numbers a retry may fix: deadlock victim, lock timeout, Azure SQL throttling
/// and reconfiguration, transport errors reported by the server. 615 ("could not find database
/// ID"), 926 ("database cannot be opened", marked suspect by recovery) and 4060 ("cannot open
/// database requested by the login") are on Azure SQL Database's list of transient errors: a
/// database moving between nodes answers them for a few seconds.
/// <https://learn.microsoft.com/azure/azure-sql/database/troubleshoot-common-errors-issues>
pub const TRANSIENT_ERRORS: &[u32] = &[
    20, 64, 233, 615, 926, 1205, 1222, 4060, 4221, 10053, 10054, 10060, 10928, 10929, 18401, 40143,
    40197, 40501, 40540, 40613, 42108, 42109, 49918, 49919, 49920,
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
             the login may not open it (on Azure SQL Database this is also answered for a few \
             seconds while the database moves or resumes, so it is retried)."
        ),
        615 | 926 => format!(
            "{server_message} The database is not available right now (Azure SQL Database \
             reports this while it moves the database or recovers it); retried."
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
    command_timeout: CommandTimeout,
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
            .field("command_timeout", &self.command_timeout)
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
            command_timeout: CommandTimeout::DEFAULT,
        })
    }

    /// From a tiberius configuration built by the caller (the TDS test double). Its own
    /// command timeout is replaced by this source's, as for every other connection.
    pub fn from_config(config: Config, watermark_table: TableRef) -> SqlServerSource {
        SqlServerSource {
            target: Target::Config(config),
            watermark_table,
            command_timeout: CommandTimeout::DEFAULT,
        }
    }

    /// Bounds every round trip of every connection by `timeout`
    /// (`CDC_SQL_COMMAND_TIMEOUT_SECONDS`; [`CommandTimeout::DEFAULT`] otherwise).
    pub fn with_command_timeout(mut self, timeout: CommandTimeout) -> SqlServerSource {
        self.command_timeout = timeout;
        self
    }

    /// Opens one connection and its session.
    async fn connect(&self) -> Result<SqlServerSession, CdcError> {
        let client = self.client().await?;
        Ok(SqlServerSession::new(
            client,
            self.watermark_table.clone(),
            self.command_timeout,
        ))
    }

    /// What tiberius dials: the target's configuration with this source's time bounds.
    async fn config(&self) -> Result<Config, CdcError> {
        let mut config = match &self.target {
            Target::Entra {
                host,
                port,
                database,
                tokens,
            } => entra_config(host, *port, database, tokens.token().await?),
            Target::Config(config) => config.clone(),
        };
        bound(&mut config, self.command_timeout);
        Ok(config)
    }

    async fn client(&self) -> Result<SqlClient, CdcError> {
        let mut config = self.config().await?;
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

/// An Entra ID connection to `host`/`database` with `token`, encrypted.
fn entra_config(host: &str, port: u16, database: &str, token: String) -> Config {
    let mut config = Config::new();
    config.host(host);
    config.port(port);
    config.database(database);
    config.encryption(EncryptionLevel::Required);
    config.application_name("cdc-copy");
    config.authentication(AuthMethod::aad_token(token));
    config
}

/// The time bounds every connection gets, whatever built its configuration: the handshake,
/// and each round trip of a statement (tiberius's 30 s default replaced by the setting).
fn bound(config: &mut Config, command_timeout: CommandTimeout) {
    config.handshake_timeout(Some(CONNECT_TIMEOUT));
    config.command_timeout(Some(command_timeout.duration()));
    config.packet_size(PACKET_SIZE);
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
        // (number, transient, words the message must carry besides the server's)
        let cases: &[(u32, bool, &str)] = &[
            (18456, false, "user name and password"),
            (229, false, "lacks a permission"),
            (313, false, ""),
            (208, false, ""),
            (1205, true, ""),
            (40501, true, ""),
            (40613, true, ""),
            (49918, true, ""),
            (49919, true, ""),
            (49920, true, ""),
            // Azure SQL Database's documented transient codes (issue 9).
            (4060, true, "does not exist or the login may not open it"),
            (615, true, "not available right now"),
            (926, true, "not available right now"),
        ];
        for (number, transient, words) in cases {
            let error = sql_error(*number, "msg");
            assert_eq!(error.is_transient(), *transient, "{number}");
            let text = error.to_string();
            assert!(text.contains(&number.to_string()), "{text}");
            assert!(text.contains("msg"), "the server's message is kept: {text}");
            assert!(text.contains(words), "{number}: {text}");
        }
    }

    #[tokio::test]
    async fn every_connection_carries_the_command_timeout() {
        let timeout = CommandTimeout::new(Duration::from_secs(42)).unwrap();
        let watermark = TableRef::parse("cdc_copy.watermark").unwrap();
        // A SQL login (as config parsed it) and the tests' configurations.
        let login = crate::config::SqlTarget::from_connection_string(
            &Secret::new("Server=tcp:h,1433;Database=db;User ID=u;Password=p;Encrypt=true"),
            false,
        )
        .unwrap();
        let entra = SqlServerSource {
            target: Target::Entra {
                host: "h.database.windows.net".into(),
                port: 1433,
                database: "db".into(),
                tokens: TokenCache::new(Arc::new(CountingCredential {
                    issued: Default::default(),
                    lifetime_secs: 3600,
                })),
            },
            watermark_table: watermark.clone(),
            command_timeout: CommandTimeout::DEFAULT,
        };
        let sources = [
            SqlServerSource::new(&login, watermark.clone()).unwrap(),
            entra,
            SqlServerSource::from_config(Config::new(), watermark.clone()),
        ];
        for source in sources {
            let default = source.config().await.unwrap();
            assert_eq!(
                default.get_command_timeout(),
                Some(CommandTimeout::DEFAULT.duration()),
                "never tiberius's 30 s"
            );
            let set = source.with_command_timeout(timeout).config().await.unwrap();
            assert_eq!(set.get_command_timeout(), Some(Duration::from_secs(42)));
        }
        assert_eq!(
            Config::new().get_command_timeout(),
            Some(Duration::from_secs(30)),
            "tiberius's default, which the setting replaces"
        );
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
