// Flex Consumption (FC1, Linux) plan and the function app running the Rust custom handler.
//
// Flex specifics that differ from the classic Consumption plan:
// - The runtime is declared in `functionAppConfig.runtime` ({name: 'custom', version: '1.0'}
//   for a custom handler), NOT with FUNCTIONS_WORKER_RUNTIME / FUNCTIONS_EXTENSION_VERSION app
//   settings, which Flex rejects.
// - The code package lives in a blob container (`functionAppConfig.deployment.storage`), read
//   with the user-assigned identity; `azd deploy` uploads it there.
// - Memory per instance and the instance cap are `scaleAndConcurrency` settings.

param planName string
param appName string
param location string
param tags object = {}

@description('Tags for the site only: azd finds the service to deploy to by `azd-service-name`.')
param serviceTags object = {}

param identityId string
param identityClientId string

param storageAccountName string
param deploymentContainerName string
param applicationInsightsName string

@allowed([
  512
  2048
  4096
])
param instanceMemoryMB int = 2048

@minValue(1)
@maxValue(1000)
param maximumInstanceCount int = 40

@description('Extra app settings (name -> value); the CDC_* settings come in here.')
param appSettings object = {}

resource storage 'Microsoft.Storage/storageAccounts@2023-05-01' existing = {
  name: storageAccountName
}

resource appInsights 'Microsoft.Insights/components@2020-02-02' existing = {
  name: applicationInsightsName
}

resource plan 'Microsoft.Web/serverfarms@2024-04-01' = {
  name: planName
  location: location
  tags: tags
  kind: 'functionapp'
  sku: {
    name: 'FC1'
    tier: 'FlexConsumption'
  }
  properties: {
    reserved: true
  }
}

// Host storage through the managed identity: no connection string, no account key.
var hostSettings = {
  AzureWebJobsStorage__accountName: storage.name
  AzureWebJobsStorage__credential: 'managedidentity'
  AzureWebJobsStorage__clientId: identityClientId
  // The queue triggers and outputs (CopyTable, IncrementalCopy's fan-out) on the same account,
  // through the same identity.
  AzureWebJobsStorage__queueServiceUri: 'https://${storage.name}.queue.${environment().suffixes.storage}'
  // Picks the user-assigned identity for azure_identity in the handler (SQL token, blob token).
  AZURE_CLIENT_ID: identityClientId
  APPLICATIONINSIGHTS_CONNECTION_STRING: appInsights.properties.ConnectionString
  APPLICATIONINSIGHTS_AUTHENTICATION_STRING: 'ClientId=${identityClientId};Authorization=AAD'
}

var allSettings = union(hostSettings, appSettings)

resource app 'Microsoft.Web/sites@2024-04-01' = {
  name: appName
  location: location
  tags: union(tags, serviceTags)
  kind: 'functionapp,linux'
  identity: {
    type: 'UserAssigned'
    userAssignedIdentities: {
      '${identityId}': {}
    }
  }
  properties: {
    serverFarmId: plan.id
    httpsOnly: true
    siteConfig: {
      minTlsVersion: '1.2'
      appSettings: [for setting in items(allSettings): {
        name: setting.key
        value: string(setting.value)
      }]
    }
    functionAppConfig: {
      deployment: {
        storage: {
          type: 'blobContainer'
          value: '${storage.properties.primaryEndpoints.blob}${deploymentContainerName}'
          authentication: {
            type: 'UserAssignedIdentity'
            userAssignedIdentityResourceId: identityId
          }
        }
      }
      scaleAndConcurrency: {
        instanceMemoryMB: instanceMemoryMB
        maximumInstanceCount: maximumInstanceCount
      }
      runtime: {
        name: 'custom'
        version: '1.0'
      }
    }
  }

  // Publishing with a user name and password (FTP, Kudu basic auth) is off; azd deploys with
  // Entra ID.
  resource ftp 'basicPublishingCredentialsPolicies' = {
    name: 'ftp'
    properties: {
      allow: false
    }
  }

  resource scm 'basicPublishingCredentialsPolicies' = {
    name: 'scm'
    properties: {
      allow: false
    }
  }
}

output name string = app.name
output defaultHostName string = app.properties.defaultHostName
