// One storage account for three jobs: the Functions host's own storage (AzureWebJobsStorage:
// timer status and singleton locks under `azure-webjobs-hosts`/`azure-webjobs-secrets`), the
// Flex Consumption deployment package container, and the `raw` container the CSV blobs land in.
//
// Shared-key access is off, so every caller (the app's managed identity, the deploying user)
// uses Entra ID and needs a data-plane role (rbac.bicep). No container is public.

param name string
param location string
param tags object = {}

@description('Container for the zipped app package (Flex Consumption one-deploy).')
param deploymentContainerName string

@description('Container the CSV blobs are written to (CDC_CONTAINER).')
param dataContainerName string = 'raw'

resource storage 'Microsoft.Storage/storageAccounts@2023-05-01' = {
  name: name
  location: location
  tags: tags
  kind: 'StorageV2'
  sku: {
    name: 'Standard_LRS'
  }
  properties: {
    accessTier: 'Hot'
    allowBlobPublicAccess: false
    allowSharedKeyAccess: false
    defaultToOAuthAuthentication: true
    minimumTlsVersion: 'TLS1_2'
    supportsHttpsTrafficOnly: true
    publicNetworkAccess: 'Enabled'
    networkAcls: {
      defaultAction: 'Allow'
      bypass: 'AzureServices'
    }
  }

  resource blobService 'blobServices' = {
    name: 'default'

    resource deploymentContainer 'containers' = {
      name: deploymentContainerName
      properties: {
        publicAccess: 'None'
      }
    }

    resource dataContainer 'containers' = {
      name: dataContainerName
      properties: {
        publicAccess: 'None'
      }
    }
  }
}

output name string = storage.name
output id string = storage.id
// primaryEndpoints.blob ends with '/'; the handler wants the endpoint without it.
output blobEndpoint string = storage.properties.primaryEndpoints.blob
output deploymentContainerName string = storage::blobService::deploymentContainer.name
output dataContainerName string = storage::blobService::dataContainer.name
