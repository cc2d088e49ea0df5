//! Every T-SQL statement the copier sends, one `pub const` each, with the Microsoft Learn page
//! it follows.
//!
//! Keeping the text in one module is what lets the TDS test double script its answers by
//! statement and lets a reviewer audit everything that reaches the server in one read.
//! Parameters are always `@P1…` (tiberius binds them through `sp_executesql`). Names cannot be
//! parameters where T-SQL wants an object name (`FROM <table>`, the net-changes function of a
//! capture instance), so those few statements are templates whose `{placeholders}` are filled
//! only by the builder functions below, and only with names quoted the way `QUOTENAME` does.
//! Table and capture-instance names also pass [`validate_identifier`] (they can come from
//! configuration); the capture-instance name used by the net-changes builders is in addition
//! one that SQL Server itself returned from `cdc.change_tables` (see [`CAPTURE_INSTANCES`]).
//! Column names only ever come from the catalog, so they pass the looser
//! [`validate_catalog_name`]: a column called `Order Date` is copied, quoted.

use crate::cdc::{
    quote_identifier, validate_catalog_name, validate_identifier, KeyColumn, NameError, TableRef,
};

/// Highest LSN the capture process has written for the database.
/// <https://learn.microsoft.com/sql/relational-databases/system-functions/sys-fn-cdc-get-max-lsn-transact-sql>
pub const GET_MAX_LSN: &str = "SELECT sys.fn_cdc_get_max_lsn() AS max_lsn;";

/// Low end of capture instance `@P1`'s validity interval, read again when a CDC function
/// refuses a range (Msg 313 or 208), so a cleanup that ran since the instance was looked up
/// gets the cleanup message with the fresh minimum. 0x00… when the instance does not exist or
/// the caller may not read its change data.
/// <https://learn.microsoft.com/sql/relational-databases/system-functions/sys-fn-cdc-get-min-lsn-transact-sql>
pub const GET_MIN_LSN: &str = "SELECT sys.fn_cdc_get_min_lsn(@P1) AS min_lsn;";

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
///
/// `drained_since` relies on the folded row of consecutive empty scans carrying the latest
/// scan's `start_time`, which Microsoft's pages do not say ("the empty_scan_count in the last
/// existing row is incremented"). So the batch also returns the newest session row
/// (`TOP (1) … ORDER BY session_id DESC`, its `empty_scan_count` NULL when it has errors)
/// and the server's clock `@now`, read first, before the view: two such marks of the same
/// row, the first taken at or after the window end, show empty scans that began after it
/// whatever the row's times do (`window::ScanWatch`). Both reads are inside the TRY.
/// Columns: `max_lsn binary(10)`, `max_lsn_time datetimeoffset` (NULL when unmapped),
/// `lsn_at binary(10)` (NULL when no mapping is at or before the time),
/// `server_utc_offset_minutes int`, `drained_since datetimeoffset` (NULL when unknown),
/// `newest_scan_session_id int`, `newest_scan_empty_scans int` (NULL when unknown),
/// `server_now datetimeoffset`.
/// <https://learn.microsoft.com/sql/t-sql/functions/sysdatetimeoffset-transact-sql>
/// <https://learn.microsoft.com/sql/relational-databases/system-functions/sys-fn-cdc-get-max-lsn-transact-sql>
/// <https://learn.microsoft.com/sql/relational-databases/system-functions/sys-fn-cdc-map-lsn-to-time-transact-sql>
/// <https://learn.microsoft.com/sql/relational-databases/system-functions/sys-fn-cdc-map-time-to-lsn-transact-sql>
/// <https://learn.microsoft.com/sql/t-sql/functions/switchoffset-transact-sql>
/// <https://learn.microsoft.com/sql/t-sql/functions/todatetimeoffset-transact-sql>
/// <https://learn.microsoft.com/sql/relational-databases/system-dynamic-management-views/change-data-capture-sys-dm-cdc-log-scan-sessions>
/// <https://learn.microsoft.com/sql/relational-databases/track-changes/administer-and-monitor-change-data-capture-sql-server>
/// <https://learn.microsoft.com/sql/t-sql/language-elements/try-catch-transact-sql>
pub const CAPTURE_PROGRESS: &str = "\
DECLARE @now datetimeoffset(7) = SYSDATETIMEOFFSET();
DECLARE @max_lsn binary(10) = sys.fn_cdc_get_max_lsn();
DECLARE @tz int = DATEPART(TZOFFSET, @now);
DECLARE @drained_since datetime = NULL;
DECLARE @scan_session int = NULL;
DECLARE @scan_empty int = NULL;
BEGIN TRY
    SELECT @drained_since = MAX(start_time) FROM sys.dm_cdc_log_scan_sessions
    WHERE session_id > 0 AND end_time IS NOT NULL AND empty_scan_count > 0 AND error_count = 0;
    SELECT TOP (1) @scan_session = session_id,
           @scan_empty = CASE WHEN error_count = 0 THEN empty_scan_count END
    FROM sys.dm_cdc_log_scan_sessions WHERE session_id > 0 ORDER BY session_id DESC;
END TRY
BEGIN CATCH
    SELECT @drained_since = NULL, @scan_session = NULL, @scan_empty = NULL;
END CATCH;
SELECT @max_lsn AS max_lsn,
       TODATETIMEOFFSET(sys.fn_cdc_map_lsn_to_time(@max_lsn), @tz) AS max_lsn_time,
       sys.fn_cdc_map_time_to_lsn(N'largest less than or equal',
           CONVERT(datetime2(7), SWITCHOFFSET(@P1, @tz))) AS lsn_at,
       @tz AS server_utc_offset_minutes,
       TODATETIMEOFFSET(@drained_since, @tz) AS drained_since,
       @scan_session AS newest_scan_session_id,
       @scan_empty AS newest_scan_empty_scans,
       @now AS server_now;";

/// The capture instances of table `@P1` (its quoted two-part name, resolved by `OBJECT_ID`),
/// newest first; in a second result set the key columns of each instance's unique index
/// (`index_name`, or the primary key when it is NULL) in key order, with their declared types;
/// in a third the captured columns of each instance in `column_ordinal` order.
///
/// Result set 1: `capture_instance, schema_name, table_name, supports_net_changes, index_name,
/// min_lsn, start_lsn, create_date`. Result set 2: `capture_instance, column_name, system_type_name
/// (the base system type: alias types resolved through sys.columns.system_type_id; NULL for
/// CLR types, whose system_type_id names no system type), type_name (the declared type's own
/// name, for messages; outer-joined so that an alias type the login may not see never drops a
/// key column from the result), max_length (bytes), precision,
/// scale, collation_name, is_nullable`, ordered by `capture_instance, key_ordinal`. Result
/// set 3: `capture_instance, column_name, column_ordinal, is_computed`, then the column's
/// declared type in the same columns as set 2 (`system_type_name … is_nullable`), ordered by
/// `capture_instance, column_ordinal`. The types are the *change table's*
/// (`sys.columns` of `cdc.change_tables.object_id`), not the source table's: the change table
/// is what `cdc.fn_cdc_get_*_changes_<ci>` return, so its declaration is the one the rows
/// have. It keeps a captured column the source has since dropped (returned NULL), never has
/// one added after the instance was created, types a `timestamp`/`rowversion` column as
/// `binary(8)` ("The data type in the change table is converted to binary"), and follows an
/// `ALTER COLUMN` of a captured column ("if the data type of a column is changed, the change
/// is also propagated to the change table to ensure that the capture mechanism doesn't
/// introduce data loss to tracked columns"). Reading the change table's metadata needs
/// VIEW DEFINITION on it (it stays unreadable); without it the `LEFT JOIN`s leave the type
/// columns NULL, which the session refuses naming the grant, rather than guessing a type. Result set 4: the DDL `cdc.ddl_history` recorded
/// against each instance ("DDL changes to source tables that are enabled for change data
/// capture"; a row belongs to the change table `object_id` it was recorded for, so only DDL
/// after that instance was created): `capture_instance, ddl_command, ddl_lsn, ddl_time`, ordered
/// by `capture_instance, ddl_lsn`. A login without SELECT on `cdc.ddl_history` gets the same
/// columns and no row (the `BEGIN CATCH`): the DDL warning is advice, never a reason to stop.
///
/// `start_lsn` is NULL ("the low endpoint has not been established") until the capture process
/// has recognised the instance, and `min_lsn` is then 0x00…; the jobs refuse such an instance
/// with a transient error.
/// <https://learn.microsoft.com/sql/relational-databases/system-tables/cdc-change-tables-transact-sql>
/// <https://learn.microsoft.com/sql/relational-databases/system-tables/cdc-captured-columns-transact-sql>
/// <https://learn.microsoft.com/sql/relational-databases/system-functions/sys-fn-cdc-get-min-lsn-transact-sql>
/// <https://learn.microsoft.com/sql/relational-databases/system-catalog-views/sys-index-columns-transact-sql>
/// <https://learn.microsoft.com/sql/relational-databases/system-catalog-views/sys-columns-transact-sql>
/// <https://learn.microsoft.com/sql/relational-databases/system-catalog-views/sys-types-transact-sql>
/// <https://learn.microsoft.com/sql/relational-databases/system-tables/cdc-ddl-history-transact-sql>
/// <https://learn.microsoft.com/sql/relational-databases/track-changes/about-change-data-capture-sql-server>
/// <https://learn.microsoft.com/sql/relational-databases/track-changes/change-data-capture-data-type-considerations>
pub const CAPTURE_INSTANCES: &str = "\
SELECT ct.capture_instance, s.name AS schema_name, t.name AS table_name,
       ct.supports_net_changes, ct.index_name,
       sys.fn_cdc_get_min_lsn(ct.capture_instance) AS min_lsn, ct.start_lsn, ct.create_date
