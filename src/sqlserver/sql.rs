//! Every T-SQL statement the copier sends, one `pub const` each, with the Microsoft Learn page
//! it follows.
//!
//! Keeping the text in one module is what lets the TDS test double script its answers by
//! statement and lets a reviewer audit everything that reaches the server in one read.
//! Parameters are always `@P1…` (tiberius binds them through `sp_executesql`). Names cannot be
//! parameters where T-SQL wants an object name (`FROM <table>`, the net-changes function of a
//! capture instance), so those few statements are templates whose `{placeholders}` are filled
//! only by the builder functions below, and only with names that passed
//! [`validate_identifier`] and were then quoted the way `QUOTENAME` does. The capture-instance
//! name used by the net-changes builders is additionally one that SQL Server itself returned
//! from `cdc.change_tables` (see [`CAPTURE_INSTANCES`]), never raw configuration.

use crate::cdc::{quote_identifier, validate_identifier, NameError, TableRef};

/// Highest LSN the capture process has written for the database.
/// <https://learn.microsoft.com/sql/relational-databases/system-functions/sys-fn-cdc-get-max-lsn-transact-sql>
pub const GET_MAX_LSN: &str = "SELECT sys.fn_cdc_get_max_lsn() AS max_lsn;";

/// One round trip for "how far has capture got, and which LSN does the window end map to".
///
/// `@P1` is the window end in UTC, sent as `datetimeoffset` (tiberius binds
/// `DateTime<Utc>` that way). Zone handling is done here, in SQL, with the offset read in the
/// same batch: `SWITCHOFFSET(@P1, @tz)` turns the UTC instant into the server's local wall
/// time before it is compared with `tran_end_time`, and `TODATETIMEOFFSET(…, @tz)` labels the
/// local `tran_end_time` of the max LSN with the offset so the client converts it back to
/// UTC exactly. The current offset is used for both, so a window end on the far side of a
/// daylight-saving change maps up to an hour off; nothing is lost by that (the lower bound
/// is always the watermark LSN), a change merely lands in the neighbouring window's blob.
///
/// `drained_since` is the start of the newest completed log scan session that found nothing
/// to capture (`empty_scan_count > 0`, `end_time` set, no error), from
/// `sys.dm_cdc_log_scan_sessions`; its `datetime` columns are server local time, labelled
/// with `@tz` like `max_lsn_time`. An idle capture job writes a `lsn_time_mapping` row only
/// every few minutes, so this is how an idle run learns that capture has passed the window
/// end without waiting for one. The view's page asks for VIEW DATABASE STATE, and from SQL
/// Server 2022 on for VIEW DATABASE PERFORMANCE STATE (which VIEW DATABASE STATE includes);
/// without it, the `BEGIN CATCH` leaves the column NULL ("unknown") instead of failing the
/// run, as does an empty view (after a restart or failover, or on an availability-group
/// secondary). NULL means "wait as before", never "passed".
/// Columns: `max_lsn binary(10)`, `max_lsn_time datetimeoffset` (NULL when unmapped),
/// `lsn_at binary(10)` (NULL when no mapping is at or before the time),
/// `server_utc_offset_minutes int`, `drained_since datetimeoffset` (NULL when unknown).
/// <https://learn.microsoft.com/sql/relational-databases/system-functions/sys-fn-cdc-get-max-lsn-transact-sql>
/// <https://learn.microsoft.com/sql/relational-databases/system-functions/sys-fn-cdc-map-lsn-to-time-transact-sql>
/// <https://learn.microsoft.com/sql/relational-databases/system-functions/sys-fn-cdc-map-time-to-lsn-transact-sql>
/// <https://learn.microsoft.com/sql/t-sql/functions/switchoffset-transact-sql>
/// <https://learn.microsoft.com/sql/t-sql/functions/todatetimeoffset-transact-sql>
/// <https://learn.microsoft.com/sql/relational-databases/system-dynamic-management-views/change-data-capture-sys-dm-cdc-log-scan-sessions>
/// <https://learn.microsoft.com/sql/relational-databases/track-changes/administer-and-monitor-change-data-capture-sql-server>
/// <https://learn.microsoft.com/sql/t-sql/language-elements/try-catch-transact-sql>
pub const CAPTURE_PROGRESS: &str = "\
DECLARE @max_lsn binary(10) = sys.fn_cdc_get_max_lsn();
DECLARE @tz int = DATEPART(TZOFFSET, SYSDATETIMEOFFSET());
DECLARE @drained_since datetime = NULL;
BEGIN TRY
    SELECT @drained_since = MAX(start_time) FROM sys.dm_cdc_log_scan_sessions
    WHERE session_id > 0 AND end_time IS NOT NULL AND empty_scan_count > 0 AND error_count = 0;
