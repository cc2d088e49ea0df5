// The user-assigned managed identity the function app runs as.
//
// User-assigned (not system-assigned) so that its name and client id exist before the app does:
// the role assignments, the host-storage app settings and the DBA's `CREATE USER ... FROM
// EXTERNAL PROVIDER` all need them, and they survive re-creating the app.

param name string
param location string
param tags object = {}

resource identity 'Microsoft.ManagedIdentity/userAssignedIdentities@2023-01-31' = {
  name: name
  location: location
  tags: tags
}

output id string = identity.id
output name string = identity.name
output clientId string = identity.properties.clientId
output principalId string = identity.properties.principalId