FROM cdc.change_tables AS ct
JOIN sys.tables AS t ON t.object_id = ct.source_object_id
JOIN sys.schemas AS s ON s.schema_id = t.schema_id
WHERE ct.source_object_id = OBJECT_ID(@P1)
ORDER BY ct.create_date DESC;
SELECT ct.capture_instance, c.name AS column_name,
       st.name AS system_type_name, COALESCE(ut.name, st.name, N'?') AS type_name,
       c.max_length, c.precision, c.scale, c.collation_name, c.is_nullable
FROM cdc.change_tables AS ct
JOIN sys.indexes AS i ON i.object_id = ct.source_object_id
     AND (i.name = ct.index_name OR (ct.index_name IS NULL AND i.is_primary_key = 1))
JOIN sys.index_columns AS ic ON ic.object_id = i.object_id AND ic.index_id = i.index_id
     AND ic.key_ordinal > 0
JOIN sys.columns AS c ON c.object_id = ic.object_id AND c.column_id = ic.column_id
LEFT JOIN sys.types AS ut ON ut.user_type_id = c.user_type_id
LEFT JOIN sys.types AS st ON st.user_type_id = c.system_type_id AND st.is_user_defined = 0
     AND st.is_assembly_type = 0
WHERE ct.source_object_id = OBJECT_ID(@P1)
ORDER BY ct.capture_instance, ic.key_ordinal;
SELECT ct.capture_instance, cc.column_name, cc.column_ordinal, cc.is_computed,
       st.name AS system_type_name, COALESCE(ut.name, st.name, cc.column_type) AS type_name,
       c.max_length, c.precision, c.scale, c.collation_name, c.is_nullable
FROM cdc.change_tables AS ct
JOIN cdc.captured_columns AS cc ON cc.object_id = ct.object_id
LEFT JOIN sys.columns AS c ON c.object_id = ct.object_id AND c.name = cc.column_name
LEFT JOIN sys.types AS ut ON ut.user_type_id = c.user_type_id
LEFT JOIN sys.types AS st ON st.user_type_id = c.system_type_id AND st.is_user_defined = 0
     AND st.is_assembly_type = 0
WHERE ct.source_object_id = OBJECT_ID(@P1)
ORDER BY ct.capture_instance, cc.column_ordinal;
BEGIN TRY
    SELECT ct.capture_instance, h.ddl_command, h.ddl_lsn, h.ddl_time
    FROM cdc.ddl_history AS h
    JOIN cdc.change_tables AS ct ON ct.object_id = h.object_id
    WHERE h.source_object_id = OBJECT_ID(@P1)
    ORDER BY ct.capture_instance, h.ddl_lsn;
END TRY
BEGIN CATCH
    SELECT CAST(NULL AS sysname) AS capture_instance, CAST(NULL AS nvarchar(max)) AS ddl_command,
           CAST(NULL AS binary(10)) AS ddl_lsn, CAST(NULL AS datetime) AS ddl_time
    WHERE 1 = 0;
END CATCH;";

/// Template: the net changes in `[@P1, @P2]` with row filter `@P3`, ordered by commit LSN
/// then key: the CDC columns, then `{columns}` (the captured columns the full load also
/// selects, in the same order). Filled by [`net_changes`].
/// <https://learn.microsoft.com/sql/relational-databases/system-functions/cdc-fn-cdc-get-net-changes-capture-instance-transact-sql>
pub const NET_CHANGES: &str = "SELECT [__$start_lsn], [__$operation], [__$update_mask], {columns} \
FROM cdc.{function}(@P1, @P2, @P3) ORDER BY [__$start_lsn], {key_order};";

/// Template: every change in `[@P1, @P2]` with row filter `@P3` (`all` or `all update old`):
/// the CDC columns with `__$seqval`, then `{columns}`. The function's own order ("Entries are
/// always returned sorted, first by the transaction commit LSN of the change, and then by a
/// value that sequences the change within its transaction") is not guaranteed to survive an
/// outer query without `ORDER BY`, so it is spelled out; `__$operation` last puts an update's
/// before-image (3) ahead of its after-image (4), which share `__$seqval`. Filled by
/// [`all_changes`].
/// <https://learn.microsoft.com/sql/relational-databases/system-functions/cdc-fn-cdc-get-all-changes-capture-instance-transact-sql>
/// <https://learn.microsoft.com/sql/relational-databases/track-changes/work-with-change-data-sql-server>
pub const ALL_CHANGES: &str =
    "SELECT [__$start_lsn], [__$seqval], [__$operation], [__$update_mask], \
{columns} FROM cdc.{function}(@P1, @P2, @P3) ORDER BY [__$start_lsn], [__$seqval], [__$operation];";