END TRY
BEGIN CATCH
    SET @drained_since = NULL;
END CATCH;
SELECT @max_lsn AS max_lsn,
       TODATETIMEOFFSET(sys.fn_cdc_map_lsn_to_time(@max_lsn), @tz) AS max_lsn_time,
       sys.fn_cdc_map_time_to_lsn(N'largest less than or equal',
           CONVERT(datetime2(7), SWITCHOFFSET(@P1, @tz))) AS lsn_at,
       @tz AS server_utc_offset_minutes,
       TODATETIMEOFFSET(@drained_since, @tz) AS drained_since;";

/// The capture instances of table `@P1` (its quoted two-part name, resolved by `OBJECT_ID`),
/// newest first, and in a second result set the key columns of each instance's unique index
/// (`index_name`, or the primary key when it is NULL) in key order.
///
/// Result set 1: `capture_instance, schema_name, table_name, supports_net_changes, index_name,
/// min_lsn, create_date`. Result set 2: `capture_instance, column_name` ordered by
/// `capture_instance, key_ordinal`.
/// <https://learn.microsoft.com/sql/relational-databases/system-tables/cdc-change-tables-transact-sql>
/// <https://learn.microsoft.com/sql/relational-databases/system-functions/sys-fn-cdc-get-min-lsn-transact-sql>
/// <https://learn.microsoft.com/sql/relational-databases/system-catalog-views/sys-index-columns-transact-sql>
pub const CAPTURE_INSTANCES: &str = "\
SELECT ct.capture_instance, s.name AS schema_name, t.name AS table_name,
       ct.supports_net_changes, ct.index_name,
       sys.fn_cdc_get_min_lsn(ct.capture_instance) AS min_lsn, ct.create_date
FROM cdc.change_tables AS ct
JOIN sys.tables AS t ON t.object_id = ct.source_object_id
JOIN sys.schemas AS s ON s.schema_id = t.schema_id
WHERE ct.source_object_id = OBJECT_ID(@P1)
ORDER BY ct.create_date DESC;
SELECT ct.capture_instance, c.name AS column_name
FROM cdc.change_tables AS ct
JOIN sys.indexes AS i ON i.object_id = ct.source_object_id
     AND (i.name = ct.index_name OR (ct.index_name IS NULL AND i.is_primary_key = 1))
JOIN sys.index_columns AS ic ON ic.object_id = i.object_id AND ic.index_id = i.index_id
     AND ic.key_ordinal > 0
JOIN sys.columns AS c ON c.object_id = ic.object_id AND c.column_id = ic.column_id
WHERE ct.source_object_id = OBJECT_ID(@P1)
ORDER BY ct.capture_instance, ic.key_ordinal;";

/// Template: the net changes in `[@P1, @P2]` with row filter `@P3`, ordered by commit LSN
/// then key. Filled by [`net_changes`].
/// <https://learn.microsoft.com/sql/relational-databases/system-functions/cdc-fn-cdc-get-net-changes-capture-instance-transact-sql>
pub const NET_CHANGES: &str =
    "SELECT * FROM cdc.{function}(@P1, @P2, @P3) ORDER BY [__$start_lsn], {key_order};";

