// Least-privilege role assignments (built-in role definition ids, see
// https://learn.microsoft.com/azure/role-based-access-control/built-in-roles).
//
// App identity (user-assigned):
// - Storage Blob Data Owner on the account: what the Functions host needs for identity-based
//   AzureWebJobsStorage (it creates its containers and takes blob leases for the timer's
//   singleton lock and status; Flex also reads the deployment package with it).
// - Storage Blob Data Contributor on the `raw` container only: the handler's own data path.
//   Today the Owner grant above already covers it (same account); this grant states the intent
//   and keeps working if `raw` moves to a separate account or the host grant is narrowed.
// - Storage Queue Data Contributor on each fan-out queue only (`queueNames`, created by
//   storage.bicep), not on the account. The queue bindings page lists Storage Queue Data Reader
//   + Message Processor for a trigger and Storage Queue Data Contributor (or Message Sender)
//   for an output binding; CopyTable is both (trigger, `poison` output), IncrementalCopy writes
//   `cdc-copy-tables`, FullLoad writes `cdc-copy-ranges` and LoadRange reads it and re-sends an
//   unfinished range to it, and the host moves failed messages to the `-poison` queue, creating it
//   if missing: Contributor is the one built-in role that covers all of it.
//   https://learn.microsoft.com/azure/azure-functions/functions-bindings-storage-queue#grant-permission-to-the-identity
// - Storage Table Data Contributor: only when asked for (tables are used by Durable).
// - Monitoring Metrics Publisher on Application Insights: Entra-authenticated telemetry.
// Deploying user (principalId, optional): Storage Blob Data Contributor on the account, to list
// and read the CSV blobs with `az storage blob list --auth-mode login` / Storage Explorer.

param storageAccountName string
param dataContainerName string
param applicationInsightsName string
param appPrincipalId string

@description('Object id of the deploying user or CI principal; empty to skip its assignment.')
param userPrincipalId string = ''

@allowed([
  'User'
  'ServicePrincipal'
  'Group'
])
param userPrincipalType string = 'User'

@description('Queues the app reads and writes (trigger queues and their -poison queues).')
param queueNames array = []

param enableTable bool = false

var roles = {
  storageBlobDataOwner: 'b7e6dc6d-f1e8-4753-8033-0f276bb0955b'
  storageBlobDataContributor: 'ba92f5b4-2d11-453d-a403-e96b0029c9fe'
  storageQueueDataContributor: '974c5e8b-45b9-4653-ba55-5f855dd0fb88'
  storageTableDataContributor: '0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3'
  monitoringMetricsPublisher: '3913510d-42f4-4e42-8a64-420c390055eb'
}

resource storage 'Microsoft.Storage/storageAccounts@2023-05-01' existing = {
  name: storageAccountName

  resource blobService 'blobServices' existing = {
    name: 'default'

    resource dataContainer 'containers' existing = {
      name: dataContainerName
    }
  }
}

resource appInsights 'Microsoft.Insights/components@2020-02-02' existing = {
  name: applicationInsightsName
}

resource appBlobOwner 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(storage.id, appPrincipalId, roles.storageBlobDataOwner)
  scope: storage
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.storageBlobDataOwner)
    principalId: appPrincipalId
    principalType: 'ServicePrincipal'
  }
}

resource appRawContributor 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(storage::blobService::dataContainer.id, appPrincipalId, roles.storageBlobDataContributor)
  scope: storage::blobService::dataContainer
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.storageBlobDataContributor)
    principalId: appPrincipalId
    principalType: 'ServicePrincipal'
  }
}

resource queues 'Microsoft.Storage/storageAccounts/queueServices/queues@2023-05-01' existing = [for queueName in queueNames: {
  name: '${storageAccountName}/default/${queueName}'
}]

resource appQueueContributor 'Microsoft.Authorization/roleAssignments@2022-04-01' = [for (queueName, i) in queueNames: {
  name: guid(queues[i].id, appPrincipalId, roles.storageQueueDataContributor)
  scope: queues[i]
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.storageQueueDataContributor)
    principalId: appPrincipalId
    principalType: 'ServicePrincipal'
  }
}]

resource appTableContributor 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (enableTable) {
  name: guid(storage.id, appPrincipalId, roles.storageTableDataContributor)
  scope: storage
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.storageTableDataContributor)
    principalId: appPrincipalId
    principalType: 'ServicePrincipal'
  }
}

resource appMetricsPublisher 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(appInsights.id, appPrincipalId, roles.monitoringMetricsPublisher)
  scope: appInsights
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.monitoringMetricsPublisher)
    principalId: appPrincipalId
    principalType: 'ServicePrincipal'
  }
}

resource userBlobContributor 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (!empty(userPrincipalId)) {
  name: guid(storage.id, userPrincipalId, roles.storageBlobDataContributor)
  scope: storage
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.storageBlobDataContributor)
    principalId: userPrincipalId
    principalType: userPrincipalType
  }
}
