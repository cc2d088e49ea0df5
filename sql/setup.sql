/*
  cdc-copy setup: the sample table of the Data Factory tutorial, CDC on it, and the watermark
  table the copier keeps its progress in. Safe to run again: every step checks first.

  Run it in the SOURCE database (not master) as a member of db_owner (sysadmin on SQL Server to
  enable CDC on the database), e.g.
      sqlcmd -S localhost -U sa -P '<password>' -d cdcdb -i sql/setup.sql
  SQL Server needs SQL Server Agent running for the capture and cleanup jobs
  (in Docker: MSSQL_AGENT_ENABLED=true). Azure SQL Database runs its own scheduler.

  The watermark table is [cdc_copy].[watermark], the default of CDC_WATERMARK_TABLE. If you set
  another name, replace cdc_copy / watermark below (or create the same columns under that name).

  Statements and links: docs/sql.md.
*/
SET NOCOUNT ON;
SET XACT_ABORT ON;

/* 1. The sample source table (the tutorial's "customers"). Skip this part for real tables. */
IF OBJECT_ID(N'dbo.customers', N'U') IS NULL
BEGIN
    CREATE TABLE dbo.customers
    (
        customer_id int          NOT NULL,
        first_name  varchar(50)  NULL,
        last_name   varchar(50)  NULL,
        email       varchar(100) NULL,
        city        nvarchar(50) NULL,
        CONSTRAINT PK_customers PRIMARY KEY CLUSTERED (customer_id)
    );
END;

/* 2. CDC on the database and on the table, with net changes (needs the primary key).
      https://learn.microsoft.com/sql/relational-databases/system-stored-procedures/sys-sp-cdc-enable-db-transact-sql
      https://learn.microsoft.com/sql/relational-databases/system-stored-procedures/sys-sp-cdc-enable-table-transact-sql */
IF NOT EXISTS (SELECT 1 FROM sys.databases WHERE database_id = DB_ID() AND is_cdc_enabled = 1)
    EXEC sys.sp_cdc_enable_db;

IF NOT EXISTS (SELECT 1 FROM sys.tables WHERE object_id = OBJECT_ID(N'dbo.customers') AND is_tracked_by_cdc = 1)
    EXEC sys.sp_cdc_enable_table
        @source_schema        = N'dbo',
        @source_name          = N'customers',
        @role_name            = NULL,      -- or a gating role the copier's user is a member of
        @supports_net_changes = 1;         -- required: the copier reads net changes

/* 3. The watermark table: one row per copied table.
      last_lsn / last_window_end   every change at or below last_lsn is in a committed blob (or
                                   the full load); the next window starts at last_window_end (UTC).
      pending_*                    the window a run committed to before writing its blob; a later
                                   run finishes exactly that window (same name, same bytes) first.
      full_load_*                  a full load in progress: its id (blob folder), baseline LSN,
                                   parts committed, JSON of the last key copied, rows so far.
      version                      optimistic concurrency: every update is
                                   "... WHERE version = <version read>" and bumps it.
      All times are UTC (datetime2(7)); LSNs are binary(10) like CDC's own. */
IF SCHEMA_ID(N'cdc_copy') IS NULL
    EXEC (N'CREATE SCHEMA cdc_copy AUTHORIZATION dbo;');

