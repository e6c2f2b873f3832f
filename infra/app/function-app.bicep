metadata description = 'The Flex Consumption plan and the Linux Python 3.11 Function App, running as a user-assigned identity with identity-based connections only.'

@description('Required. Name of the Function App (globally unique host name).')
param name string

@description('Required. Name of the Flex Consumption plan.')
param planName string

@description('Optional. Azure region of the plan and the app; must offer Flex Consumption.')
param location string = resourceGroup().location

@description('Optional. Tags applied to the plan and the app.')
param tags object = {}

@description('Required. Name of the azure.yaml service this app hosts (azd finds the app by this tag).')
param serviceName string

@description('Required. Resource id of the user-assigned identity the app runs as.')
param identityId string

@description('Required. Client id of that identity (for DefaultAzureCredential and the host\'s storage connection).')
param identityClientId string

@description('Required. Name of the app\'s Storage account.')
param storageAccountName string

@description('Required. Blob container Flex Consumption deploys the app package to.')
param deploymentContainerName string

@description('Required. Name of the Application Insights component.')
param applicationInsightsName string

@description('Required. Name of the Key Vault that holds the secret key.')
param keyVaultName string

@description('Required. Name of the secret holding BASETRIGGER_SECRET_KEY.')
param secretKeyName string

@description('Required. BASETRIGGER_TABLE_PREFIX: the prefix of every table and blob container name.')
param tablePrefix string

@description('Required. BASETRIGGER_BUILD_QUEUE: the queue build_worker reads.')
param buildQueueName string

@description('Required. BASETRIGGER_RUN_ID_PREFIX: the letters before each run number (da1, da2, ...).')
param runIdPrefix string

@description('Required. BASETRIGGER_BUILD_TIMEOUT: seconds a build may take.')
param buildTimeoutSeconds int

@description('Required. Login server of the container registry (BASETRIGGER_REGISTRY).')
param registryLoginServer string

@description('Required. Subscription id of the container registry.')
param registrySubscriptionId string

@description('Required. Resource group of the container registry.')
param registryResourceGroupName string

@description('Required. Name of the container registry.')
param registryName string

@description('Optional. Most instances Flex Consumption may scale the app out to.')
@minValue(1)
@maxValue(1000)
param maximumInstanceCount int = 40

@description('Optional. Memory of each instance, in MB.')
@allowed([
  512
  2048
  4096
])
param instanceMemoryMB int = 2048

@description('Optional. BASETRIGGER_WATCH: registries to poll for base pushes they do not notify (docs/contract.md, Polling); empty: none. Empty leaves it unset.')
param watch string = ''

@description('Optional. BASETRIGGER_GIT_POLL: git hosts whose repositories are polled for commits (docs/api.md, Timers and source triggers); empty: none.')
param gitPoll string = ''

@description('Optional. BASETRIGGER_POLL_INTERVAL: seconds between polls; empty: the code\'s default (300). Empty leaves it unset.')
param pollInterval string = ''

@description('Optional. BASETRIGGER_SETTLE_SECONDS: seconds a moving base must be still before its one wave starts, then registry=seconds pairs (docs/api.md, Settle windows); empty: 0, dispatched at once. Empty leaves it unset.')
param settleSeconds string = ''

@description('Optional. BASETRIGGER_POLL_CONCURRENCY: manifest reads a poll makes at once; empty: the code\'s default. Empty leaves it unset.')
param pollConcurrency string = ''

@description('Optional. BASETRIGGER_MAX_RUNNING: most runs building at once; empty: the code\'s default. Empty leaves it unset.')
param maxRunning string = ''

@description('Optional. BASETRIGGER_WAVE_MAX_RUNNING: most runs of one wave building at once; empty: the code\'s default. Empty leaves it unset.')
param waveMaxRunning string = ''

@description('Optional. BASETRIGGER_WAVE_BREAKER_FAILURES: failures that hold a wave; empty: the code\'s default. Empty leaves it unset.')
param waveBreakerFailures string = ''

@description('Optional. BASETRIGGER_WAVE_BREAKER_SHARE: share of failed runs (0 to 1) that holds a wave; empty: the code\'s default. Empty leaves it unset.')
param waveBreakerShare string = ''

@description('Optional. BASETRIGGER_CONTEXT_MAX_UNPACKED_MB: MiB an uploaded context may unpack to; empty: the code\'s default. Empty leaves it unset.')
param contextMaxUnpackedMb string = ''

@description('Optional. BASETRIGGER_CONTEXT_MAX_FILES: files an uploaded context may hold; empty: the code\'s default. Empty leaves it unset.')
param contextMaxFiles string = ''

@description('Optional. BASETRIGGER_ACR_AUDIENCE: token audience for reading ACR manifests (sovereign clouds); empty: the public cloud\'s. Empty leaves it unset.')
param acrAudience string = ''

@description('Optional. Set BASETRIGGER_HARBOR_AUTH as a Key Vault reference to the secret basetrigger-harbor-auth (the Harbor webhook\'s Authorization value); store that secret first. False leaves the setting empty, and the webhook then accepts nothing.')
param harborAuthInKeyVault bool = false

@description('Optional. Set BASETRIGGER_GITHUB_WEBHOOK_SECRET as a Key Vault reference to the secret basetrigger-github-webhook-secret (the GitHub webhook\'s secret); store that secret first. False leaves the setting empty, and the webhook then accepts nothing.')
param githubWebhookSecretInKeyVault bool = false

@description('Optional. Set BASETRIGGER_GITLAB_WEBHOOK_TOKEN as a Key Vault reference to the secret basetrigger-gitlab-webhook-token (the GitLab webhook\'s secret token, for source triggers); store that secret first. False leaves the setting empty, and the route then accepts nothing.')
param gitlabWebhookTokenInKeyVault bool = false

