/*
  cdc-copy: grant the copier's database user what its statements need for the configured
  tables, and nothing else. Run it once per database after sql/setup.sql, and again whenever
  CDC_TABLES or a table's capture instances change (it is idempotent and prints every change
  it makes). Run it in the APPLICATION database (not master) as a member of db_owner; for an
  Entra identity, connected WITH ENTRA ID (Azure SQL Database, Managed Instance, SQL Server
  2022 with Entra authentication), e.g.

    sqlcmd -S "$SQL_SERVER_FQDN" -d "$SQL_DATABASE_NAME" --authentication-method ActiveDirectoryDefault -b \
      -v IDENTITY_NAME="$AZURE_USER_ASSIGNED_IDENTITY_NAME" CDC_TABLES="${CDC_TABLES:-dbo.customers}" \
         CDC_WATERMARK_TABLE="${CDC_WATERMARK_TABLE:-cdc_copy.watermark}" \
      -i sql/grant-managed-identity.sql

  (go-sqlcmd syntax; with the ODBC sqlcmd use -G. Values come from `azd env get-values`.)
  In the portal's query editor, replace the three sqlcmd inputs below by hand.

  Who the principal is:
  - Entra identity (the function app's managed identity): if no database user of that name
    exists, step 1 creates it with CREATE USER ... FROM EXTERNAL PROVIDER.
  - SQL login (SQL Server, Docker, a CDC_SQL_CONNECTION_STRING with User Id=...): create the
    database user for the login first, then run this script with IDENTITY_NAME = that user:
        CREATE USER [cdc_copier] FOR LOGIN [cdc_copier];
  https://learn.microsoft.com/sql/t-sql/statements/create-user-transact-sql

  What the copier's statements (src/sqlserver/sql.rs) read, and what covers each:
  | Object                                      | Covered by                                            |
  |---------------------------------------------|-------------------------------------------------------|
  | cdc.fn_cdc_get_net_changes_<ci>             | SELECT on every captured column of the source table,  |
  | (only an instance with supports_net_changes |   membership in <ci>'s gating role if it has one, and |
  |  = 1 has one; tables without a key do not)  |   SELECT on the function itself (steps 3 and 4)       |
  | cdc.fn_cdc_get_all_changes_<ci>             | the same, for every instance (step 4): tables without |
  | (every instance has one)                    |   a key are read from it                              |
  | sys.fn_cdc_get_min_lsn                      | the same column SELECT and gating role (0x00... else) |
  | sys.fn_cdc_get_max_lsn                      | public: no grant                                      |
  | sys.fn_cdc_map_time_to_lsn                  | public: no grant                                      |
  | sys.fn_cdc_map_lsn_to_time                  | public: no grant                                      |
  | cdc.change_tables, cdc.captured_columns     | SELECT on these tables only (step 5)                  |
  | cdc.ddl_history (optional: without it the   |   (cdc.ddl_history: the DDL warning; the statement    |
  |   DDL warning is silent, nothing fails)     |   reads it inside TRY/CATCH)                          |
  | sys.columns of cdc.<ci>_CT (the declared    | VIEW DEFINITION on each change table (step 4):        |
  |   types of the captured columns)            |   metadata only, its rows stay unreadable             |
  | sys.tables, sys.columns, sys.types,         | metadata visibility: rows of the configured tables    |
  | sys.indexes, sys.index_columns, OBJECT_ID   | are visible through the column SELECT (step 3);       |
  | sys.schemas                                 | sys.schemas and built-in types are visible to public; |
  |                                             | alias types of captured columns: VIEW DEFINITION on   |
  |                                             | the type (step 3)                                     |
  | the source table (full load, in key order)  | SELECT on its captured columns only (step 3)          |
  | the source table WITH (TABLOCK, HOLDLOCK)   | the same SELECT: table hints need ALTER only for      |
  |   (full load of a table without a key, in   |   KEEPIDENTITY, IGNORE_CONSTRAINTS, IGNORE_TRIGGERS;  |
  |   BEGIN TRANSACTION; SET XACT_ABORT)        |   BEGIN/COMMIT TRANSACTION and SET need no grant      |
  | the watermark table (CDC_WATERMARK_TABLE)   | SELECT, INSERT, UPDATE on that table only (step 6)    |
  | its range table (<watermark>_range, the     | SELECT, INSERT, UPDATE, DELETE on that table only     |
  |   key ranges of a split full load)          |   (step 6; DELETE drops the rows of finished loads)   |
  | sys.partitions (row count, split loads)     | metadata visibility: rows of the configured tables    |
  | TABLESAMPLE of the key (split loads)        |   through the column SELECT (step 3)                  |
  | sys.dm_cdc_log_scan_sessions (optional)     | VIEW DATABASE PERFORMANCE STATE (SQL Server 2022+,    |
  |                                             | Azure SQL), VIEW DATABASE STATE before (step 7)       |
  Every capture instance of a configured table is covered, also when CDC_TABLES pins one
  (table=capture_instance): during a switch to a second instance the copier reads the one its
  watermark names until the new one takes over, so both need the grants; rerun this script
  after sys.sp_cdc_enable_table creates the second instance, before the copier reaches it.
  Deliberately NOT granted: SELECT on the cdc schema (it covers every cdc.<ci>_CT change table,
  bypassing the column and gating-role checks), the gating roles of tables not configured,
  db_datareader, db_owner. Step 2 removes what earlier versions of this script granted.

  Sources (Permissions section of each):
  https://learn.microsoft.com/sql/relational-databases/system-functions/cdc-fn-cdc-get-net-changes-capture-instance-transact-sql
  https://learn.microsoft.com/sql/relational-databases/system-functions/cdc-fn-cdc-get-all-changes-capture-instance-transact-sql
  https://learn.microsoft.com/sql/relational-databases/system-tables/cdc-ddl-history-transact-sql
  https://learn.microsoft.com/sql/t-sql/queries/hints-transact-sql-table
  https://learn.microsoft.com/sql/relational-databases/system-functions/sys-fn-cdc-get-min-lsn-transact-sql
  https://learn.microsoft.com/sql/relational-databases/system-functions/sys-fn-cdc-get-max-lsn-transact-sql
  https://learn.microsoft.com/sql/relational-databases/system-functions/sys-fn-cdc-map-time-to-lsn-transact-sql
  https://learn.microsoft.com/sql/relational-databases/system-functions/sys-fn-cdc-map-lsn-to-time-transact-sql
  https://learn.microsoft.com/sql/relational-databases/system-tables/cdc-change-tables-transact-sql
  https://learn.microsoft.com/sql/relational-databases/system-tables/cdc-captured-columns-transact-sql
  https://learn.microsoft.com/sql/relational-databases/security/metadata-visibility-configuration
  https://learn.microsoft.com/sql/t-sql/statements/grant-object-permissions-transact-sql
  https://learn.microsoft.com/sql/relational-databases/system-dynamic-management-views/change-data-capture-sys-dm-cdc-log-scan-sessions
  https://learn.microsoft.com/sql/relational-databases/system-dynamic-management-views/system-dynamic-management-views
  https://learn.microsoft.com/sql/t-sql/statements/grant-database-permissions-transact-sql

  One batch, no GO: every name is read into a variable, checked, and spliced into dynamic SQL
  only through QUOTENAME. The sqlcmd variables below have no :setvar default on purpose (a
  :setvar in the script would override the command line); without them sqlcmd stops with
  "scripting variable not defined".
*/
SET NOCOUNT ON;
SET XACT_ABORT ON;

