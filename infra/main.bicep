// cdc-copy: Azure resources for `azd up`.
//
// Creates (in rg-<environment>): a user-assigned managed identity, a storage account (host
// storage, deployment package, `raw` data container; shared keys off), Log Analytics +
// Application Insights (Entra-only ingestion), a Flex Consumption plan + function app running the
// Rust custom handler, least-privilege role assignments, and optionally an Azure SQL server and
// database with Entra-only authentication. Nothing here holds a key or a password: every hop
// authenticates with the managed identity. See docs/deploy.md.

targetScope = 'subscription'

@minLength(1)
@maxLength(64)
@description('azd environment name; names the resource group and seeds the resource token.')
param environmentName string

@minLength(1)
@description('Region for every resource. It must offer Flex Consumption (az functionapp list-flexconsumption-locations).')
@metadata({
  azd: {
    type: 'location'
  }
})
param location string

@description('Object id of the deploying user (azd sets AZURE_PRINCIPAL_ID). Gets blob read/write on the account and, when createSqlServer, becomes the SQL Entra admin. Empty to skip.')
param principalId string = ''

@allowed([
  'User'
  'ServicePrincipal'
  'Group'
])
@description('Kind of principalId: User for a person, ServicePrincipal for a CI identity.')
param principalType string = 'User'

// ---- function app sizing -------------------------------------------------------------------

@allowed([
  512
  2048
  4096
])
@description('Memory per Flex Consumption instance. The handler streams, so 2048 is plenty.')
param instanceMemoryMB int = 2048

@minValue(1)
@maxValue(1000)
@description('Upper bound of instances. The timer runs on one instance at a time anyway.')
param maximumInstanceCount int = 40

// ---- what to copy ----------------------------------------------------------------------------

@description('Six-field NCRONTAB schedule of IncrementalCopy (UTC): INCREMENTAL_COPY_SCHEDULE.')
param incrementalCopySchedule string = '0 */15 * * * *'

@description('Comma-separated tables, `schema.table` or `schema.table=capture_instance`: CDC_TABLES.')
param cdcTables string = 'dbo.customers'

@description('Blob path template of incremental blobs: CDC_PATH_TEMPLATE.')
param cdcPathTemplate string = '{schema}/{table}/incremental/{yyyy}/{MM}/{dd}/{yyyyMMddHHmmssfff}.csv'

@minValue(0)
@maxValue(1800)
@description('Seconds to wait for the capture process to pass the trigger time: CDC_CAPTURE_WAIT_SECONDS.')
param cdcCaptureWaitSeconds int = 120

@minValue(1)
@maxValue(60)
@description('Seconds between capture-progress polls while waiting: CDC_CAPTURE_POLL_SECONDS.')
param cdcCapturePollSeconds int = 5

@description('Watermark table, `schema.table`: CDC_WATERMARK_TABLE (created by sql/setup.sql).')
param cdcWatermarkTable string = 'cdc_copy.watermark'

@allowed([
  'all'
  'all with merge'
])
@allowed([
  'csv'
  'parquet'
])
@description('File format of every blob: CDC_FORMAT.')
param cdcFormat string = 'csv'

@description('Net-changes row filter: CDC_ROW_FILTER.')
param cdcRowFilter string = 'all'

@allowed([
  'all update old'
  'all'
])
@description('All-changes row filter, for tables without a key (or `:all` in CDC_TABLES): CDC_ALL_CHANGES_ROW_FILTER.')
param cdcAllChangesRowFilter string = 'all update old'

@minValue(1)
@maxValue(64)
@description('Tables copied in parallel per run: CDC_TABLE_CONCURRENCY.')
param cdcTableConcurrency int = 4

@minValue(1)
@maxValue(100)
@description('Block size of staged blob blocks in MiB (memory is at most this times blocks in flight + 1 times the table concurrency): CDC_BLOCK_SIZE_MIB.')
param cdcBlockSizeMib int = 4

@minValue(1)
@maxValue(16)
@description('Put Blocks each blob keeps in flight (memory is at most this plus one, times the block size, times the table concurrency): CDC_UPLOAD_BLOCKS_IN_FLIGHT.')
param cdcUploadBlocksInFlight int = 4

@minValue(1)
@maxValue(100000000)
@description('Rows per full-load part blob: CDC_FULL_LOAD_PART_ROWS.')
param cdcFullLoadPartRows int = 1000000

@minValue(1)
@maxValue(64)
@description('Most key ranges a keyed table\'s full load is split into (1: no split): CDC_FULL_LOAD_RANGES.')
param cdcFullLoadRanges int = 1

