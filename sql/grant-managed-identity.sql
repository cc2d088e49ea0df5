-- The DBA step after `azd up`: let the function app's user-assigned managed identity read CDC
-- and maintain the watermark table. Bicep cannot create database users, so a person (or a CI
-- principal) that is an Entra admin of the server runs this once per database, connected WITH
-- ENTRA ID to the application database (not master), e.g.
--
--   sqlcmd -S "$SQL_SERVER_FQDN" -d "$SQL_DATABASE_NAME" --authentication-method ActiveDirectoryDefault \
--     -v IDENTITY_NAME="$AZURE_USER_ASSIGNED_IDENTITY_NAME" -i sql/grant-managed-identity.sql
--
-- (go-sqlcmd syntax; with the ODBC sqlcmd use -G. Values come from `azd env get-values`.)
-- Or paste it into the portal's query editor and replace $(IDENTITY_NAME) by hand.
--
-- Prerequisite: sql/setup.sql (CDC enabled on the database and the tables, the cdc_copy schema
-- and the watermark table). In short, what it does for CDC:
--   EXEC sys.sp_cdc_enable_db;
--   EXEC sys.sp_cdc_enable_table @source_schema = N'dbo', @source_name = N'customers',
--        @role_name = NULL, @supports_net_changes = 1;
-- @supports_net_changes = 1 is required: the handler reads cdc.fn_cdc_get_net_changes_<ci>.
--
-- Least privilege: SELECT on the captured source tables and on the cdc schema (change tables,
-- cdc.lsn_time_mapping, cdc.change_tables, the cdc.fn_cdc_get_* functions), membership in the
-- capture instance's gating role if sp_cdc_enable_table was given a @role_name, and
-- SELECT/INSERT/UPDATE on the watermark schema. Not db_owner.

-- IDENTITY_NAME is a sqlcmd variable (-v IDENTITY_NAME=...): there is deliberately no :setvar
-- default here, because a :setvar in the script would override the command line. Without it,
-- sqlcmd stops with "'IDENTITY_NAME' scripting variable not defined".

-- 1. The database user for the managed identity (its display name = the identity's name).
IF NOT EXISTS (SELECT 1 FROM sys.database_principals WHERE name = N'$(IDENTITY_NAME)')
    CREATE USER [$(IDENTITY_NAME)] FROM EXTERNAL PROVIDER;
GO

-- 2. Read the CDC metadata and change functions. (Table-valued functions in the cdc schema are
--    covered by SELECT on the schema.)
GRANT SELECT ON SCHEMA::cdc TO [$(IDENTITY_NAME)];
GO

-- 3. Read the source tables (the full load reads them directly; CDC also checks SELECT on the
--    captured columns). One line per table in CDC_TABLES; or, more broadly:
--    ALTER ROLE db_datareader ADD MEMBER [$(IDENTITY_NAME)];
GRANT SELECT ON OBJECT::dbo.customers TO [$(IDENTITY_NAME)];
GO

-- 4. If a capture instance has a gating role (cdc.change_tables.role_name is not NULL), the
--    reader must be a member. This adds the identity to every gating role that exists. (The
--    seed tutorial's `@role_name = 'null'` is a STRING: it creates a gating role literally
--    named null, which this step also covers. Use @role_name = NULL for no gating role.)
DECLARE @role sysname, @sql nvarchar(max);
DECLARE roles CURSOR LOCAL FAST_FORWARD FOR
    SELECT DISTINCT ct.role_name
    FROM cdc.change_tables AS ct
    WHERE ct.role_name IS NOT NULL
      AND EXISTS (SELECT 1 FROM sys.database_principals AS p WHERE p.name = ct.role_name AND p.type = 'R');
OPEN roles;
FETCH NEXT FROM roles INTO @role;
WHILE @@FETCH_STATUS = 0
BEGIN
    SET @sql = N'ALTER ROLE ' + QUOTENAME(@role) + N' ADD MEMBER ' + QUOTENAME(N'$(IDENTITY_NAME)') + N';';
    EXEC sys.sp_executesql @sql;
    FETCH NEXT FROM roles INTO @role;
END;
CLOSE roles;
DEALLOCATE roles;
GO

-- 5. The watermark table (CDC_WATERMARK_TABLE, default cdc_copy.watermark): read, insert the
--    row of a new table, update after each window. No DELETE, no DDL.
GRANT SELECT, INSERT, UPDATE ON SCHEMA::cdc_copy TO [$(IDENTITY_NAME)];
GO

-- 6. The full load reads a consistent snapshot when the database allows snapshot isolation
--    (on by default in Azure SQL Database; on SQL Server a DBA may run
--    ALTER DATABASE CURRENT SET ALLOW_SNAPSHOT_ISOLATION ON). That needs no extra permission.

-- Check: what the identity can do.
SELECT dp.name AS principal, perm.permission_name, perm.state_desc,
       perm.class_desc,
       CASE perm.class_desc
           WHEN 'SCHEMA' THEN SCHEMA_NAME(perm.major_id)
           WHEN 'OBJECT_OR_COLUMN' THEN OBJECT_SCHEMA_NAME(perm.major_id) + N'.' + OBJECT_NAME(perm.major_id)
           ELSE N'(database)'
       END AS securable
FROM sys.database_permissions AS perm
JOIN sys.database_principals AS dp ON dp.principal_id = perm.grantee_principal_id
WHERE dp.name = N'$(IDENTITY_NAME)';
GO