/// Template: the full load of a table without a key, which cannot page: one batch that opens
/// a transaction and reads every row under a shared table lock held until [`RELEASE_LOCK`].
/// `TABLOCK`: "the shared lock is applied to the entire table instead of at the row or page
/// level. If HOLDLOCK is also specified, the table lock is held until the end of the
/// transaction". `HOLDLOCK` is `SERIALIZABLE` for this table, a locking read whatever the
/// database's READ_COMMITTED_SNAPSHOT ("All read operations performed within the transaction
/// operate under the rules for the specified isolation level unless a table hint in the FROM
/// clause of a statement specifies different locking or versioning behavior"). Writers wait
/// while the lock is held, so the rows read and the baseline LSN taken before the release
/// describe the same moment: no change can be both in the load and after the baseline. The
/// hints need no permission beyond SELECT (the table-hints page asks ALTER only for
/// KEEPIDENTITY, IGNORE_CONSTRAINTS and IGNORE_TRIGGERS).
///
/// Sent as a SQL batch (no parameters): `sp_executesql` is a procedure, and one that ends with
/// another `@@TRANCOUNT` than it began with raises Msg 266 ("Transaction count after EXECUTE
/// indicates a mismatching number of BEGIN and COMMIT statements"); a transaction a batch
/// begins outlives it. `XACT_ABORT ON` during the scan: a run-time error in it rolls the
/// transaction back, so a failed scan leaves no lock behind. `XACT_ABORT OFF` after it (a SET
/// in a batch stays in force for the session; only one in a procedure or in `sp_executesql`'s
/// dynamic SQL "gets restored after control returns"): between the scan and the release the
/// job reads capture progress and the baseline in the same transaction, and
/// `CAPTURE_PROGRESS` (like `CAPTURE_INSTANCES`) catches a permission error in `BEGIN TRY`;
/// under XACT_ABORT ON that error would make the transaction uncommittable ("An error that
/// ordinarily ends a transaction outside a TRY block causes a transaction to enter an
/// uncommittable state when the error occurs inside a TRY block"), and the engine rolls such a
/// transaction back when the batch finishes, dropping the lock before the baseline is read.
/// OFF is stated rather than assumed, since a server's `user options` can turn XACT_ABORT on
/// for every session. Filled by [`scan_locked`].
/// <https://learn.microsoft.com/sql/t-sql/queries/hints-transact-sql-table>
/// <https://learn.microsoft.com/sql/t-sql/statements/set-transaction-isolation-level-transact-sql>
/// <https://learn.microsoft.com/sql/t-sql/statements/set-xact-abort-transact-sql>
/// <https://learn.microsoft.com/sql/t-sql/statements/set-statements-transact-sql>
/// <https://learn.microsoft.com/sql/t-sql/language-elements/begin-transaction-transact-sql>
/// <https://learn.microsoft.com/sql/t-sql/language-elements/try-catch-transact-sql>
/// <https://learn.microsoft.com/sql/relational-databases/errors-events/database-engine-events-and-errors-0-to-999>
pub const SCAN_LOCKED: &str = "SET XACT_ABORT ON;
BEGIN TRANSACTION;
SELECT {columns} FROM {table} WITH (TABLOCK, HOLDLOCK);
SET XACT_ABORT OFF;";

/// Ends the transaction of [`SCAN_LOCKED`], releasing its table lock, and says whether it
/// was still open (`open_transactions int`): 0 means the server had already rolled it back
/// (the lock was gone before the baseline was read), and the load must not trust its
/// baseline.
/// <https://learn.microsoft.com/sql/t-sql/language-elements/commit-transaction-transact-sql>
/// <https://learn.microsoft.com/sql/t-sql/functions/trancount-transact-sql>
pub const RELEASE_LOCK: &str = "DECLARE @open int = @@TRANCOUNT;
IF @open > 0 COMMIT TRANSACTION;
SELECT @open AS open_transactions;";

/// Template: the first `@P1` rows of a table in key order (full load, first part), the
/// captured columns only. Filled by [`scan`].
/// <https://learn.microsoft.com/sql/t-sql/queries/top-transact-sql>
pub const SCAN_FIRST: &str = "SELECT TOP (@P1) {columns} FROM {table} ORDER BY {key_order};";

/// Template: the next `@P1` rows after key `(@P2, @P3, …)`. T-SQL has no row comparison, so
/// `(k1, k2, k3) > (c1, c2, c3)` is written in the form that gives the optimizer a leading
/// seek range, `k1 >= c1 AND (k1 > c1 OR (k1 = c1 AND (k2 > c2 OR (k2 = c2 AND k3 > c3))))`,
/// and each `c` is its parameter cast to the key column's declared type and collation
/// ([`KeyType::cast`](crate::cdc::KeyType::cast)), so no comparison converts the column: the pages follow the index
/// order exactly (data-type precedence would otherwise convert a `varchar` column to the
/// `nvarchar` parameter and compare it with Unicode rules, or a `datetime` to `datetime2`).
/// Filled by [`scan`].
/// <https://learn.microsoft.com/sql/t-sql/queries/top-transact-sql>
/// <https://learn.microsoft.com/sql/t-sql/data-types/data-type-precedence-transact-sql>
/// <https://learn.microsoft.com/sql/t-sql/functions/cast-and-convert-transact-sql>
pub const SCAN_AFTER: &str =
    "SELECT TOP (@P1) {columns} FROM {table} WHERE {after} ORDER BY {key_order};";

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
///
/// Both watermark writes begin with `SET NOCOUNT OFF;`: the row count travels in the DONE
/// token only while NOCOUNT is off ("When SET NOCOUNT is ON, the count is not returned"), and
/// a server's `user options` (bit 512) or the login's defaults can turn it on for every
/// session — a 0 read for "updated" would make every run think it was superseded, forever.
/// The SET is in force from execution for the rest of the batch.
/// <https://learn.microsoft.com/sql/t-sql/statements/set-nocount-transact-sql>
/// <https://learn.microsoft.com/sql/database-engine/configure-windows/configure-the-user-options-server-configuration-option>
/// <https://learn.microsoft.com/sql/t-sql/statements/insert-transact-sql>
/// <https://learn.microsoft.com/sql/t-sql/queries/hints-transact-sql-table>
pub const INSERT_WATERMARK: &str = "\
SET NOCOUNT OFF;
INSERT INTO {watermark} (schema_name, table_name, capture_instance, last_lsn, last_window_end,
       pending_to_lsn, pending_window_end, pending_blob, full_load_id, full_load_baseline_lsn,
       full_load_parts, full_load_last_key, full_load_rows, rows_copied, bytes_copied, version,
       updated_at)
SELECT @P1, @P2, @P3, @P4, @P5, @P6, @P7, @P8, @P9, @P10, @P11, @P12, @P13, @P14, @P15, @P16, @P17
WHERE NOT EXISTS (SELECT 1 FROM {watermark} WITH (UPDLOCK, HOLDLOCK)
                  WHERE schema_name = @P1 AND table_name = @P2);";

/// Template: replace a watermark row if its version is still `@P18` (optimistic concurrency;
/// `@P1…@P17` in [`WATERMARK_COLUMNS`] order, `@P16` being the new version). Row count 1 =
/// updated, 0 = another run moved it (`SET NOCOUNT OFF` as in [`INSERT_WATERMARK`]). Filled
/// by [`update_watermark`].
///
/// Every successful write also clears the table's `last_error` ([`SET_LAST_ERROR`]): a run
/// that moved the watermark has succeeded since the error, and clearing it here costs no
/// round trip of its own.
/// <https://learn.microsoft.com/sql/t-sql/statements/set-nocount-transact-sql>
/// <https://learn.microsoft.com/sql/t-sql/queries/update-transact-sql>
pub const UPDATE_WATERMARK: &str = "\
SET NOCOUNT OFF;
UPDATE {watermark} SET capture_instance = @P3, last_lsn = @P4, last_window_end = @P5,
       pending_to_lsn = @P6, pending_window_end = @P7, pending_blob = @P8, full_load_id = @P9,
       full_load_baseline_lsn = @P10, full_load_parts = @P11, full_load_last_key = @P12,
       full_load_rows = @P13, rows_copied = @P14, bytes_copied = @P15, version = @P16,
       updated_at = @P17, last_error = NULL, last_error_at = NULL
WHERE schema_name = @P1 AND table_name = @P2 AND version = @P18;";

/// Template: records why a table's copy failed (`@P3` nvarchar(4000), `@P4` datetime2 UTC)
/// on its watermark row (`@P1` schema, `@P2` table). Not conditional on the version and
/// does not bump it: the error is a note for people (`handler status`, the poison queue),
/// not state a run acts on, so writing it can never make a concurrent run think it was
/// superseded. [`UPDATE_WATERMARK`] clears it. Filled by [`set_last_error`].
/// <https://learn.microsoft.com/sql/t-sql/queries/update-transact-sql>
/// <https://learn.microsoft.com/sql/t-sql/data-types/nchar-and-nvarchar-transact-sql>
pub const SET_LAST_ERROR: &str = "\
UPDATE {watermark} SET last_error = @P3, last_error_at = @P4
WHERE schema_name = @P1 AND table_name = @P2;";

/// Template: a table's last error and when it was recorded (`@P1` schema, `@P2` table);
/// no row, or NULLs, when there is none. Filled by [`read_last_error`].
/// <https://learn.microsoft.com/sql/t-sql/queries/select-transact-sql>
pub const READ_LAST_ERROR: &str = "\
SELECT last_error, last_error_at FROM {watermark}
WHERE schema_name = @P1 AND table_name = @P2 AND last_error IS NOT NULL;";

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

