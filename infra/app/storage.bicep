// One storage account for four jobs: the Functions host's own storage (AzureWebJobsStorage:
// timer status and singleton locks under `azure-webjobs-hosts`/`azure-webjobs-secrets`), the
// Flex Consumption deployment package container, the `raw` container the CSV blobs land in,
// and the fan-out queues (CDC_FANOUT=queue): each trigger queue with its `-poison` queue,
// created here so that the app's queue role can be scoped to exactly them (rbac.bicep).
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

@description('Queues of the queue-triggered functions, each trigger queue followed by its `-poison` queue (where the host moves a message after host.json maxDequeueCount tries).')
param queueNames array = [
  'cdc-copy-tables'
  'cdc-copy-tables-poison'
  'cdc-copy-ranges'
  'cdc-copy-ranges-poison'
]

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

  resource queueService 'queueServices' = {
    name: 'default'
  }
}

resource queues 'Microsoft.Storage/storageAccounts/queueServices/queues@2023-05-01' = [for queueName in queueNames: {
  parent: storage::queueService
  name: queueName
}]

output name string = storage.name
output id string = storage.id
// primaryEndpoints.blob ends with '/'; the handler wants the endpoint without it.
output blobEndpoint string = storage.properties.primaryEndpoints.blob
output deploymentContainerName string = storage::blobService::deploymentContainer.name
output dataContainerName string = storage::blobService::dataContainer.name
output queueNames array = [for (queueName, i) in queueNames: queues[i].name]
