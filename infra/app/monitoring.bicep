// Log Analytics workspace + workspace-based Application Insights.
//
// Local (instrumentation-key) authentication is disabled: the function app sends telemetry with
// its managed identity (APPLICATIONINSIGHTS_AUTHENTICATION_STRING) and needs the Monitoring
// Metrics Publisher role on the component (granted in rbac.bicep).

param logAnalyticsName string
param applicationInsightsName string
param location string
param tags object = {}

@description('Days Log Analytics keeps data. 30 is the free-retention floor of the PerGB2018 tier.')
param retentionInDays int = 30

resource logAnalytics 'Microsoft.OperationalInsights/workspaces@2023-09-01' = {
  name: logAnalyticsName
  location: location
  tags: tags
  properties: {
    sku: {
      name: 'PerGB2018'
    }
    retentionInDays: retentionInDays
  }
}

resource appInsights 'Microsoft.Insights/components@2020-02-02' = {
  name: applicationInsightsName
  location: location
  tags: tags
  kind: 'web'
  properties: {
    Application_Type: 'web'
    WorkspaceResourceId: logAnalytics.id
    DisableLocalAuth: true
  }
}

output applicationInsightsName string = appInsights.name
// The connection string holds the ingestion endpoint and the instrumentation key, which is an
// identifier rather than a credential once local auth is disabled. It goes straight into an app
// setting and is not a deployment output.
output logAnalyticsName string = logAnalytics.name