/// `cdc.[fn_cdc_get_all_changes_<ci>]`'s bracketed part, after validating `ci`.
pub fn all_changes_function(capture_instance: &str) -> Result<String, NameError> {
    validate_identifier(capture_instance)?;
    Ok(quote_identifier(&format!(
        "fn_cdc_get_all_changes_{capture_instance}"
    )))
}

/// [`ALL_CHANGES`] for a capture instance read from `cdc.change_tables`, selecting `columns`
/// after the CDC columns.
pub fn all_changes<S: AsRef<str>>(
    capture_instance: &str,
    columns: &[S],
) -> Result<String, NameError> {
    let function = all_changes_function(capture_instance)?;
    Ok(fill(
        ALL_CHANGES,
        &[
            ("{function}", &function),
            ("{columns}", &column_list(columns)?),
        ],
    ))
}

/// [`SCAN_LOCKED`] for `table`, selecting `columns`.
pub fn scan_locked<S: AsRef<str>>(table: &TableRef, columns: &[S]) -> Result<String, NameError> {
    Ok(fill(
        SCAN_LOCKED,
        &[
            ("{columns}", &column_list(columns)?),
            ("{table}", &validate_table(table)?),
        ],
    ))
}

/// `[a], [b], …` after validating every name; at least one is required.
fn column_list<S: AsRef<str>>(columns: &[S]) -> Result<String, NameError> {
    if columns.is_empty() {
        return Err(NameError::Length(String::new()));
    }
    let mut quoted = Vec::with_capacity(columns.len());
    for column in columns {
        validate_catalog_name(column.as_ref())?;
        quoted.push(quote_identifier(column.as_ref()));
    }
    Ok(quoted.join(", "))
}

fn key_order(key_columns: &[KeyColumn]) -> Result<String, NameError> {
    let names: Vec<&str> = key_columns.iter().map(|k| k.name.as_str()).collect();
    column_list(&names)
}

fn validate_table(table: &TableRef) -> Result<String, NameError> {
    validate_identifier(&table.schema)?;
    validate_identifier(&table.table)?;
    Ok(table.quoted())
}

/// [`NET_CHANGES`] for a capture instance read from `cdc.change_tables`, selecting `columns`
/// after the CDC columns, ordered by its key.
pub fn net_changes<S: AsRef<str>>(
    capture_instance: &str,
    key_columns: &[KeyColumn],
    columns: &[S],
) -> Result<String, NameError> {
    let function = net_changes_function(capture_instance)?;
    let order = key_order(key_columns)?;
    Ok(fill(
        NET_CHANGES,
        &[
            ("{function}", &function),
            ("{columns}", &column_list(columns)?),
            ("{key_order}", &order),
        ],
    ))
}

/// [`SCAN_FIRST`] (`after_key == false`) or [`SCAN_AFTER`]: `@P1` is the row limit, the key
/// values of the last row read are `@P2…` in `key_columns` order.
pub fn scan<S: AsRef<str>>(
    table: &TableRef,
    key_columns: &[KeyColumn],
    columns: &[S],
    after_key: bool,
    upto_key: bool,
) -> Result<String, NameError> {
    let table = validate_table(table)?;
    let order = key_order(key_columns)?;
    let columns = column_list(columns)?;
    let n = key_columns.len();
    let predicate = match (after_key, upto_key) {
        (false, false) => {
            return Ok(fill(
                SCAN_FIRST,
                &[
                    ("{columns}", &columns),
                    ("{table}", &table),
                    ("{key_order}", &order),
                ],
            ))
        }
        (true, false) => after_predicate(key_columns),
        (false, true) => upto_predicate(key_columns, 2),
        (true, true) => format!(
            "({}) AND ({})",
            after_predicate(key_columns),
            upto_predicate(key_columns, n + 2)
        ),
    };
    Ok(fill(
        SCAN_AFTER,
        &[
            ("{columns}", &columns),
            ("{table}", &table),
            ("{after}", &predicate),
            ("{key_order}", &order),
        ],
    ))
}

/// `(k1, …, kn) > (@P2, …)` in the seekable form of [`SCAN_AFTER`], names already validated.
fn after_predicate(key_columns: &[KeyColumn]) -> String {
    keyset_predicate(key_columns, 2, [">", ">", ">="])
}

/// `(k1, …, kn) <= (@Pfirst, …)`, a range's inclusive upper bound, in the same seekable form:
/// `k1 <= c1 AND (k1 < c1 OR (k1 = c1 AND (… kn <= cn)))`.
fn upto_predicate(key_columns: &[KeyColumn], first: usize) -> String {
    keyset_predicate(key_columns, first, ["<", "<=", "<="])
}

