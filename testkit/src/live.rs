//! The live suite's own questions to SQL Server, on a tiberius connection of its own.
//!
//! `tests/live_sqlserver.rs` checks the product's answers against the server's single CDC
//! functions: that `Lsn::increment` agrees with `sys.fn_cdc_increment_lsn`, that the capture
//! instance's `min_lsn` and the offset in `CAPTURE_PROGRESS` are the server's, that the LSN/time
//! mapping round-trips. The product never sends these statements (it reads what it needs in the
//! batches of `cdc_copy::sqlserver::sql`), so they live here, not in the handler: each is one
//! const with the Microsoft Learn page it follows, and [`LiveSql`] sends it and decodes the one
//! row. The unit tests below pin the text, parameters and decoding against the TDS fake.

use std::time::Duration;

use cdc_copy::cdc::Lsn;
use chrono::NaiveDateTime;
use tiberius::error::Error;
use tiberius::{Client, Config, Row, ToSql};
use tokio::net::TcpStream;
use tokio_util::compat::{Compat, TokioAsyncWriteCompatExt};

/// Low end of a capture instance's validity interval (`@P1` = capture instance name);
/// `0x00…00` when the instance does not exist or the caller may not read it.
/// <https://learn.microsoft.com/sql/relational-databases/system-functions/sys-fn-cdc-get-min-lsn-transact-sql>
pub const GET_MIN_LSN: &str = "SELECT sys.fn_cdc_get_min_lsn(@P1) AS min_lsn;";

/// The next LSN after `@P1` (`binary(10)`).
/// <https://learn.microsoft.com/sql/relational-databases/system-functions/sys-fn-cdc-increment-lsn-transact-sql>
pub const INCREMENT_LSN: &str = "SELECT sys.fn_cdc_increment_lsn(@P1) AS next_lsn;";

/// The largest LSN whose commit time (server local time) is at or before `@P1` (a
/// server-local `datetime2`); NULL when none is.
/// <https://learn.microsoft.com/sql/relational-databases/system-functions/sys-fn-cdc-map-time-to-lsn-transact-sql>
pub const MAP_TIME_TO_LSN: &str =
    "SELECT sys.fn_cdc_map_time_to_lsn(N'largest less than or equal', @P1) AS lsn;";

/// The commit time (server local time, `datetime`) of LSN `@P1`.
/// <https://learn.microsoft.com/sql/relational-databases/system-functions/sys-fn-cdc-map-lsn-to-time-transact-sql>
pub const MAP_LSN_TO_TIME: &str = "SELECT sys.fn_cdc_map_lsn_to_time(@P1) AS tran_end_time;";

/// The server's current offset from UTC in minutes.
/// <https://learn.microsoft.com/sql/t-sql/functions/datepart-transact-sql>
pub const SERVER_UTC_OFFSET: &str =
    "SELECT DATEPART(TZOFFSET, SYSDATETIMEOFFSET()) AS server_utc_offset_minutes;";

/// Whether the current database allows SNAPSHOT isolation (`tinyint`, 1 = on).
/// <https://learn.microsoft.com/sql/relational-databases/system-catalog-views/sys-databases-transact-sql>
pub const SNAPSHOT_ISOLATION_STATE: &str =
    "SELECT snapshot_isolation_state FROM sys.databases WHERE database_id = DB_ID();";

/// Whether a user table exists: `@P1` is its quoted two-part name; NULL when absent.
/// <https://learn.microsoft.com/sql/t-sql/functions/object-id-transact-sql>
pub const TABLE_EXISTS: &str = "SELECT OBJECT_ID(@P1, N'U') AS object_id;";

/// Give up on the TCP connect plus login after this long.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

/// One connection, one statement per method.
pub struct LiveSql {
    client: Client<Compat<TcpStream>>,
}

fn bad(message: String) -> Error {
    Error::Conversion(message.into())
}