-- ---- Inputs ---------------------------------------------------------------------------------
-- The database user to grant to (an Entra identity's display name, or a SQL login's user).
DECLARE @principal sysname = N'$(IDENTITY_NAME)';
-- The CDC_TABLES setting as configured: `schema.table` or `schema.table=capture_instance`,
-- comma-separated.
DECLARE @tables_setting nvarchar(max) = N'$(CDC_TABLES)';
-- The CDC_WATERMARK_TABLE setting (`schema.table`; the product's default is cdc_copy.watermark).
DECLARE @watermark_setting nvarchar(300) = N'$(CDC_WATERMARK_TABLE)';
-- 1: also grant what the optional capture-progress signal reads (step 7); 0: leave it out.
-- Without it, an idle IncrementalCopy run cannot tell that capture has already passed the
-- trigger time and waits up to CDC_CAPTURE_WAIT_SECONDS instead; nothing is lost.
DECLARE @grant_capture_progress_state bit = 1;
-- ---- End of inputs --------------------------------------------------------------------------

DECLARE @grantee nvarchar(258) = QUOTENAME(@principal);
DECLARE @sql nvarchar(max), @msg nvarchar(2048), @name sysname, @object_id int;
DECLARE @unreplaced nchar(2) = NCHAR(36) + N'(';  -- an input left as it was in the file

-- 0. Check the inputs before changing anything.
IF @principal = N'' OR LEFT(@principal, 2) = @unreplaced OR @grantee IS NULL
    THROW 50000, N'grant: set IDENTITY_NAME to the database user of the copier (sqlcmd -v IDENTITY_NAME=...).', 1;
IF LEFT(LTRIM(@tables_setting), 2) = @unreplaced OR LTRIM(@tables_setting) = N''
    THROW 50000, N'grant: set CDC_TABLES to the copier''s CDC_TABLES setting, e.g. dbo.customers,dbo.orders.', 1;
IF LEFT(LTRIM(@watermark_setting), 2) = @unreplaced OR LTRIM(@watermark_setting) = N''
    THROW 50000, N'grant: set CDC_WATERMARK_TABLE to the copier''s CDC_WATERMARK_TABLE setting (default cdc_copy.watermark).', 1;
IF OBJECT_ID(N'cdc.change_tables') IS NULL
    THROW 50000, N'grant: CDC is not enabled in this database; run sql/setup.sql first.', 1;
IF EXISTS (SELECT 1 FROM sys.database_principals
           WHERE name = @principal AND type NOT IN ('S', 'U', 'G', 'E', 'X'))
BEGIN
    SET @msg = N'grant: ' + @grantee + N' exists but is not a user (a role?); give the copier''s user.';
    THROW 50000, @msg, 1;
END;

-- The configured tables, one row per CDC_TABLES entry.
DECLARE @config TABLE (
    ordinal int IDENTITY PRIMARY KEY,
    entry nvarchar(400) NOT NULL,
    schema_name sysname NULL,
    table_name sysname NULL,
    capture_instance sysname NULL,
    object_id int NULL);
DECLARE @rest nvarchar(max) = @tables_setting + N',', @comma int, @entry nvarchar(400);
WHILE @rest <> N''
BEGIN
    SET @comma = CHARINDEX(N',', @rest);
    SET @entry = LTRIM(RTRIM(LEFT(@rest, @comma - 1)));
    SET @rest = SUBSTRING(@rest, @comma + 1, LEN(@rest));
    IF @entry <> N''
        INSERT @config (entry) VALUES (@entry);
END;
UPDATE c
SET schema_name = NULLIF(LTRIM(RTRIM(LEFT(n.qualified, NULLIF(CHARINDEX(N'.', n.qualified), 0) - 1))), N''),
    table_name = NULLIF(LTRIM(RTRIM(SUBSTRING(n.qualified, NULLIF(CHARINDEX(N'.', n.qualified), 0) + 1, 400))), N''),
    capture_instance = NULLIF(LTRIM(RTRIM(n.instance)), N'')
FROM @config AS c
CROSS APPLY (SELECT CASE WHEN CHARINDEX(N'=', c.entry) > 0 THEN LEFT(c.entry, CHARINDEX(N'=', c.entry) - 1) ELSE c.entry END AS qualified,
                    CASE WHEN CHARINDEX(N'=', c.entry) > 0 THEN SUBSTRING(c.entry, CHARINDEX(N'=', c.entry) + 1, 400) END AS instance) AS n;
UPDATE @config SET object_id = OBJECT_ID(QUOTENAME(schema_name) + N'.' + QUOTENAME(table_name), N'U');

SELECT TOP (1) @entry = entry FROM @config
WHERE schema_name IS NULL OR table_name IS NULL OR CHARINDEX(N'.', table_name) > 0 OR object_id IS NULL
ORDER BY ordinal;
IF @@ROWCOUNT > 0
BEGIN
    SET @msg = N'grant: CDC_TABLES entry "' + @entry + N'" is not schema.table[=capture_instance] of a table in this database.';
    THROW 50000, @msg, 1;
END;

-- The capture instances the copier may read: every instance of a configured table (at most
-- two). A pinned instance (table=capture_instance) must be one of them; the other is still
-- read while the watermark names it (the switch from one instance to the next).
DECLARE @instances TABLE (
    capture_instance sysname PRIMARY KEY,
    object_id int NOT NULL,
    role_name sysname NULL,
    supports_net_changes bit NOT NULL);
INSERT @instances (capture_instance, object_id, role_name, supports_net_changes)
SELECT ct.capture_instance, ct.source_object_id, ct.role_name, ct.supports_net_changes
FROM cdc.change_tables AS ct
WHERE ct.source_object_id IN (SELECT c.object_id FROM @config AS c);

SELECT TOP (1) @entry = c.entry FROM @config AS c
WHERE NOT EXISTS (SELECT 1 FROM @instances AS i
                  WHERE i.object_id = c.object_id
                    AND (c.capture_instance IS NULL OR i.capture_instance = c.capture_instance))
ORDER BY c.ordinal;
IF @@ROWCOUNT > 0
BEGIN
    SET @msg = N'grant: CDC_TABLES entry "' + @entry + N'" has no such capture instance; enable CDC on the table (sql/setup.sql) or fix the name.';
    THROW 50000, @msg, 1;
END;
SELECT TOP (1) @name = i.role_name FROM @instances AS i
WHERE i.role_name IS NOT NULL AND DATABASE_PRINCIPAL_ID(i.role_name) IS NULL;
IF @@ROWCOUNT > 0
BEGIN
    SET @msg = N'grant: the gating role ' + QUOTENAME(@name) + N' of a configured capture instance no longer exists; recreate it (CREATE ROLE) first.';
    THROW 50000, @msg, 1;
END;

-- The watermark table.
DECLARE @watermark_schema sysname = NULLIF(LTRIM(RTRIM(LEFT(@watermark_setting, NULLIF(CHARINDEX(N'.', @watermark_setting), 0) - 1))), N'');
DECLARE @watermark_table sysname = NULLIF(LTRIM(RTRIM(SUBSTRING(@watermark_setting, NULLIF(CHARINDEX(N'.', @watermark_setting), 0) + 1, 300))), N'');
DECLARE @watermark nvarchar(600) = QUOTENAME(@watermark_schema) + N'.' + QUOTENAME(@watermark_table);
IF @watermark IS NULL OR OBJECT_ID(@watermark, N'U') IS NULL
BEGIN
    SET @msg = N'grant: the watermark table "' + @watermark_setting + N'" does not exist; run sql/setup.sql first.';
    THROW 50000, @msg, 1;
END;
-- Its range table (parallel full load): the same name with _range, in the same schema.
DECLARE @ranges nvarchar(600) = QUOTENAME(@watermark_schema) + N'.' + QUOTENAME(@watermark_table + N'_range');
IF OBJECT_ID(@ranges, N'U') IS NULL
BEGIN
    SET @msg = N'grant: the range table ' + @ranges + N' does not exist; run sql/setup.sql (again) first.';
    THROW 50000, @msg, 1;
END;

-- 1. The database user. FROM EXTERNAL PROVIDER exists where Entra authentication does; a SQL
--    login's user must exist already (see the top of this file).
IF DATABASE_PRINCIPAL_ID(@principal) IS NULL
BEGIN
    SET @sql = N'CREATE USER ' + @grantee + N' FROM EXTERNAL PROVIDER;';
    PRINT @sql;
    EXEC sys.sp_executesql @sql;
END;
DECLARE @principal_id int = DATABASE_PRINCIPAL_ID(@principal);

-- Steps 2-7 happen together or not at all.
BEGIN TRANSACTION;

-- 2. Remove what is broader than steps 3-7 grant (what earlier versions of this script gave):
--    schema-wide SELECT on cdc, schema-wide rights on the watermark's schema, table-wide SELECT
--    on a configured table (replaced by the captured columns), and gating roles of capture
--    instances that are not configured.
IF EXISTS (SELECT 1 FROM sys.database_permissions
           WHERE grantee_principal_id = @principal_id AND class = 3 AND major_id = SCHEMA_ID(N'cdc')
             AND permission_name = N'SELECT')
BEGIN
    SET @sql = N'REVOKE SELECT ON SCHEMA::[cdc] FROM ' + @grantee + N';';
    PRINT @sql;
    EXEC sys.sp_executesql @sql;
END;
IF EXISTS (SELECT 1 FROM sys.database_permissions
           WHERE grantee_principal_id = @principal_id AND class = 3 AND major_id = SCHEMA_ID(@watermark_schema)
             AND permission_name IN (N'SELECT', N'INSERT', N'UPDATE', N'DELETE'))
BEGIN
    SET @sql = N'REVOKE SELECT, INSERT, UPDATE, DELETE ON SCHEMA::' + QUOTENAME(@watermark_schema) + N' FROM ' + @grantee + N';';
    PRINT @sql;
    EXEC sys.sp_executesql @sql;
END;
DECLARE grants CURSOR LOCAL FAST_FORWARD FOR
    SELECT DISTINCT c.object_id FROM @config AS c
    JOIN sys.database_permissions AS p
      ON p.grantee_principal_id = @principal_id AND p.class = 1 AND p.major_id = c.object_id
     AND p.minor_id = 0 AND p.permission_name = N'SELECT';
OPEN grants;
FETCH NEXT FROM grants INTO @object_id;
WHILE @@FETCH_STATUS = 0
BEGIN
    -- Revoking the table-wide SELECT also drops column grants; step 3 grants those again.
    SET @sql = N'REVOKE SELECT ON OBJECT::' + QUOTENAME(OBJECT_SCHEMA_NAME(@object_id)) + N'.'
             + QUOTENAME(OBJECT_NAME(@object_id)) + N' FROM ' + @grantee + N';';
    PRINT @sql;
    EXEC sys.sp_executesql @sql;
    FETCH NEXT FROM grants INTO @object_id;
END;
CLOSE grants;
DEALLOCATE grants;
DECLARE roles CURSOR LOCAL FAST_FORWARD FOR
    SELECT DISTINCT ct.role_name FROM cdc.change_tables AS ct
    JOIN sys.database_role_members AS m
      ON m.role_principal_id = DATABASE_PRINCIPAL_ID(ct.role_name) AND m.member_principal_id = @principal_id
    WHERE ct.role_name IS NOT NULL
      AND ct.role_name NOT IN (SELECT i.role_name FROM @instances AS i WHERE i.role_name IS NOT NULL);
OPEN roles;
FETCH NEXT FROM roles INTO @name;
WHILE @@FETCH_STATUS = 0
BEGIN
    SET @sql = N'ALTER ROLE ' + QUOTENAME(@name) + N' DROP MEMBER ' + @grantee + N';';
    PRINT @sql;
    EXEC sys.sp_executesql @sql;
    FETCH NEXT FROM roles INTO @name;
END;
CLOSE roles;
DEALLOCATE roles;

-- 3. Each configured table: SELECT on the columns its capture instances capture, which is what
--    the change functions and fn_cdc_get_min_lsn check, what the full load reads (also the
--    locked scan of a table without a key: its TABLOCK, HOLDLOCK hints need no more), and what
--    makes the table's rows visible in the catalog views. Columns the instances do not capture
--    stay unreadable; a column an older instance captures but the table has since dropped
--    (the reason for a second instance) cannot be granted and is left out.
DECLARE @columns nvarchar(max);
DECLARE tables CURSOR LOCAL FAST_FORWARD FOR SELECT DISTINCT object_id FROM @config;
OPEN tables;
FETCH NEXT FROM tables INTO @object_id;
WHILE @@FETCH_STATUS = 0
BEGIN
    SELECT @columns = STRING_AGG(CONVERT(nvarchar(max), QUOTENAME(cols.column_name)), N', ')
                      WITHIN GROUP (ORDER BY cols.column_name)
    FROM (SELECT DISTINCT cc.column_name
          FROM cdc.captured_columns AS cc
          JOIN cdc.change_tables AS ct ON ct.object_id = cc.object_id
          JOIN @instances AS i ON i.capture_instance = ct.capture_instance
          JOIN sys.columns AS c ON c.object_id = i.object_id AND c.name = cc.column_name
          WHERE i.object_id = @object_id) AS cols;
    IF @columns IS NULL
    BEGIN
        SET @msg = N'grant: cdc.captured_columns lists no column for ' + QUOTENAME(OBJECT_SCHEMA_NAME(@object_id)) + N'.'
                 + QUOTENAME(OBJECT_NAME(@object_id)) + N'; is its capture instance intact?';
        THROW 50000, @msg, 1;
    END;
    SET @sql = N'GRANT SELECT ON OBJECT::' + QUOTENAME(OBJECT_SCHEMA_NAME(@object_id)) + N'.'
             + QUOTENAME(OBJECT_NAME(@object_id)) + N' (' + @columns + N') TO ' + @grantee + N';';
    PRINT @sql;
    EXEC sys.sp_executesql @sql;
    FETCH NEXT FROM tables INTO @object_id;
END;
CLOSE tables;
DEALLOCATE tables;
-- A captured column of an alias (user-defined) type: its row in sys.types is a securable of
-- its own, visible only with a permission on the type. VIEW DEFINITION shows the metadata and
-- nothing else.
DECLARE @type_schema sysname;
DECLARE types CURSOR LOCAL FAST_FORWARD FOR
    SELECT DISTINCT SCHEMA_NAME(t.schema_id), t.name
    FROM @instances AS i
    JOIN cdc.change_tables AS ct ON ct.capture_instance = i.capture_instance
    JOIN cdc.captured_columns AS cc ON cc.object_id = ct.object_id
    JOIN sys.columns AS c ON c.object_id = i.object_id AND c.name = cc.column_name
    JOIN sys.types AS t ON t.user_type_id = c.user_type_id
    WHERE t.is_user_defined = 1;
OPEN types;
FETCH NEXT FROM types INTO @type_schema, @name;
WHILE @@FETCH_STATUS = 0
BEGIN
    SET @sql = N'GRANT VIEW DEFINITION ON TYPE::' + QUOTENAME(@type_schema) + N'.' + QUOTENAME(@name)
             + N' TO ' + @grantee + N';';
    PRINT @sql;
    EXEC sys.sp_executesql @sql;
    FETCH NEXT FROM types INTO @type_schema, @name;
END;
CLOSE types;
DEALLOCATE types;

-- 4. Each capture instance of a configured table: its gating role (if sp_cdc_enable_table was
--    given a @role_name; note that @role_name = 'null', a STRING, creates a role literally
--    named null), its all-changes function (every instance has one) and its net-changes
--    function (only an instance enabled with @supports_net_changes = 1 has one). The functions
--    read cdc.<ci>_CT through ownership chaining; the change table itself stays unreadable.
DECLARE @role sysname, @net_changes sysname, @all_changes sysname, @change_table sysname;
DECLARE instances CURSOR LOCAL FAST_FORWARD FOR
    SELECT capture_instance, role_name, supports_net_changes FROM @instances;
DECLARE @supports_net_changes bit;
OPEN instances;
FETCH NEXT FROM instances INTO @name, @role, @supports_net_changes;
WHILE @@FETCH_STATUS = 0
BEGIN
    IF @role IS NOT NULL AND NOT EXISTS (
        SELECT 1 FROM sys.database_role_members
        WHERE role_principal_id = DATABASE_PRINCIPAL_ID(@role) AND member_principal_id = @principal_id)
    BEGIN
        SET @sql = N'ALTER ROLE ' + QUOTENAME(@role) + N' ADD MEMBER ' + @grantee + N';';
        PRINT @sql;
        EXEC sys.sp_executesql @sql;
    END;
    SET @all_changes = N'fn_cdc_get_all_changes_' + @name;
    IF OBJECT_ID(N'[cdc].' + QUOTENAME(@all_changes)) IS NULL
    BEGIN
        SET @msg = N'grant: capture instance ' + QUOTENAME(@name) + N' has no function cdc.' + QUOTENAME(@all_changes)
                 + N'; is the capture instance intact?';
        THROW 50000, @msg, 1;
    END;
    SET @sql = N'GRANT SELECT ON OBJECT::[cdc].' + QUOTENAME(@all_changes) + N' TO ' + @grantee + N';';
    PRINT @sql;
    EXEC sys.sp_executesql @sql;
    SET @net_changes = N'fn_cdc_get_net_changes_' + @name;
    IF OBJECT_ID(N'[cdc].' + QUOTENAME(@net_changes)) IS NOT NULL
    BEGIN
        SET @sql = N'GRANT SELECT ON OBJECT::[cdc].' + QUOTENAME(@net_changes) + N' TO ' + @grantee + N';';
        PRINT @sql;
        EXEC sys.sp_executesql @sql;
    END
    ELSE IF @supports_net_changes = 0
        PRINT N'note: capture instance ' + QUOTENAME(@name) + N' has no net changes (enabled without @supports_net_changes = 1, e.g. a table without a key); the copier reads its all changes.';
    -- The change table's column declarations (the types of the copied files): metadata only,
    -- its rows stay readable through the functions alone.
    SELECT @change_table = OBJECT_NAME(ct.object_id) FROM cdc.change_tables AS ct
    WHERE ct.capture_instance = @name;
    SET @sql = N'GRANT VIEW DEFINITION ON OBJECT::[cdc].' + QUOTENAME(@change_table) + N' TO ' + @grantee + N';';
    PRINT @sql;
    EXEC sys.sp_executesql @sql;
    FETCH NEXT FROM instances INTO @name, @role, @supports_net_changes;
END;
CLOSE instances;
DEALLOCATE instances;

-- 5. The CDC metadata tables the capture-instance lookup reads (not the cdc schema);
--    cdc.ddl_history feeds the warning about DDL that a second capture instance should follow.
SET @sql = N'GRANT SELECT ON OBJECT::[cdc].[change_tables] TO ' + @grantee + N';';
PRINT @sql;
EXEC sys.sp_executesql @sql;
SET @sql = N'GRANT SELECT ON OBJECT::[cdc].[captured_columns] TO ' + @grantee + N';';
PRINT @sql;
EXEC sys.sp_executesql @sql;
SET @sql = N'GRANT SELECT ON OBJECT::[cdc].[ddl_history] TO ' + @grantee + N';';
PRINT @sql;
EXEC sys.sp_executesql @sql;

-- 6. The watermark table: read, insert the row of a new table, update after each window.
--    No DELETE, no DDL.
SET @sql = N'GRANT SELECT, INSERT, UPDATE ON OBJECT::' + @watermark + N' TO ' + @grantee + N';';
PRINT @sql;
EXEC sys.sp_executesql @sql;
--    The range table: a split load's plan is inserted, its checkpoints updated, and the rows
--    of a table's older loads deleted when a load finishes. No DDL.
SET @sql = N'GRANT SELECT, INSERT, UPDATE, DELETE ON OBJECT::' + @ranges + N' TO ' + @grantee + N';';
PRINT @sql;
EXEC sys.sp_executesql @sql;

-- 7. Optional: sys.dm_cdc_log_scan_sessions, which tells an idle run that capture has already
--    scanned past the trigger time. Its page asks for VIEW DATABASE STATE; from SQL Server 2022
--    (and on Azure SQL) database-scoped DMVs take the narrower VIEW DATABASE PERFORMANCE STATE,
--    which this grants where the server knows it. (Azure SQL Database in an elastic pool may
--    still hide DMVs from database users; the copier then waits as without the grant.)
IF @grant_capture_progress_state = 1
BEGIN
    IF EXISTS (SELECT 1 FROM sys.fn_builtin_permissions(N'DATABASE')
               WHERE permission_name = N'VIEW DATABASE PERFORMANCE STATE')
        SET @sql = N'GRANT VIEW DATABASE PERFORMANCE STATE TO ' + @grantee + N';';
    ELSE
        SET @sql = N'GRANT VIEW DATABASE STATE TO ' + @grantee + N';';
    PRINT @sql;
    EXEC sys.sp_executesql @sql;
END;

COMMIT TRANSACTION;

-- Roles that grant far more than the above; this script leaves them alone but says so.
SELECT TOP (1) @name = r.name
FROM sys.database_role_members AS m
JOIN sys.database_principals AS r ON r.principal_id = m.role_principal_id
WHERE m.member_principal_id = @principal_id AND r.name IN (N'db_owner', N'db_datareader', N'db_datawriter');
IF @@ROWCOUNT > 0
    PRINT N'warning: ' + @grantee + N' is a member of ' + QUOTENAME(@name) + N', which grants more than the copier needs: ALTER ROLE '
        + QUOTENAME(@name) + N' DROP MEMBER ' + @grantee + N';';

-- What the user can do now: its permissions (columns named) and its role memberships.
SELECT dp.name AS principal, perm.permission_name, perm.state_desc, perm.class_desc,
       CASE perm.class
           WHEN 0 THEN N'(database)'
           WHEN 3 THEN SCHEMA_NAME(perm.major_id)
           WHEN 1 THEN OBJECT_SCHEMA_NAME(perm.major_id) + N'.' + OBJECT_NAME(perm.major_id)
                       + COALESCE(N'.' + COL_NAME(perm.major_id, NULLIF(perm.minor_id, 0)), N'')
       END AS securable
FROM sys.database_permissions AS perm
JOIN sys.database_principals AS dp ON dp.principal_id = perm.grantee_principal_id
WHERE dp.principal_id = @principal_id
ORDER BY securable, perm.permission_name;
SELECT r.name AS member_of
FROM sys.database_role_members AS m
JOIN sys.database_principals AS r ON r.principal_id = m.role_principal_id
WHERE m.member_principal_id = @principal_id
ORDER BY r.name;