/// A row comparison of the key with parameters `@Pfirst…`: `[strict, last, lead]` are the
/// operators of the inner columns, the last column and the leading seek term.
fn keyset_predicate(key_columns: &[KeyColumn], first: usize, ops: [&str; 3]) -> String {
    let [strict, last, lead] = ops;
    let terms: Vec<(String, String)> = key_columns
        .iter()
        .enumerate()
        .map(|(i, k)| {
            (
                quote_identifier(&k.name),
                k.ty.cast(&format!("@P{}", i + first)),
            )
        })
        .collect();
    // expr(i) = ki OP ci OR (ki = ci AND expr(i + 1)), the last one just kn LAST cn.
    let mut expr = String::new();
    for (i, (column, value)) in terms.iter().enumerate().rev() {
        expr = if expr.is_empty() {
            format!("{column} {last} {value}")
        } else if i + 2 == terms.len() {
            format!("{column} {strict} {value} OR ({column} = {value} AND {expr})")
        } else {
            format!("{column} {strict} {value} OR ({column} = {value} AND ({expr}))")
        };
    }
    match terms.first() {
        Some((column, value)) if terms.len() > 1 => {
            format!("{column} {lead} {value} AND ({expr})")
        }
        _ => expr,
    }
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

// ---- Parallel full load (issue 12): range planning and the range table ----

/// The approximate row count of a table (`@P1`, its quoted two-part name): the rows of its
/// heap or clustered index (`index_id` 0 or 1), summed over partitions. "Approximate number
/// of rows in this partition"; visible to a user with any permission on the table (metadata
/// visibility), and NULL when `OBJECT_ID` cannot see it, which plans one range. Read once
/// per load, only when ranges are enabled, to choose how many.
/// <https://learn.microsoft.com/sql/relational-databases/system-catalog-views/sys-partitions-transact-sql>
/// <https://learn.microsoft.com/sql/relational-databases/security/metadata-visibility-configuration>
pub const TABLE_ROWS: &str = "\
SELECT CAST(SUM(p.rows) AS bigint) AS row_count FROM sys.partitions AS p
WHERE p.object_id = OBJECT_ID(@P1) AND p.index_id IN (0, 1);";

/// Template: a page-level sample of the key columns, ordered by the key on the server, so
/// the boundaries picked from it are in exactly the order the range predicates compare in
/// (collations included). `TABLESAMPLE SYSTEM` reads only the sampled 8 KB pages and returns
/// all their rows; `{percent}` is a number the copier formats (not a parameter). Read once per
/// load. Filled by [`sample_keys`].
/// <https://learn.microsoft.com/sql/t-sql/queries/from-transact-sql#tablesample-clause>
pub const SAMPLE_KEYS: &str =
    "SELECT {keys} FROM {table} TABLESAMPLE SYSTEM ({percent} PERCENT) ORDER BY {key_order};";

/// The range table's columns in the order every range statement uses. The table is the
/// watermark table's name with `_range` appended, in its schema ([`range_table`]).
pub const RANGE_COLUMNS: [&str; 13] = [
    "schema_name",
    "table_name",
    "load_id",
    "range_no",
    "after_key",
    "upto_key",
    "parts_done",
    "last_key",
    "rows_done",
    "bytes_done",
    "done",
    "version",
    "updated_at",
];

/// Template: the ranges of one load (`@P1` schema, `@P2` table, `@P3` load id) in range
/// order, columns as [`RANGE_COLUMNS`]. Filled by [`read_ranges`].
/// <https://learn.microsoft.com/sql/t-sql/queries/select-transact-sql>
pub const READ_RANGES: &str = "\
SELECT schema_name, table_name, load_id, range_no, after_key, upto_key, parts_done, last_key,
       rows_done, bytes_done, done, version, updated_at
FROM {ranges} WHERE schema_name = @P1 AND table_name = @P2 AND load_id = @P3 ORDER BY range_no;";

/// Template: insert a load's whole range plan, unless the load has ranges already: one
/// statement, so two runs that planned the same load differently (the table changed between
/// their samples) can never mix their boundaries; the loser reads the winner's plan back.
/// `{values}` is one `(@Pn, …)` group of [`RANGE_COLUMNS`] per range, `@P1…@P3` the first
/// range's table and load (the same for all). `UPDLOCK, HOLDLOCK` keep the check and the
/// insert one step against a concurrent plan; a racing insert that slips past fails with
/// 2627 and reads as "another run was first", as in [`INSERT_WATERMARK`], and so does row
/// count 0 (`SET NOCOUNT OFF` for the same reason). Filled by [`insert_ranges`].
/// <https://learn.microsoft.com/sql/t-sql/statements/insert-transact-sql>
/// <https://learn.microsoft.com/sql/t-sql/queries/table-value-constructor-transact-sql>
/// <https://learn.microsoft.com/sql/t-sql/queries/hints-transact-sql-table>
pub const INSERT_RANGES: &str = "\
SET NOCOUNT OFF;
INSERT INTO {ranges} (schema_name, table_name, load_id, range_no, after_key, upto_key,
       parts_done, last_key, rows_done, bytes_done, done, version, updated_at)
SELECT v.* FROM (VALUES {values}) AS v (schema_name, table_name, load_id, range_no, after_key,
       upto_key, parts_done, last_key, rows_done, bytes_done, done, version, updated_at)
WHERE NOT EXISTS (SELECT 1 FROM {ranges} WITH (UPDLOCK, HOLDLOCK)
                  WHERE schema_name = @P1 AND table_name = @P2 AND load_id = @P3);";

/// The most ranges one load may have: [`INSERT_RANGES`] sends 13 parameters per range, and a
/// request carries at most 2,100.
/// <https://learn.microsoft.com/sql/sql-server/maximum-capacity-specifications-for-sql-server>
pub const MAX_RANGES: u32 = 64;

/// Template: a range's checkpoint, if its version is still `@P14` (optimistic concurrency,
/// as [`UPDATE_WATERMARK`]; `@P1…@P13` in [`RANGE_COLUMNS`] order, the bounds `@P5`/`@P6`
/// are sent but never changed). Row count 1 = updated, 0 = another worker moved it.
/// <https://learn.microsoft.com/sql/t-sql/statements/set-nocount-transact-sql>
/// <https://learn.microsoft.com/sql/t-sql/queries/update-transact-sql>
pub const UPDATE_RANGE: &str = "\
SET NOCOUNT OFF;
UPDATE {ranges} SET parts_done = @P7, last_key = @P8, rows_done = @P9, bytes_done = @P10,
       done = @P11, version = @P12, updated_at = @P13
WHERE schema_name = @P1 AND table_name = @P2 AND load_id = @P3 AND range_no = @P4
  AND version = @P14;";

/// Template: the range rows of a table's other loads (`@P3` the one to keep), deleted when a
/// load starts, so the table holds one load per copied table.
/// <https://learn.microsoft.com/sql/t-sql/statements/delete-transact-sql>
pub const DELETE_OTHER_RANGES: &str = "\
DELETE FROM {ranges} WHERE schema_name = @P1 AND table_name = @P2 AND load_id <> @P3;";

/// The range table of `watermark_table`: same schema, name + `_range`.
pub fn range_table(watermark_table: &TableRef) -> TableRef {
    TableRef {
        schema: watermark_table.schema.clone(),
        table: format!("{}_range", watermark_table.table),
    }
}

/// [`SAMPLE_KEYS`] for `table` at `percent` (0, 100], four decimals.
pub fn sample_keys(
    table: &TableRef,
    key_columns: &[KeyColumn],
    percent: f64,
) -> Result<String, NameError> {
    let keys = column_list(&key_columns.iter().map(|k| &k.name).collect::<Vec<_>>())?;
    Ok(fill(
        SAMPLE_KEYS,
        &[
            ("{keys}", &keys),
            ("{table}", &validate_table(table)?),
            ("{percent}", &format!("{:.4}", percent.clamp(0.0001, 100.0))),
            ("{key_order}", &key_order(key_columns)?),
        ],
    ))
}

/// [`INSERT_RANGES`] for `ranges` ranges (at least one).
pub fn insert_ranges(watermark_table: &TableRef, ranges: usize) -> Result<String, NameError> {
    let width = RANGE_COLUMNS.len();
    let values: Vec<String> = (0..ranges.max(1))
        .map(|r| {
            let params: Vec<String> = (1..=width)
                .map(|c| format!("@P{}", r * width + c))
                .collect();
            format!("({})", params.join(", "))
        })
        .collect();
    Ok(fill(
        &ranges_statement(INSERT_RANGES, watermark_table)?,
        &[("{values}", &values.join(", "))],
    ))
}

/// A range statement ([`READ_RANGES`], [`INSERT_RANGES`], [`UPDATE_RANGE`],
/// [`DELETE_OTHER_RANGES`]) for the range table of `watermark_table`.
pub fn ranges_statement(template: &str, watermark_table: &TableRef) -> Result<String, NameError> {
    Ok(fill(
        template,
        &[("{ranges}", &validate_table(&range_table(watermark_table))?)],
    ))
}

/// [`SET_LAST_ERROR`] for the configured watermark table.
pub fn set_last_error(watermark_table: &TableRef) -> Result<String, NameError> {
    Ok(fill(
        SET_LAST_ERROR,
        &[("{watermark}", &validate_table(watermark_table)?)],
    ))
}

/// [`READ_LAST_ERROR`] for the configured watermark table.
pub fn read_last_error(watermark_table: &TableRef) -> Result<String, NameError> {
    Ok(fill(
        READ_LAST_ERROR,
        &[("{watermark}", &validate_table(watermark_table)?)],
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cdc::KeyType;

    fn t(schema: &str, table: &str) -> TableRef {
        TableRef {
            schema: schema.into(),
            table: table.into(),
        }
    }

    fn names(names: &[&str]) -> Vec<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    /// Integer key columns named `names`.
    fn keys(names: &[&str]) -> Vec<KeyColumn> {
        names
            .iter()
            .map(|n| KeyColumn::new(*n, KeyType::BigInt))
            .collect()
    }

    fn cols_id() -> Vec<String> {
        names(&["id"])
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
            (GET_MIN_LSN, 1),
            (CAPTURE_PROGRESS, 1),
            (CAPTURE_INSTANCES, 1),
            (NET_CHANGES, 3),
            (ALL_CHANGES, 3),
            (SCAN_LOCKED, 0),
            (RELEASE_LOCK, 0),
            (SCAN_FIRST, 1),
            (READ_WATERMARK, 2),
            (SET_LAST_ERROR, 4),
            (READ_LAST_ERROR, 2),
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
        // the columns are NULL. The DMV is read nowhere else, and only its documented columns.
        let try_block = CAPTURE_PROGRESS
            .split("BEGIN TRY")
            .nth(1)
            .and_then(|rest| rest.split("END TRY").next())
            .expect("a TRY block");
        assert_eq!(
            try_block
                .matches("FROM sys.dm_cdc_log_scan_sessions")
                .count(),
            2
        );
        assert_eq!(
            CAPTURE_PROGRESS
                .matches("sys.dm_cdc_log_scan_sessions")
                .count(),
            2
        );
        assert!(CAPTURE_PROGRESS.contains(
            "BEGIN CATCH\n    SELECT @drained_since = NULL, @scan_session = NULL, @scan_empty = NULL;\nEND CATCH;"
        ));
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

    /// The scan mark: the newest session row (an errored row gives no count), and the
    /// server's clock read once, first, before the view, so that every scan the mark counts
    /// ended after `server_now`; the offset comes from the same reading.
    #[test]
    fn the_scan_mark_is_the_newest_row_read_after_the_clock() {
        let try_block = CAPTURE_PROGRESS
            .split("BEGIN TRY")
            .nth(1)
            .and_then(|rest| rest.split("END TRY").next())
            .expect("a TRY block");
        assert!(try_block.contains(
            "    SELECT TOP (1) @scan_session = session_id,\n           @scan_empty = CASE WHEN error_count = 0 THEN empty_scan_count END\n    FROM sys.dm_cdc_log_scan_sessions WHERE session_id > 0 ORDER BY session_id DESC;"
        ));
        assert!(
            CAPTURE_PROGRESS.starts_with("DECLARE @now datetimeoffset(7) = SYSDATETIMEOFFSET();\n")
        );
        assert_eq!(CAPTURE_PROGRESS.matches("SYSDATETIMEOFFSET()").count(), 1);
        assert!(CAPTURE_PROGRESS.contains("DECLARE @tz int = DATEPART(TZOFFSET, @now);"));
        assert!(CAPTURE_PROGRESS.ends_with(
            "       @scan_session AS newest_scan_session_id,\n       @scan_empty AS newest_scan_empty_scans,\n       @now AS server_now;"
        ));
    }

    #[test]
    fn net_change_statements_quote_the_function_name() {
        assert_eq!(
            net_changes("dbo_customers", &keys(&["customer_id"]), &names(&["customer_id", "name"])).unwrap(),
            "SELECT [__$start_lsn], [__$operation], [__$update_mask], [customer_id], [name] FROM cdc.[fn_cdc_get_net_changes_dbo_customers](@P1, @P2, @P3) ORDER BY [__$start_lsn], [customer_id];"
        );
        assert_eq!(
            net_changes("sales_order_lines", &keys(&["order_id", "line_no"]), &names(&["order_id", "line_no", "qty"])).unwrap(),
            "SELECT [__$start_lsn], [__$operation], [__$update_mask], [order_id], [line_no], [qty] FROM cdc.[fn_cdc_get_net_changes_sales_order_lines](@P1, @P2, @P3) ORDER BY [__$start_lsn], [order_id], [line_no];"
        );
    }

    /// Issue 10: every change of a keyless table, `__$seqval` after the commit LSN and the
    /// order spelled out (an update's before-image, 3, ahead of its after-image, 4).
    #[test]
    fn all_changes_order_by_commit_lsn_seqval_and_operation() {
        assert_eq!(
            all_changes("dbo_audit_log", &names(&["event", "Order Date", "x]y"])).unwrap(),
            "SELECT [__$start_lsn], [__$seqval], [__$operation], [__$update_mask], [event], [Order Date], [x]]y] FROM cdc.[fn_cdc_get_all_changes_dbo_audit_log](@P1, @P2, @P3) ORDER BY [__$start_lsn], [__$seqval], [__$operation];"
        );
        assert_eq!(
            all_changes_function("dbo_t_v2").unwrap(),
            "[fn_cdc_get_all_changes_dbo_t_v2]"
        );
    }

    /// Issue 10: the keyless full load is one batch: XACT_ABORT on for the scan, the
    /// transaction, the locking read of the captured columns, XACT_ABORT off again.
    #[test]
    fn scan_locked_reads_the_table_under_a_held_table_lock() {
        assert_eq!(
            scan_locked(&t("sales", "audit_log"), &names(&["event", "Order Date"])).unwrap(),
            "SET XACT_ABORT ON;\nBEGIN TRANSACTION;\nSELECT [event], [Order Date] FROM [sales].[audit_log] WITH (TABLOCK, HOLDLOCK);\nSET XACT_ABORT OFF;"
        );
        assert_eq!(
            RELEASE_LOCK,
            "DECLARE @open int = @@TRANCOUNT;\nIF @open > 0 COMMIT TRANSACTION;\n\
             SELECT @open AS open_transactions;"
        );
        assert_eq!(SCAN_LOCKED.matches("BEGIN TRANSACTION").count(), 1);
        assert!(
            !SCAN_LOCKED.contains("COMMIT"),
            "the lock outlives the scan"
        );
    }

    /// Result set 4 of CAPTURE_INSTANCES: the DDL recorded against each instance (joined on
    /// the change table's object_id), inside TRY with a CATCH that answers the same columns
    /// and no row.
    /// Result set 3 types each captured column from the change table's own `sys.columns`
    /// (`ct.object_id`, not `ct.source_object_id`), outer-joined so a missing grant shows as
    /// NULL types instead of dropping the column.
    #[test]
    fn capture_instances_types_captured_columns_from_the_change_table() {
        let third = CAPTURE_INSTANCES
            .split(";\n")
            .nth(2)
            .expect("a third statement");
        assert_eq!(
            third,
            "SELECT ct.capture_instance, cc.column_name, cc.column_ordinal, cc.is_computed,
       st.name AS system_type_name, COALESCE(ut.name, st.name, cc.column_type) AS type_name,
       c.max_length, c.precision, c.scale, c.collation_name, c.is_nullable
FROM cdc.change_tables AS ct
JOIN cdc.captured_columns AS cc ON cc.object_id = ct.object_id
LEFT JOIN sys.columns AS c ON c.object_id = ct.object_id AND c.name = cc.column_name
LEFT JOIN sys.types AS ut ON ut.user_type_id = c.user_type_id
LEFT JOIN sys.types AS st ON st.user_type_id = c.system_type_id AND st.is_user_defined = 0
     AND st.is_assembly_type = 0
WHERE ct.source_object_id = OBJECT_ID(@P1)
ORDER BY ct.capture_instance, cc.column_ordinal"
        );
        assert_eq!(max_param(CAPTURE_INSTANCES), 1);
    }

    #[test]
    fn capture_instances_reads_the_ddl_history_inside_try() {
        let fourth = CAPTURE_INSTANCES
            .split("BEGIN TRY\n")
            .nth(1)
            .expect("a TRY block");
        assert_eq!(
            fourth,
            "    SELECT ct.capture_instance, h.ddl_command, h.ddl_lsn, h.ddl_time
    FROM cdc.ddl_history AS h
    JOIN cdc.change_tables AS ct ON ct.object_id = h.object_id
    WHERE h.source_object_id = OBJECT_ID(@P1)
    ORDER BY ct.capture_instance, h.ddl_lsn;
END TRY
BEGIN CATCH
    SELECT CAST(NULL AS sysname) AS capture_instance, CAST(NULL AS nvarchar(max)) AS ddl_command,
           CAST(NULL AS binary(10)) AS ddl_lsn, CAST(NULL AS datetime) AS ddl_time
    WHERE 1 = 0;
END CATCH;"
        );
        assert_eq!(CAPTURE_INSTANCES.matches("cdc.ddl_history").count(), 1);
        // Four result sets: one SELECT each, the CATCH's stand-in for the fourth.
        assert_eq!(CAPTURE_INSTANCES.matches("SELECT ").count(), 5);
        assert!(CAPTURE_INSTANCES.contains("ORDER BY ct.create_date DESC;"));
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
            let id = keys(&["id"]);
            let cols = names(&["id"]);
            assert!(net_changes(bad, &id, &cols).is_err(), "{bad:?}");
            assert!(
                scan(&t("dbo", bad), &id, &cols, true, false).is_err(),
                "{bad:?}"
            );
            assert!(
                scan(&t(bad, "t"), &id, &cols, false, false).is_err(),
                "{bad:?}"
            );
            assert!(read_watermark(&t(bad, "w")).is_err(), "{bad:?}");
            assert!(insert_watermark(&t("cdc_copy", bad)).is_err(), "{bad:?}");
            assert!(update_watermark(&t(bad, bad)).is_err(), "{bad:?}");
            assert!(all_changes(bad, &cols).is_err(), "{bad:?}");
            assert!(all_changes_function(bad).is_err(), "{bad:?}");
            assert!(scan_locked(&t("dbo", bad), &cols).is_err(), "{bad:?}");
            assert!(scan_locked(&t(bad, "t"), &cols).is_err(), "{bad:?}");
        }
        assert!(
            all_changes::<String>("dbo_t", &[]).is_err(),
            "columns are required"
        );
        assert!(
            scan_locked::<String>(&t("dbo", "t"), &[]).is_err(),
            "columns are required"
        );
        for bad_column in ["", "x\u{0}"] {
            assert!(all_changes("dbo_t", &names(&[bad_column])).is_err());
            assert!(scan_locked(&t("dbo", "t"), &names(&[bad_column])).is_err());
        }
        assert!(
            net_changes("dbo_t", &[], &cols_id()).is_err(),
            "a key is required"
        );
        assert!(
            net_changes::<String>("dbo_t", &keys(&["id"]), &[]).is_err(),
            "columns are required"
        );
        assert!(scan::<String>(&t("dbo", "t"), &keys(&["id"]), &[], false, false).is_err());
    }

    /// Column names come from the catalog, never from configuration: whatever SQL Server
    /// allows is quoted (`]` doubled), so it stays one identifier; only what no catalog holds
    /// (empty, control characters, over 128 characters) is refused.
    #[test]
    fn catalog_column_names_are_quoted_not_refused() {
        let cases: &[(&str, Option<&str>)] = &[
            ("Order Date", Some("[Order Date]")),
            ("O'Neil", Some("[O'Neil]")),
            ("x]; DROP TABLE t;--", Some("[x]]; DROP TABLE t;--]")),
            ("a.b", Some("[a.b]")),
            ("", None),
            ("x\u{0}", None),
            ("tab\there", None),
        ];
        for (name, quoted) in cases {
            let built = scan(&t("dbo", "t"), &keys(&[name]), &names(&[name]), true, false);
            let net = net_changes("dbo_t", &keys(&[name]), &names(&[name]));
            match quoted {
                Some(q) => {
                    let built = built.unwrap();
                    assert!(
                        built.contains(&format!("SELECT TOP (@P1) {q} FROM")),
                        "{built}"
                    );
                    assert!(built.ends_with(&format!("ORDER BY {q};")), "{built}");
                    assert!(net
                        .unwrap()
                        .contains(&format!("[__$update_mask], {q} FROM")));
                }
                None => {
                    assert!(built.is_err(), "{name:?}");
                    assert!(net.is_err(), "{name:?}");
                }
            }
        }
        let long = "c".repeat(129);
        assert!(scan(
            &t("dbo", "t"),
            &keys(&["id"]),
            &names(&["id", &long]),
            false,
            false
        )
        .is_err());
    }

    #[test]
    fn scan_selects_the_captured_columns_and_seeks_past_the_key() {
        let table = t("dbo", "customers");
        let cols = names(&["a", "b", "c", "name"]);
        let cases: &[(&[&str], bool, &str)] = &[
            (
                &["a"],
                false,
                "SELECT TOP (@P1) [a], [b], [c], [name] FROM [dbo].[customers] ORDER BY [a];",
            ),
            (
                &["a"],
                true,
                "SELECT TOP (@P1) [a], [b], [c], [name] FROM [dbo].[customers] WHERE [a] > CAST(@P2 AS bigint) ORDER BY [a];",
            ),
            (
                &["a", "b"],
                true,
                "SELECT TOP (@P1) [a], [b], [c], [name] FROM [dbo].[customers] WHERE [a] >= CAST(@P2 AS bigint) AND ([a] > CAST(@P2 AS bigint) OR ([a] = CAST(@P2 AS bigint) AND [b] > CAST(@P3 AS bigint))) ORDER BY [a], [b];",
            ),
            (
                &["a", "b", "c"],
                true,
                "SELECT TOP (@P1) [a], [b], [c], [name] FROM [dbo].[customers] WHERE [a] >= CAST(@P2 AS bigint) AND ([a] > CAST(@P2 AS bigint) OR ([a] = CAST(@P2 AS bigint) AND ([b] > CAST(@P3 AS bigint) OR ([b] = CAST(@P3 AS bigint) AND [c] > CAST(@P4 AS bigint))))) ORDER BY [a], [b], [c];",
            ),
        ];
        for (key, after, expected) in cases {
            assert_eq!(
                scan(&table, &keys(key), &cols, *after, false).unwrap(),
                *expected
            );
        }
    }

    /// Every type SQL Server accepts in a primary key or unique index, as a single key and as
    /// the second column of a composite one: the parameter is cast to the declared type, length,
    /// precision, scale and collation.
    #[test]
    fn every_key_type_is_compared_as_declared() {
        use crate::cdc::Collation;
        let ci_as = || Collation::parse("SQL_Latin1_General_CP1_CI_AS").unwrap();
        let bin2 = || Collation::parse("Latin1_General_100_BIN2").unwrap();
        #[rustfmt::skip]
        let cases: Vec<(KeyType, &str)> = vec![
            (KeyType::TinyInt, "CAST(@P AS tinyint)"),
            (KeyType::SmallInt, "CAST(@P AS smallint)"),
            (KeyType::Int, "CAST(@P AS int)"),
            (KeyType::BigInt, "CAST(@P AS bigint)"),
            (KeyType::Bit, "CAST(@P AS bit)"),
            (KeyType::Decimal { precision: 18, scale: 4 }, "CAST(@P AS decimal(18,4))"),
            (KeyType::Decimal { precision: 38, scale: 0 }, "CAST(@P AS decimal(38,0))"),
            (KeyType::Money, "CAST(@P AS money)"),
            (KeyType::SmallMoney, "CAST(@P AS smallmoney)"),
            (KeyType::Float, "CAST(@P AS float)"),
            (KeyType::Real, "CAST(@P AS real)"),
            (KeyType::Char { length: 3, collation: ci_as() }, "CAST(@P COLLATE SQL_Latin1_General_CP1_CI_AS AS char(3))"),
            (KeyType::VarChar { length: 20, collation: ci_as() }, "CAST(@P COLLATE SQL_Latin1_General_CP1_CI_AS AS varchar(20))"),
            (KeyType::NChar { length: 8, collation: bin2() }, "CAST(@P COLLATE Latin1_General_100_BIN2 AS nchar(8))"),
            (KeyType::NVarChar { length: 450, collation: ci_as() }, "CAST(@P COLLATE SQL_Latin1_General_CP1_CI_AS AS nvarchar(450))"),
            (KeyType::Binary { length: 16 }, "CAST(@P AS binary(16))"),
            (KeyType::VarBinary { length: 900 }, "CAST(@P AS varbinary(900))"),
            (KeyType::Date, "CAST(@P AS date)"),
            (KeyType::Time { scale: 3 }, "CAST(@P AS time(3))"),
            (KeyType::DateTime, "CAST(@P AS datetime)"),
            (KeyType::DateTime2 { scale: 7 }, "CAST(@P AS datetime2(7))"),
            (KeyType::SmallDateTime, "CAST(@P AS smalldatetime)"),
            (KeyType::DateTimeOffset { scale: 0 }, "CAST(@P AS datetimeoffset(0))"),
            (KeyType::UniqueIdentifier, "CAST(@P AS uniqueidentifier)"),
            (KeyType::RowVersion, "CAST(@P AS binary(8))"),
        ];
        let table = t("dbo", "t");
        let cols = names(&["region", "k", "v"]);
        for (ty, cast) in cases {
            let single = scan(
                &table,
                &[KeyColumn::new("k", ty.clone())],
                &cols,
                true,
                false,
            )
            .unwrap();
            let c2 = cast.replace("@P", "@P2");
            assert_eq!(
                single,
                format!("SELECT TOP (@P1) [region], [k], [v] FROM [dbo].[t] WHERE [k] > {c2} ORDER BY [k];"),
                "{ty}"
            );
            let composite = scan(
                &table,
                &[
                    KeyColumn::new("region", KeyType::Int),
                    KeyColumn::new("k", ty.clone()),
                ],
                &cols,
                true,
                false,
            )
            .unwrap();
            let r = "CAST(@P2 AS int)";
            let c3 = cast.replace("@P", "@P3");
            assert_eq!(
                composite,
                format!(
                    "SELECT TOP (@P1) [region], [k], [v] FROM [dbo].[t] WHERE [region] >= {r} AND ([region] > {r} OR ([region] = {r} AND [k] > {c3})) ORDER BY [region], [k];"
                ),
                "{ty}"
            );
        }
    }

    #[test]
    fn watermark_statements_name_the_quoted_table() {
        let wm = t("cdc_copy", "watermark");
        let read = read_watermark(&wm).unwrap();
        assert!(read
            .contains("FROM [cdc_copy].[watermark] WHERE schema_name = @P1 AND table_name = @P2;"));
        let insert = insert_watermark(&wm).unwrap();
        assert!(insert.starts_with("SET NOCOUNT OFF;\nINSERT INTO [cdc_copy].[watermark] ("));
        assert!(insert.contains("SELECT 1 FROM [cdc_copy].[watermark] WITH (UPDLOCK, HOLDLOCK)"));
        let update = update_watermark(&wm).unwrap();
        assert!(update.starts_with("SET NOCOUNT OFF;\nUPDATE [cdc_copy].[watermark] SET"));
        assert!(update.ends_with("AND version = @P18;"));
        for sql in [&read, &insert, &update] {
            assert!(!sql.contains('{'), "unfilled placeholder in {sql}");
            for column in WATERMARK_COLUMNS {
                assert!(sql.contains(column), "{column} missing from {sql}");
            }
        }
    }

    #[test]
    fn last_error_statements() {
        let wm = t("cdc_copy", "watermark");
        assert_eq!(
            set_last_error(&wm).unwrap(),
            "UPDATE [cdc_copy].[watermark] SET last_error = @P3, last_error_at = @P4\n\
             WHERE schema_name = @P1 AND table_name = @P2;"
        );
        assert_eq!(
            read_last_error(&wm).unwrap(),
            "SELECT last_error, last_error_at FROM [cdc_copy].[watermark]\n\
             WHERE schema_name = @P1 AND table_name = @P2 AND last_error IS NOT NULL;"
        );
        assert!(UPDATE_WATERMARK.contains("last_error = NULL, last_error_at = NULL"));
        assert!(set_last_error(&t("a]", "b")).is_err());
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

    /// A range's scan: `after < key <= upto`, the upper bound in the same seekable form with
    /// its parameters after the resume key's, so every key falls on one side of it exactly
    /// as the index orders it.
    #[test]
    fn a_range_scan_bounds_the_key_above_inclusively() {
        let table = t("dbo", "customers");
        let cols = names(&["a", "b", "name"]);
        let cases: &[(&[&str], bool, &str)] = &[
            (
                &["a"],
                false,
                "SELECT TOP (@P1) [a], [b], [name] FROM [dbo].[customers] WHERE [a] <= CAST(@P2 AS bigint) ORDER BY [a];",
            ),
            (
                &["a"],
                true,
                "SELECT TOP (@P1) [a], [b], [name] FROM [dbo].[customers] WHERE ([a] > CAST(@P2 AS bigint)) AND ([a] <= CAST(@P3 AS bigint)) ORDER BY [a];",
            ),
            (
                &["a", "b"],
                false,
                "SELECT TOP (@P1) [a], [b], [name] FROM [dbo].[customers] WHERE [a] <= CAST(@P2 AS bigint) AND ([a] < CAST(@P2 AS bigint) OR ([a] = CAST(@P2 AS bigint) AND [b] <= CAST(@P3 AS bigint))) ORDER BY [a], [b];",
            ),
            (
                &["a", "b"],
                true,
                "SELECT TOP (@P1) [a], [b], [name] FROM [dbo].[customers] WHERE ([a] >= CAST(@P2 AS bigint) AND ([a] > CAST(@P2 AS bigint) OR ([a] = CAST(@P2 AS bigint) AND [b] > CAST(@P3 AS bigint)))) AND ([a] <= CAST(@P4 AS bigint) AND ([a] < CAST(@P4 AS bigint) OR ([a] = CAST(@P4 AS bigint) AND [b] <= CAST(@P5 AS bigint)))) ORDER BY [a], [b];",
            ),
        ];
        for (key, after, expected) in cases {
            assert_eq!(
                scan(&table, &keys(key), &cols, *after, true).unwrap(),
                *expected
            );
        }
    }

    #[test]
    fn range_planning_statements() {
        assert_eq!(max_param(TABLE_ROWS), 1);
        assert!(TABLE_ROWS.contains("FROM sys.partitions AS p"));
        assert!(TABLE_ROWS.contains("p.index_id IN (0, 1)"));
        let sample = sample_keys(&t("dbo", "orders"), &keys(&["region", "id"]), 0.004).unwrap();
        assert_eq!(
            sample,
            "SELECT [region], [id] FROM [dbo].[orders] TABLESAMPLE SYSTEM (0.0040 PERCENT) ORDER BY [region], [id];"
        );
        for (percent, text) in [(250.0, "100.0000"), (0.0, "0.0001"), (12.34567, "12.3457")] {
            let s = sample_keys(&t("dbo", "t"), &keys(&["id"]), percent).unwrap();
            assert!(s.contains(&format!("SYSTEM ({text} PERCENT)")), "{s}");
        }
        assert!(sample_keys(&t("dbo", "t"), &keys(&[&"c".repeat(129)]), 1.0).is_err());
    }

    /// The range statements: the table next to the watermark's, parameters in
    /// [`RANGE_COLUMNS`] order, the plan inserted all at once.
    #[test]
    fn range_table_statements() {
        let wm = t("cdc_copy", "watermark");
        assert_eq!(range_table(&wm), t("cdc_copy", "watermark_range"));
        let read = ranges_statement(READ_RANGES, &wm).unwrap();
        assert!(read.contains("FROM [cdc_copy].[watermark_range] WHERE schema_name = @P1 AND table_name = @P2 AND load_id = @P3 ORDER BY range_no;"));
        assert_eq!(max_param(READ_RANGES), 3);
        assert!(read.contains(
            &RANGE_COLUMNS
                .join(", ")
                .replace("last_key, ", "last_key,\n       ")
        ));
        assert_eq!(max_param(UPDATE_RANGE), 14);
        for (i, column) in RANGE_COLUMNS.iter().enumerate().skip(6) {
            assert!(
                UPDATE_RANGE.contains(&format!("{column} = @P{}", i + 1)),
                "{column}"
            );
        }
        assert!(UPDATE_RANGE.contains("AND range_no = @P4\n  AND version = @P14;"));
        assert!(UPDATE_RANGE.starts_with("SET NOCOUNT OFF;"));
        let insert = insert_ranges(&wm, 2).unwrap();
        assert!(insert.starts_with("SET NOCOUNT OFF;\nINSERT INTO [cdc_copy].[watermark_range] ("));
        assert!(insert.contains("(VALUES (@P1, @P2, @P3, @P4, @P5, @P6, @P7, @P8, @P9, @P10, @P11, @P12, @P13), (@P14, @P15, @P16, @P17, @P18, @P19, @P20, @P21, @P22, @P23, @P24, @P25, @P26)) AS v"));
        assert!(insert.contains(
            "WHERE NOT EXISTS (SELECT 1 FROM [cdc_copy].[watermark_range] WITH (UPDLOCK, HOLDLOCK)"
        ));
        assert_eq!(
            max_param(&insert_ranges(&wm, MAX_RANGES as usize).unwrap()),
            13 * 64
        );
        const { assert!(13 * MAX_RANGES < 2100) };
        let delete = ranges_statement(DELETE_OTHER_RANGES, &wm).unwrap();
        assert_eq!(delete, "DELETE FROM [cdc_copy].[watermark_range] WHERE schema_name = @P1 AND table_name = @P2 AND load_id <> @P3;");
        assert!(ranges_statement(READ_RANGES, &t("cdc_copy", "w]")).is_err());
    }
}