fn lsn_column(row: &Row, name: &str) -> Result<Option<Lsn>, Error> {
    row.try_get::<&[u8], _>(name)?
        .map(|bytes| Lsn::from_bytes(bytes).map_err(|e| bad(format!("column {name}: {e}"))))
        .transpose()
}

impl LiveSql {
    /// Logs in with an ADO.NET connection string (the live suite's `CDC_COPY_TEST_MSSQL`,
    /// pointed at its test database).
    pub async fn connect(connection_string: &str) -> Result<LiveSql, Error> {
        LiveSql::connect_config(Config::from_ado_string(connection_string)?).await
    }

    /// Logs in with a ready-made tiberius configuration.
    pub async fn connect_config(config: Config) -> Result<LiveSql, Error> {
        let addr = config.get_addr();
        let login = async {
            let tcp = TcpStream::connect(&addr).await?;
            tcp.set_nodelay(true)?;
            Client::connect(config, tcp.compat_write()).await
        };
        let client = tokio::time::timeout(CONNECT_TIMEOUT, login)
            .await
            .map_err(|_| {
                Error::from(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!("no SQL Server answered at {addr} within {CONNECT_TIMEOUT:?}"),
                ))
            })??;
        Ok(LiveSql { client })
    }

    async fn row(&mut self, statement: &str, params: &[&dyn ToSql]) -> Result<Row, Error> {
        self.client
            .query(statement, params)
            .await?
            .into_row()
            .await?
            .ok_or_else(|| bad(format!("no row returned by: {statement}")))
    }

    /// [`GET_MIN_LSN`].
    pub async fn min_lsn(&mut self, capture_instance: &str) -> Result<Lsn, Error> {
        let row = self.row(GET_MIN_LSN, &[&capture_instance]).await?;
        Ok(lsn_column(&row, "min_lsn")?.unwrap_or(Lsn::ZERO))
    }

    /// [`INCREMENT_LSN`].
    pub async fn increment_lsn(&mut self, lsn: Lsn) -> Result<Lsn, Error> {
        let row = self.row(INCREMENT_LSN, &[&&lsn.0[..]]).await?;
        lsn_column(&row, "next_lsn")?
            .ok_or_else(|| bad("fn_cdc_increment_lsn returned NULL".into()))
    }

    /// [`MAP_TIME_TO_LSN`] for a server-local time.
    pub async fn map_time_to_lsn(&mut self, local: NaiveDateTime) -> Result<Option<Lsn>, Error> {
        let row = self.row(MAP_TIME_TO_LSN, &[&local]).await?;
        lsn_column(&row, "lsn")
    }

    /// [`MAP_LSN_TO_TIME`]: the server-local commit time of `lsn`.
    pub async fn map_lsn_to_time(&mut self, lsn: Lsn) -> Result<Option<NaiveDateTime>, Error> {
        let row = self.row(MAP_LSN_TO_TIME, &[&&lsn.0[..]]).await?;
        row.try_get::<NaiveDateTime, _>("tran_end_time")
    }

    /// [`SERVER_UTC_OFFSET`].
    pub async fn server_utc_offset_minutes(&mut self) -> Result<i32, Error> {
        let row = self.row(SERVER_UTC_OFFSET, &[]).await?;
        row.try_get::<i32, _>("server_utc_offset_minutes")?
            .ok_or_else(|| bad("server_utc_offset_minutes is NULL".into()))
    }

    /// [`SNAPSHOT_ISOLATION_STATE`] is 1.
    pub async fn snapshot_isolation_allowed(&mut self) -> Result<bool, Error> {
        let row = self.row(SNAPSHOT_ISOLATION_STATE, &[]).await?;
        Ok(row.try_get::<u8, _>("snapshot_isolation_state")? == Some(1))
    }

    /// [`TABLE_EXISTS`] for a quoted two-part name such as `[cdc_copy].[watermark]`.
    pub async fn table_exists(&mut self, quoted_name: &str) -> Result<bool, Error> {
        let row = self.row(TABLE_EXISTS, &[&quoted_name]).await?;
        Ok(row.try_get::<i32, _>("object_id")?.is_some())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tds::{col, Cell, FakeServer, ParamValue, Reply, SqlType};
    use chrono::NaiveDate;

    fn lsn_cell(n: u128) -> Cell {
        Cell::Bytes(Lsn::from_u128(n).0.to_vec())
    }

    fn one(name: &str, ty: SqlType, cell: Cell) -> Reply {
        Reply::rows(vec![col(name, ty)], vec![vec![cell]])
    }

    /// Each helper sends its const verbatim with the documented parameters and decodes the
    /// answer, NULLs included.
    #[tokio::test]
    async fn helpers_send_their_statement_and_decode_the_row() {
        let server = FakeServer::start().await;
        let local = NaiveDate::from_ymd_opt(2024, 5, 1)
            .unwrap()
            .and_hms_milli_opt(14, 0, 0, 500)
            .unwrap();
        server.on(
            GET_MIN_LSN,
            one("min_lsn", SqlType::Binary(10), lsn_cell(100)),
        );
        server.on(
            INCREMENT_LSN,
            one("next_lsn", SqlType::Binary(10), lsn_cell(8)),
        );
        server.on(MAP_TIME_TO_LSN, one("lsn", SqlType::Binary(10), Cell::Null));
        server.on(
            MAP_LSN_TO_TIME,
            one("tran_end_time", SqlType::DateTime2, Cell::DateTime(local)),
        );
        server.on(
            SERVER_UTC_OFFSET,
            one("server_utc_offset_minutes", SqlType::Int, Cell::Int(120)),
        );
        server.on(TABLE_EXISTS, one("object_id", SqlType::Int, Cell::Null));

        let mut sql = LiveSql::connect_config(server.config()).await.unwrap();
        assert_eq!(
            sql.min_lsn("dbo_customers").await.unwrap(),
            Lsn::from_u128(100)
        );
        assert_eq!(
            sql.increment_lsn(Lsn::from_u128(7)).await.unwrap(),
            Lsn::from_u128(8)
        );
        assert_eq!(sql.map_time_to_lsn(local).await.unwrap(), None);
        assert_eq!(
            sql.map_lsn_to_time(Lsn::from_u128(8)).await.unwrap(),
            Some(local)
        );
        assert_eq!(sql.server_utc_offset_minutes().await.unwrap(), 120);
        assert!(!sql.table_exists("[cdc_copy].[watermark]").await.unwrap());

        let sent: Vec<(String, Vec<ParamValue>)> = server
            .requests()
            .into_iter()
            .map(|r| (r.sql, r.params.into_iter().map(|p| p.value).collect()))
            .collect();
        let lsn_param = |n| ParamValue::Bytes(Lsn::from_u128(n).0.to_vec());
        assert_eq!(
            sent,
            vec![
                (
                    GET_MIN_LSN.to_string(),
                    vec![ParamValue::Text("dbo_customers".into())]
                ),
                (INCREMENT_LSN.to_string(), vec![lsn_param(7)]),
                (
                    MAP_TIME_TO_LSN.to_string(),
                    vec![ParamValue::DateTime(local)]
                ),
                (MAP_LSN_TO_TIME.to_string(), vec![lsn_param(8)]),
                (SERVER_UTC_OFFSET.to_string(), vec![]),
                (
                    TABLE_EXISTS.to_string(),
                    vec![ParamValue::Text("[cdc_copy].[watermark]".into())]
                ),
            ]
        );
    }

    #[tokio::test]
    async fn a_null_increment_is_an_error() {
        let server = FakeServer::start().await;
        server.on(
            INCREMENT_LSN,
            one("next_lsn", SqlType::Binary(10), Cell::Null),
        );
        let mut sql = LiveSql::connect_config(server.config()).await.unwrap();
        let err = sql.increment_lsn(Lsn::from_u128(7)).await.unwrap_err();
        assert!(err.to_string().contains("NULL"), "{err}");
    }
}
