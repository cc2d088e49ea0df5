// Optional Azure SQL logical server + database (createSqlServer = true in main.bicep).
//
// - Entra-only authentication: no SQL login, no password anywhere. The deploying principal is
//   the Entra admin; it runs sql/setup.sql and sql/grant-managed-identity.sql (the DBA step),
//   which creates the app identity's database user. Bicep cannot create database users.
// - CDC on Azure SQL Database needs S3 or above in the DTU model, or any vCore tier. Serverless
//   (GP_S_Gen5) works, but a PAUSED database captures nothing, and the capture scheduler runs
//   only while the database is online: auto-pause is disabled by default (autoPauseDelay -1),
//   which also means the minimum vCores are billed around the clock.
// - "Allow Azure services" firewall rule (0.0.0.0): the Flex app has no fixed outbound IP
//   without VNet integration. It admits traffic from any Azure tenant's services, so the
//   database still relies on Entra authentication; use VNet integration + a private endpoint to
//   close it (docs/deploy.md).

param serverName string
param databaseName string
param location string
param tags object = {}

@description('Object id of the Entra admin (the deploying user or group).')
param adminPrincipalId string

@description('Display name of the Entra admin, shown in the portal; the object id decides who it is.')
param adminLogin string

@description('User, Group or Application (a service principal).')
param adminPrincipalType string = 'User'

@description('Database SKU name: GP_S_Gen5 (serverless), GP_Gen5, or a DTU SKU of S3 or above.')
param skuName string = 'GP_S_Gen5'

@description('vCores (serverless: the maximum).')
param skuCapacity int = 1

@description('Serverless minimum vCores, as a string ("0.5").')
param minCapacity string = '0.5'

@description('Serverless auto-pause delay in minutes; -1 disables auto-pause (needed for CDC capture).')
param autoPauseDelay int = -1

var isServerless = startsWith(skuName, 'GP_S_')
var isVCore = startsWith(skuName, 'GP_') || startsWith(skuName, 'BC_') || startsWith(skuName, 'HS_')

resource server 'Microsoft.Sql/servers@2021-11-01' = {
  name: serverName
  location: location
  tags: tags
  properties: {
    minimalTlsVersion: '1.2'
    publicNetworkAccess: 'Enabled'
    administrators: {
      administratorType: 'ActiveDirectory'
      azureADOnlyAuthentication: true
      login: adminLogin
      sid: adminPrincipalId
      principalType: adminPrincipalType
      tenantId: tenant().tenantId
    }
  }

  resource allowAzureServices 'firewallRules' = {
    name: 'AllowAllWindowsAzureIps'
    properties: {
      startIpAddress: '0.0.0.0'
      endIpAddress: '0.0.0.0'
    }
  }
}

resource database 'Microsoft.Sql/servers/databases@2021-11-01' = {
  parent: server
  name: databaseName
  location: location
  tags: tags
  sku: isVCore
    ? {
        name: skuName
        tier: startsWith(skuName, 'BC_') ? 'BusinessCritical' : (startsWith(skuName, 'HS_') ? 'Hyperscale' : 'GeneralPurpose')
        family: 'Gen5'
        capacity: skuCapacity
      }
    : {
        name: skuName
      }
  properties: isServerless
    ? {
        autoPauseDelay: autoPauseDelay
        minCapacity: json(minCapacity)
      }
    : {}
}

output serverName string = server.name
output fullyQualifiedDomainName string = server.properties.fullyQualifiedDomainName
output databaseName string = database.name