IF OBJECT_ID(N'cdc_copy.watermark', N'U') IS NULL
BEGIN
    CREATE TABLE cdc_copy.watermark
    (
        schema_name            sysname        NOT NULL,
        table_name             sysname        NOT NULL,
        capture_instance       sysname        NOT NULL,
        last_lsn               binary(10)     NOT NULL,
        last_window_end        datetime2(7)   NOT NULL,
        pending_to_lsn         binary(10)     NULL,
        pending_window_end     datetime2(7)   NULL,
        pending_blob           nvarchar(1024) NULL,
        full_load_id           varchar(32)    NULL,
        full_load_baseline_lsn binary(10)     NULL,
        full_load_parts        int            NULL,
        full_load_last_key     nvarchar(max)  NULL,
        full_load_rows         bigint         NULL,
        rows_copied            bigint         NOT NULL CONSTRAINT DF_watermark_rows DEFAULT (0),
        bytes_copied           bigint         NOT NULL CONSTRAINT DF_watermark_bytes DEFAULT (0),
        version                bigint         NOT NULL CONSTRAINT DF_watermark_version DEFAULT (0),
        updated_at             datetime2(7)   NOT NULL CONSTRAINT DF_watermark_updated DEFAULT (SYSUTCDATETIME()),
        CONSTRAINT PK_watermark PRIMARY KEY CLUSTERED (schema_name, table_name),
        CONSTRAINT CK_watermark_pending CHECK (
            (pending_to_lsn IS NULL AND pending_window_end IS NULL AND pending_blob IS NULL)
         OR (pending_to_lsn IS NOT NULL AND pending_window_end IS NOT NULL AND pending_blob IS NOT NULL)),
        CONSTRAINT CK_watermark_full_load CHECK (full_load_id IS NULL OR full_load_baseline_lsn IS NOT NULL)
    );
END;

/* 3b. Why a table's last copy failed (issue 12), for `handler status` and the poison queue.
       Set when a table's copy fails, cleared by the next watermark write that succeeds.
       Added to an existing table too (a watermark table created by an earlier version of this
       script): run this script again after upgrading; every step checks first.
       https://learn.microsoft.com/sql/t-sql/statements/alter-table-transact-sql
       https://learn.microsoft.com/sql/t-sql/functions/col-length-transact-sql */
IF COL_LENGTH(N'cdc_copy.watermark', N'last_error') IS NULL
    ALTER TABLE cdc_copy.watermark ADD last_error nvarchar(4000) NULL;
IF COL_LENGTH(N'cdc_copy.watermark', N'last_error_at') IS NULL
    ALTER TABLE cdc_copy.watermark ADD last_error_at datetime2(7) NULL;

/* 3b. The range table of parallel full loads: the watermark table's name + _range, one row
      per key range of a split load (CDC_FULL_LOAD_RANGES > 1). A range is
      after_key < key <= upto_key (JSON key tuples, NULL = unbounded); parts_done, last_key,
      rows_done and bytes_done are its checkpoint, done says it is finished, version is the
      same optimistic concurrency as the watermark's. A load that is not split has no rows
      here (its checkpoint is the watermark row). Created here for existing installations
      too: running this script again is the migration. */
IF OBJECT_ID(N'cdc_copy.watermark_range', N'U') IS NULL
BEGIN
    CREATE TABLE cdc_copy.watermark_range
    (
        schema_name sysname       NOT NULL,
        table_name  sysname       NOT NULL,
        load_id     varchar(32)   NOT NULL,
        range_no    int           NOT NULL,
        after_key   nvarchar(max) NULL,
        upto_key    nvarchar(max) NULL,
        parts_done  int           NOT NULL CONSTRAINT DF_watermark_range_parts DEFAULT (0),
        last_key    nvarchar(max) NULL,
        rows_done   bigint        NOT NULL CONSTRAINT DF_watermark_range_rows DEFAULT (0),
        bytes_done  bigint        NOT NULL CONSTRAINT DF_watermark_range_bytes DEFAULT (0),
        done        bit           NOT NULL CONSTRAINT DF_watermark_range_done DEFAULT (0),
        version     bigint        NOT NULL CONSTRAINT DF_watermark_range_version DEFAULT (0),
        updated_at  datetime2(7)  NOT NULL CONSTRAINT DF_watermark_range_updated DEFAULT (SYSUTCDATETIME()),
        CONSTRAINT PK_watermark_range PRIMARY KEY CLUSTERED (schema_name, table_name, load_id, range_no)
    );
END;

/* 4. Permissions for the copier's database user: not here. sql/grant-managed-identity.sql
      grants only what the copier needs for the tables in CDC_TABLES (their captured columns,
      their capture instances' functions and gating roles, two cdc metadata tables, the
      watermark table). Not SELECT on the cdc schema: that exposes every change table. For a
      SQL login, create its user first, then run the grant script with that user:
        CREATE USER cdc_copier FOR LOGIN cdc_copier; */