@minValue(1)
@maxValue(1000000000)
@description('Rows per range at least; smaller tables are one range: CDC_FULL_LOAD_RANGE_MIN_ROWS.')
param cdcFullLoadRangeMinRows int = 1000000

@minValue(1)
@maxValue(200)
@description('Seconds an HTTP FullLoad works before answering 202 (the front end cuts at ~230 s): CDC_FULL_LOAD_HTTP_BUDGET_SECONDS.')
param cdcFullLoadHttpBudgetSeconds int = 180

@minValue(1)
@maxValue(1500)
@description('Seconds one SQL Server round trip may wait for the next reply before the statement fails (stays inside the 30-minute function timeout): CDC_SQL_COMMAND_TIMEOUT_SECONDS.')
param cdcSqlCommandTimeoutSeconds int = 300

@allowed([
  'inline'
  'queue'
])
@description('Where the timer copies tables: `inline` in its own invocation, `queue` one cdc-copy-tables message per table for CopyTable on as many instances as the host scales to (docs/scale-out.md): CDC_FANOUT.')
param cdcFanout string = 'inline'

@minValue(1)
@maxValue(100)
@description('host.json extensions.queues.maxDequeueCount, repeated for the handler (keep them equal): CDC_QUEUE_MAX_DEQUEUE_COUNT.')
param cdcQueueMaxDequeueCount int = 5

// ---- SQL ---------------------------------------------------------------------------------------

@description('true: create an Azure SQL server + database (Entra-only). false: use existingSqlServerFqdn.')
param createSqlServer bool = false

@description('FQDN of an existing server (e.g. myserver.database.windows.net) when createSqlServer is false.')
param existingSqlServerFqdn string = ''

@description('Database holding the CDC-enabled tables and the watermark table: CDC_SQL_DATABASE.')
param sqlDatabaseName string = 'cdccopy'

@description('Display name of the SQL Entra admin (the principalId); only a label.')
param sqlAdminLogin string = 'cdc-copy-admin'

@description('Database SKU when createSqlServer: GP_S_Gen5 (serverless vCore), GP_Gen5, or DTU S3+ (CDC needs S3 or above).')
param sqlSkuName string = 'GP_S_Gen5'

@description('vCores (serverless: maximum) when createSqlServer.')
param sqlSkuCapacity int = 1

@description('Serverless auto-pause delay in minutes; -1 = never pause. A paused database captures no changes.')
param sqlAutoPauseDelay int = -1

// ---- storage options --------------------------------------------------------------------------

@description('Grant the app Storage Table Data Contributor (not needed for timer + HTTP triggers).')
param enableTable bool = false

// ------------------------------------------------------------------------------------------------

var resourceToken = toLower(uniqueString(subscription().id, environmentName, location))
var tags = {
  'azd-env-name': environmentName
}
var functionAppName = 'func-${resourceToken}'
var deploymentContainerName = 'app-package-${take(functionAppName, 32)}-${take(resourceToken, 7)}'
var dataContainerName = 'raw'
var storageAccountName = 'st${resourceToken}'
var sqlServerName = 'sql-${resourceToken}'
// Known before deployment, so the app setting does not depend on a conditional module's output.
var sqlServerFqdn = createSqlServer
  ? '${sqlServerName}${environment().suffixes.sqlServerHostname}'
  : existingSqlServerFqdn
// The handler wants the blob endpoint without a trailing slash (a trailing '/' breaks paths).
var storageBlobEndpoint = 'https://${storageAccountName}.blob.${environment().suffixes.storage}'

resource rg 'Microsoft.Resources/resourceGroups@2024-03-01' = {
  name: 'rg-${environmentName}'
  location: location
  tags: tags
}

module identity './app/identity.bicep' = {
  name: 'identity'
  scope: rg
  params: {
    name: 'id-${resourceToken}'
    location: location
    tags: tags
  }
}

module storage './app/storage.bicep' = {
  name: 'storage'
  scope: rg
  params: {
    name: storageAccountName
    location: location
    tags: tags
    deploymentContainerName: deploymentContainerName
    dataContainerName: dataContainerName
  }
}

module monitoring './app/monitoring.bicep' = {
  name: 'monitoring'
  scope: rg
  params: {
    logAnalyticsName: 'log-${resourceToken}'
    applicationInsightsName: 'appi-${resourceToken}'
    location: location
    tags: tags
  }
}