/// Template: the first `@P1` rows of a table in key order (full load, first part).
/// Filled by [`scan`].
/// <https://learn.microsoft.com/sql/t-sql/queries/top-transact-sql>
pub const SCAN_FIRST: &str = "SELECT TOP (@P1) * FROM {table} ORDER BY {key_order};";

/// Template: the next `@P1` rows after key `(@P2, @P3, …)` (keyset pagination: the tuple
/// comparison `(k1, k2) > (@P2, @P3)` expanded, since T-SQL has no row comparison).
/// Filled by [`scan`].
/// <https://learn.microsoft.com/sql/t-sql/queries/top-transact-sql>
pub const SCAN_AFTER: &str = "SELECT TOP (@P1) * FROM {table} WHERE {after} ORDER BY {key_order};";

/// The watermark table's columns in the order every watermark statement uses.
pub const WATERMARK_COLUMNS: [&str; 17] = [
    "schema_name",
    "table_name",
    "capture_instance",
    "last_lsn",
    "last_window_end",
    "pending_to_lsn",
    "pending_window_end",
    "pending_blob",
    "full_load_id",
    "full_load_baseline_lsn",
    "full_load_parts",
    "full_load_last_key",
    "full_load_rows",
    "rows_copied",
    "bytes_copied",
    "version",
    "updated_at",
];

/// Template: one table's watermark row (`@P1` schema, `@P2` table), columns as
/// [`WATERMARK_COLUMNS`]. Filled by [`read_watermark`].
/// <https://learn.microsoft.com/sql/t-sql/queries/select-transact-sql>
pub const READ_WATERMARK: &str = "\
SELECT schema_name, table_name, capture_instance, last_lsn, last_window_end, pending_to_lsn,
       pending_window_end, pending_blob, full_load_id, full_load_baseline_lsn, full_load_parts,
       full_load_last_key, full_load_rows, rows_copied, bytes_copied, version, updated_at
FROM {watermark} WHERE schema_name = @P1 AND table_name = @P2;";

/// Template: insert a watermark row unless one exists for the table (`@P1…@P17` in
/// [`WATERMARK_COLUMNS`] order). Row count 1 = inserted, 0 = another run was first; a
/// concurrent insert that slips past the check fails with a primary-key violation (2627),
/// which the session also reads as "another run was first". Filled by [`insert_watermark`].
/// <https://learn.microsoft.com/sql/t-sql/statements/insert-transact-sql>
/// <https://learn.microsoft.com/sql/t-sql/queries/hints-transact-sql-table>
pub const INSERT_WATERMARK: &str = "\
INSERT INTO {watermark} (schema_name, table_name, capture_instance, last_lsn, last_window_end,
       pending_to_lsn, pending_window_end, pending_blob, full_load_id, full_load_baseline_lsn,
       full_load_parts, full_load_last_key, full_load_rows, rows_copied, bytes_copied, version,
       updated_at)
SELECT @P1, @P2, @P3, @P4, @P5, @P6, @P7, @P8, @P9, @P10, @P11, @P12, @P13, @P14, @P15, @P16, @P17
WHERE NOT EXISTS (SELECT 1 FROM {watermark} WITH (UPDLOCK, HOLDLOCK)
                  WHERE schema_name = @P1 AND table_name = @P2);";