@description('Optional. Endpoint of the Event Grid custom topic the app publishes run events to (infra/app/run-events.bicep); empty publishes none.')
param runEventsTopicEndpoint string = ''

resource storage 'Microsoft.Storage/storageAccounts@2023-05-01' existing = {
  name: storageAccountName
}

resource applicationInsights 'Microsoft.Insights/components@2020-02-02' existing = {
  name: applicationInsightsName
}

resource plan 'Microsoft.Web/serverfarms@2024-04-01' = {
  name: planName
  location: location
  tags: tags
  kind: 'functionapp'
  sku: {
    tier: 'FlexConsumption'
    name: 'FC1'
  }
  properties: {
    reserved: true // Linux
  }
}

resource functionApp 'Microsoft.Web/sites@2024-04-01' = {
  name: name
  location: location
  tags: union(tags, { 'azd-service-name': serviceName })
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
    keyVaultReferenceIdentity: identityId
    siteConfig: {
      minTlsVersion: '1.2'
      ftpsState: 'Disabled'
      http20Enabled: true // Checkov CKV_AZURE_18/67; HTTP/1.1 clients (registries' webhooks) still work
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
        maximumInstanceCount: maximumInstanceCount
        instanceMemoryMB: instanceMemoryMB
      }
      runtime: {
        name: 'python'
        version: '3.11'
      }
    }
  }
}

// Every setting the code reads (shared/config.py APP_SETTINGS) but the local stack's own, plus the
// two the host reads for Application Insights. This resource replaces the whole collection on every
// provision, so a setting added in the portal is lost: each one the code reads is a parameter here
// (main.bicep, azd environment values in main.parameters.json); an empty value means the code's default. tests/unit/test_infra.py compares this block with the
// code. Flex Consumption takes the runtime from functionAppConfig: no FUNCTIONS_WORKER_RUNTIME.
resource appSettings 'Microsoft.Web/sites/config@2024-04-01' = {
  parent: functionApp
  name: 'appsettings'
  properties: {
    AzureWebJobsStorage__credential: 'managedidentity'
    AzureWebJobsStorage__clientId: identityClientId
    AzureWebJobsStorage__blobServiceUri: storage.properties.primaryEndpoints.blob
    AzureWebJobsStorage__queueServiceUri: storage.properties.primaryEndpoints.queue
    AzureWebJobsStorage__tableServiceUri: storage.properties.primaryEndpoints.table
    AZURE_CLIENT_ID: identityClientId
    APPLICATIONINSIGHTS_CONNECTION_STRING: applicationInsights.properties.ConnectionString
    APPLICATIONINSIGHTS_AUTHENTICATION_STRING: 'ClientId=${identityClientId};Authorization=AAD'
    BASETRIGGER_TABLE_PREFIX: tablePrefix
    BASETRIGGER_BUILD_QUEUE: buildQueueName
    BASETRIGGER_RUN_ID_PREFIX: runIdPrefix
    BASETRIGGER_BUILDER: 'acr'
    BASETRIGGER_BUILD_TIMEOUT: string(buildTimeoutSeconds)
    BASETRIGGER_REGISTRY: registryLoginServer
    BASETRIGGER_SECRET_KEY: '@Microsoft.KeyVault(VaultName=${keyVaultName};SecretName=${secretKeyName})'
    BASETRIGGER_ACR_SUBSCRIPTION_ID: registrySubscriptionId
    BASETRIGGER_ACR_RESOURCE_GROUP: registryResourceGroupName
    BASETRIGGER_ACR_NAME: registryName
    BASETRIGGER_WATCH: watch
    BASETRIGGER_GIT_POLL: gitPoll
    BASETRIGGER_POLL_INTERVAL: pollInterval
    BASETRIGGER_SETTLE_SECONDS: settleSeconds
    BASETRIGGER_POLL_CONCURRENCY: pollConcurrency
    BASETRIGGER_MAX_RUNNING: maxRunning
    BASETRIGGER_WAVE_MAX_RUNNING: waveMaxRunning
    BASETRIGGER_WAVE_BREAKER_FAILURES: waveBreakerFailures
    BASETRIGGER_WAVE_BREAKER_SHARE: waveBreakerShare
    BASETRIGGER_CONTEXT_MAX_UNPACKED_MB: contextMaxUnpackedMb
    BASETRIGGER_CONTEXT_MAX_FILES: contextMaxFiles
    BASETRIGGER_ACR_AUDIENCE: acrAudience
    BASETRIGGER_HARBOR_AUTH: harborAuthInKeyVault ? '@Microsoft.KeyVault(VaultName=${keyVaultName};SecretName=basetrigger-harbor-auth)' : ''
    BASETRIGGER_GITHUB_WEBHOOK_SECRET: githubWebhookSecretInKeyVault ? '@Microsoft.KeyVault(VaultName=${keyVaultName};SecretName=basetrigger-github-webhook-secret)' : ''
    BASETRIGGER_GITLAB_WEBHOOK_TOKEN: gitlabWebhookTokenInKeyVault ? '@Microsoft.KeyVault(VaultName=${keyVaultName};SecretName=basetrigger-gitlab-webhook-token)' : ''
    BASETRIGGER_RUN_EVENTS_TOPIC: runEventsTopicEndpoint
  }
}

@description('Name of the Function App.')
output name string = functionApp.name

@description('Resource id of the Function App.')
output id string = functionApp.id

@description('HTTPS base URL of the Function App.')
output uri string = 'https://${functionApp.properties.defaultHostName}'