module sql './app/sql.bicep' = if (createSqlServer) {
  name: 'sql'
  scope: rg
  params: {
    serverName: sqlServerName
    databaseName: sqlDatabaseName
    location: location
    tags: tags
    adminPrincipalId: principalId
    adminLogin: sqlAdminLogin
    adminPrincipalType: principalType == 'ServicePrincipal' ? 'Application' : principalType
    skuName: sqlSkuName
    skuCapacity: sqlSkuCapacity
    autoPauseDelay: sqlAutoPauseDelay
  }
}

module rbac './app/rbac.bicep' = {
  name: 'rbac'
  scope: rg
  params: {
    storageAccountName: storage.outputs.name
    dataContainerName: storage.outputs.dataContainerName
    applicationInsightsName: monitoring.outputs.applicationInsightsName
    appPrincipalId: identity.outputs.principalId
    userPrincipalId: principalId
    userPrincipalType: principalType
    queueNames: storage.outputs.queueNames
    enableTable: enableTable
  }
}

module functionApp './app/function.bicep' = {
  name: 'function'
  scope: rg
  params: {
    planName: 'plan-${resourceToken}'
    appName: functionAppName
    location: location
    tags: tags
    serviceTags: {
      'azd-service-name': 'handler'
    }
    identityId: identity.outputs.id
    identityClientId: identity.outputs.clientId
    storageAccountName: storage.outputs.name
    deploymentContainerName: storage.outputs.deploymentContainerName
    applicationInsightsName: monitoring.outputs.applicationInsightsName
    instanceMemoryMB: instanceMemoryMB
    maximumInstanceCount: maximumInstanceCount
    // Every setting the handler reads in Azure (src/config.rs, docs/settings.md). Local-only
    // settings (connection strings, plaintext SQL, log format) are deliberately absent.
    appSettings: {
      INCREMENTAL_COPY_SCHEDULE: incrementalCopySchedule
      CDC_TABLES: cdcTables
      CDC_SQL_SERVER: sqlServerFqdn
      CDC_SQL_DATABASE: sqlDatabaseName
      CDC_STORAGE_ACCOUNT_URL: storageBlobEndpoint
      CDC_CONTAINER: dataContainerName
      CDC_PATH_TEMPLATE: cdcPathTemplate
      CDC_CAPTURE_WAIT_SECONDS: string(cdcCaptureWaitSeconds)
      CDC_CAPTURE_POLL_SECONDS: string(cdcCapturePollSeconds)
      CDC_WATERMARK_TABLE: cdcWatermarkTable
      CDC_FORMAT: cdcFormat
      CDC_ROW_FILTER: cdcRowFilter
      CDC_ALL_CHANGES_ROW_FILTER: cdcAllChangesRowFilter
      CDC_TABLE_CONCURRENCY: string(cdcTableConcurrency)
      CDC_BLOCK_SIZE_MIB: string(cdcBlockSizeMib)
      CDC_UPLOAD_BLOCKS_IN_FLIGHT: string(cdcUploadBlocksInFlight)
      CDC_FULL_LOAD_PART_ROWS: string(cdcFullLoadPartRows)
      CDC_FULL_LOAD_RANGES: string(cdcFullLoadRanges)
      CDC_FULL_LOAD_RANGE_MIN_ROWS: string(cdcFullLoadRangeMinRows)
      CDC_FULL_LOAD_HTTP_BUDGET_SECONDS: string(cdcFullLoadHttpBudgetSeconds)
      CDC_SQL_COMMAND_TIMEOUT_SECONDS: string(cdcSqlCommandTimeoutSeconds)
      CDC_FANOUT: cdcFanout
      CDC_QUEUE_MAX_DEQUEUE_COUNT: string(cdcQueueMaxDequeueCount)
    }
  }
  // The host must be able to read its storage and the package as soon as it starts.
  dependsOn: [
    rbac
  ]
}

output AZURE_LOCATION string = location
output AZURE_TENANT_ID string = tenant().tenantId
output AZURE_RESOURCE_GROUP string = rg.name
output AZURE_FUNCTION_APP_NAME string = functionApp.outputs.name
output AZURE_STORAGE_ACCOUNT_NAME string = storage.outputs.name
output AZURE_STORAGE_BLOB_ENDPOINT string = storageBlobEndpoint
output AZURE_USER_ASSIGNED_IDENTITY_CLIENT_ID string = identity.outputs.clientId
output AZURE_USER_ASSIGNED_IDENTITY_NAME string = identity.outputs.name
output SQL_SERVER_FQDN string = sqlServerFqdn
output SQL_DATABASE_NAME string = sqlDatabaseName