/// Template: replace a watermark row if its version is still `@P18` (optimistic concurrency;
/// `@P1…@P17` in [`WATERMARK_COLUMNS`] order, `@P16` being the new version). Row count 1 =
/// updated, 0 = another run moved it. Filled by [`update_watermark`].
/// <https://learn.microsoft.com/sql/t-sql/queries/update-transact-sql>
pub const UPDATE_WATERMARK: &str = "\
UPDATE {watermark} SET capture_instance = @P3, last_lsn = @P4, last_window_end = @P5,
       pending_to_lsn = @P6, pending_window_end = @P7, pending_blob = @P8, full_load_id = @P9,
       full_load_baseline_lsn = @P10, full_load_parts = @P11, full_load_last_key = @P12,
       full_load_rows = @P13, rows_copied = @P14, bytes_copied = @P15, version = @P16,
       updated_at = @P17
WHERE schema_name = @P1 AND table_name = @P2 AND version = @P18;";

fn fill(template: &str, substitutions: &[(&str, &str)]) -> String {
    substitutions
        .iter()
        .fold(template.to_string(), |text, (key, value)| {
            text.replace(key, value)
        })
}

/// `cdc.[fn_cdc_get_net_changes_<ci>]`'s bracketed part, after validating `ci`.
pub fn net_changes_function(capture_instance: &str) -> Result<String, NameError> {
    validate_identifier(capture_instance)?;
    Ok(quote_identifier(&format!(
        "fn_cdc_get_net_changes_{capture_instance}"
    )))
}

fn key_order(key_columns: &[String]) -> Result<String, NameError> {
    if key_columns.is_empty() {
        return Err(NameError::Length(String::new()));
    }
    let mut quoted = Vec::with_capacity(key_columns.len());
    for column in key_columns {
        validate_identifier(column)?;
        quoted.push(quote_identifier(column));
    }
    Ok(quoted.join(", "))
}

fn validate_table(table: &TableRef) -> Result<String, NameError> {
    validate_identifier(&table.schema)?;
    validate_identifier(&table.table)?;
    Ok(table.quoted())
}

/// [`NET_CHANGES`] for a capture instance read from `cdc.change_tables`, ordered by its key.
pub fn net_changes(capture_instance: &str, key_columns: &[String]) -> Result<String, NameError> {
    let function = net_changes_function(capture_instance)?;
    let order = key_order(key_columns)?;
    Ok(fill(
        NET_CHANGES,
        &[("{function}", &function), ("{key_order}", &order)],
    ))
}

/// [`SCAN_FIRST`] (`after_key == false`) or [`SCAN_AFTER`]: `@P1` is the row limit, the key
/// values of the last row read are `@P2…` in `key_columns` order.
pub fn scan(
    table: &TableRef,
    key_columns: &[String],
    after_key: bool,
) -> Result<String, NameError> {
    let table = validate_table(table)?;
    let order = key_order(key_columns)?;
    if !after_key {
        return Ok(fill(
            SCAN_FIRST,
            &[("{table}", &table), ("{key_order}", &order)],
        ));
    }
    // (k1, k2, k3) > (a, b, c)  ⇔  k1 > a OR (k1 = a AND k2 > b) OR (k1 = a AND k2 = b AND k3 > c)
    let quoted: Vec<String> = key_columns.iter().map(|c| quote_identifier(c)).collect();
    let disjuncts: Vec<String> = (0..quoted.len())
        .map(|i| {
            let mut terms: Vec<String> = (0..i)
                .map(|j| format!("{} = @P{}", quoted[j], j + 2))
                .collect();
            terms.push(format!("{} > @P{}", quoted[i], i + 2));
            format!("({})", terms.join(" AND "))
        })
        .collect();
    Ok(fill(
        SCAN_AFTER,
        &[
            ("{table}", &table),
            ("{after}", &disjuncts.join(" OR ")),
            ("{key_order}", &order),
        ],
    ))
}

/// [`READ_WATERMARK`] for the configured watermark table.
pub fn read_watermark(watermark_table: &TableRef) -> Result<String, NameError> {
    Ok(fill(
        READ_WATERMARK,
        &[("{watermark}", &validate_table(watermark_table)?)],
    ))
}

/// [`INSERT_WATERMARK`] for the configured watermark table.
pub fn insert_watermark(watermark_table: &TableRef) -> Result<String, NameError> {
    Ok(fill(
        INSERT_WATERMARK,
        &[("{watermark}", &validate_table(watermark_table)?)],
    ))
}

/// [`UPDATE_WATERMARK`] for the configured watermark table.
pub fn update_watermark(watermark_table: &TableRef) -> Result<String, NameError> {
    Ok(fill(
        UPDATE_WATERMARK,
        &[("{watermark}", &validate_table(watermark_table)?)],
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(schema: &str, table: &str) -> TableRef {
        TableRef {
            schema: schema.into(),
            table: table.into(),
        }
    }

    fn keys(names: &[&str]) -> Vec<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    /// Highest `@Pn` a statement mentions (0 if none).
    fn max_param(sql: &str) -> usize {
        sql.match_indices("@P")
            .filter_map(|(i, _)| {
                let digits: String = sql[i + 2..]
                    .chars()
                    .take_while(|c| c.is_ascii_digit())
                    .collect();
                digits.parse().ok()
            })
            .max()
            .unwrap_or(0)
    }

    #[test]
    fn constants_use_the_documented_parameters() {
        let cases: &[(&str, usize)] = &[
            (GET_MAX_LSN, 0),
            (CAPTURE_PROGRESS, 1),
            (CAPTURE_INSTANCES, 1),
            (NET_CHANGES, 3),
            (SCAN_FIRST, 1),
            (READ_WATERMARK, 2),
            (INSERT_WATERMARK, 17),
            (UPDATE_WATERMARK, 18),
        ];
        for (sql, params) in cases {
            assert_eq!(max_param(sql), *params, "{sql}");
        }
    }

    #[test]
    fn the_log_scan_signal_cannot_fail_the_progress_read() {
        // Without VIEW DATABASE STATE the view raises an error; inside TRY it is caught and
        // the column is NULL. The DMV is read nowhere else, and only its documented columns.
        let try_block = CAPTURE_PROGRESS
            .split("BEGIN TRY")
            .nth(1)
            .and_then(|rest| rest.split("END TRY").next())
            .expect("a TRY block");
        assert!(try_block.contains("FROM sys.dm_cdc_log_scan_sessions"));
        assert_eq!(
            CAPTURE_PROGRESS
                .matches("sys.dm_cdc_log_scan_sessions")
                .count(),
            1
        );
        assert!(
            CAPTURE_PROGRESS.contains("BEGIN CATCH\n    SET @drained_since = NULL;\nEND CATCH;")
        );
        for column in [
            "session_id",
            "start_time",
            "end_time",
            "empty_scan_count",
            "error_count",
        ] {
            assert!(try_block.contains(column), "{column}");
        }
        assert!(CAPTURE_PROGRESS.contains("TODATETIMEOFFSET(@drained_since, @tz) AS drained_since"));
    }

    #[test]
    fn net_change_statements_quote_the_function_name() {
        assert_eq!(
            net_changes("dbo_customers", &keys(&["customer_id"])).unwrap(),
            "SELECT * FROM cdc.[fn_cdc_get_net_changes_dbo_customers](@P1, @P2, @P3) ORDER BY [__$start_lsn], [customer_id];"
        );
        assert_eq!(
            net_changes("sales_order_lines", &keys(&["order_id", "line_no"])).unwrap(),
            "SELECT * FROM cdc.[fn_cdc_get_net_changes_sales_order_lines](@P1, @P2, @P3) ORDER BY [__$start_lsn], [order_id], [line_no];"
        );
    }

    #[test]
    fn injection_attempts_are_rejected_before_any_text_is_built() {
        let attempts = [
            "x]; DROP TABLE t;--",
            "dbo_customers](@P1,@P2,@P3); DROP TABLE dbo.customers;--",
            "a b",
            "a'b",
            "a.b",
            "",
            "x\u{0}",
        ];
        for bad in attempts {
            assert!(net_changes(bad, &keys(&["id"])).is_err(), "{bad:?}");
            assert!(net_changes("dbo_t", &[bad.to_string()]).is_err(), "{bad:?}");
            assert!(
                scan(&t("dbo", bad), &keys(&["id"]), true).is_err(),
                "{bad:?}"
            );
            assert!(
                scan(&t(bad, "t"), &keys(&["id"]), false).is_err(),
                "{bad:?}"
            );
            assert!(
                scan(&t("dbo", "t"), &[bad.to_string()], true).is_err(),
                "{bad:?}"
            );
            assert!(read_watermark(&t(bad, "w")).is_err(), "{bad:?}");
            assert!(insert_watermark(&t("cdc_copy", bad)).is_err(), "{bad:?}");
            assert!(update_watermark(&t(bad, bad)).is_err(), "{bad:?}");
        }
        assert!(net_changes("dbo_t", &[]).is_err(), "a key is required");
    }

    #[test]
    fn scan_expands_the_tuple_comparison() {
        let table = t("dbo", "customers");
        let cases: &[(&[&str], bool, &str)] = &[
            (
                &["customer_id"],
                false,
                "SELECT TOP (@P1) * FROM [dbo].[customers] ORDER BY [customer_id];",
            ),
            (
                &["customer_id"],
                true,
                "SELECT TOP (@P1) * FROM [dbo].[customers] WHERE ([customer_id] > @P2) ORDER BY [customer_id];",
            ),
            (
                &["k1", "k2"],
                true,
                "SELECT TOP (@P1) * FROM [dbo].[customers] WHERE ([k1] > @P2) OR ([k1] = @P2 AND [k2] > @P3) ORDER BY [k1], [k2];",
            ),
            (
                &["a", "b", "c"],
                true,
                "SELECT TOP (@P1) * FROM [dbo].[customers] WHERE ([a] > @P2) OR ([a] = @P2 AND [b] > @P3) OR ([a] = @P2 AND [b] = @P3 AND [c] > @P4) ORDER BY [a], [b], [c];",
            ),
        ];
        for (key, after, expected) in cases {
            assert_eq!(scan(&table, &keys(key), *after).unwrap(), *expected);
        }
    }

    #[test]
    fn watermark_statements_name_the_quoted_table() {
        let wm = t("cdc_copy", "watermark");
        let read = read_watermark(&wm).unwrap();
        assert!(read
            .contains("FROM [cdc_copy].[watermark] WHERE schema_name = @P1 AND table_name = @P2;"));
        let insert = insert_watermark(&wm).unwrap();
        assert!(insert.starts_with("INSERT INTO [cdc_copy].[watermark] ("));
        assert!(insert.contains("SELECT 1 FROM [cdc_copy].[watermark] WITH (UPDLOCK, HOLDLOCK)"));
        let update = update_watermark(&wm).unwrap();
        assert!(update.starts_with("UPDATE [cdc_copy].[watermark] SET"));
        assert!(update.ends_with("AND version = @P18;"));
        for sql in [&read, &insert, &update] {
            assert!(!sql.contains('{'), "unfilled placeholder in {sql}");
            for column in WATERMARK_COLUMNS {
                assert!(sql.contains(column), "{column} missing from {sql}");
            }
        }
    }

    #[test]
    fn update_sets_columns_in_watermark_column_order() {
        // @P3..@P17 must line up with WATERMARK_COLUMNS[2..], so one parameter builder
        // serves insert and update.
        for (i, column) in WATERMARK_COLUMNS.iter().enumerate().skip(2) {
            let assignment = format!("{column} = @P{},", i + 1);
            let last = format!("{column} = @P{}\n", i + 1);
            assert!(
                UPDATE_WATERMARK.contains(&assignment) || UPDATE_WATERMARK.contains(&last),
                "{column}"
            );
        }
    }
}
