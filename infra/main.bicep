targetScope = 'resourceGroup'

metadata description = 'basetrigger in Azure: a Flex Consumption Python Function App that rebuilds images when their base images are pushed to an existing Azure Container Registry. See docs/deploy.md.'

// ---------------------------------------------------------------------------------------------
// Parameters (docs/deploy.md explains each; infra/main.parameters.json maps them for azd)
// ---------------------------------------------------------------------------------------------

@description('Required. Name of the azd environment; resource names are derived from it and it is tagged on every resource.')
@minLength(1)
@maxLength(64)
param environmentName string

@description('Optional. Azure region of the app\'s resources; it must offer Flex Consumption. Defaults to the resource group\'s region.')
@metadata({
  azd: {
    type: 'location'
  }
})
param location string = resourceGroup().location

@description('Required. Name of the existing Azure Container Registry whose pushes trigger rebuilds and which runs the builds.')
@minLength(5)
@maxLength(50)
param registryName string

@description('Required. Resource group of that registry, in this subscription. It must not be this deployment\'s resource group: `azd down` deletes that group, and a registry in it with it. This template only names the registry: what the app needs in the registry\'s group (its roles, the Event Grid topic and subscription) is deployed separately by infra/registry.bicep, which azd never tears down.')
@minLength(1)
param registryResourceGroupName string

@description('Required. Login server of that registry (BASETRIGGER_REGISTRY), e.g. contosoacr.azurecr.io; the preprovision hook reads it with `az acr show`.')
@minLength(1)
param registryLoginServer string

@description('Optional. BASETRIGGER_SECRET_KEY to store in Key Vault: one or more Fernet keys (44 characters each, URL-safe base64 of 32 random bytes), separated by commas; the first encrypts secret build args and git tokens at rest, all decrypt. Empty keeps the secret the vault already holds: the preprovision hook passes a key only while the vault has none, so a provision never replaces the key that sealed the stored secrets.')
@secure()
param secretKey string = ''

@description('Optional. Most instances Flex Consumption may scale the app out to.')
@minValue(1)
@maxValue(1000)
param maximumInstanceCount int = 40

@description('Optional. Memory of each Flex Consumption instance, in MB.')
@allowed([
  512
  2048
  4096
])
param instanceMemoryMB int = 2048

@description('Optional. Seconds an ACR build run may take (ACR accepts 300 to 28800). The build worker follows the run within one invocation: with more than host.json\'s functionTimeout minus 10 minutes, raise functionTimeout too.')
@minValue(300)
@maxValue(28800)
param buildTimeoutSeconds int = 2700

@description('Optional. BASETRIGGER_WATCH: registries to poll for base pushes they do not notify (docs/contract.md, Polling); empty: none.')
param watch string = ''

@description('Optional. BASETRIGGER_GIT_POLL: git hosts whose repositories send no webhooks, polled with git ls-remote for the commit trigger (host, *.domain or *, comma-separated); empty: none.')
param gitPoll string = ''

@description('Optional. BASETRIGGER_POLL_INTERVAL: seconds between polls; empty: the code\'s default (300).')
param pollInterval string = ''

@description('Optional. BASETRIGGER_SETTLE_SECONDS: seconds a moving base must be still before its one wave starts, then registry=seconds pairs, e.g. 0,docker.io=900; empty: 0, dispatched at once.')
param settleSeconds string = ''

@description('Optional. BASETRIGGER_POLL_CONCURRENCY: manifest reads a poll makes at once; empty: the code\'s default.')
param pollConcurrency string = ''

@description('Optional. BASETRIGGER_MAX_RUNNING: most runs building at once; empty: the code\'s default.')
param maxRunning string = ''

@description('Optional. BASETRIGGER_WAVE_MAX_RUNNING: most runs of one wave building at once; empty: the code\'s default.')
param waveMaxRunning string = ''

@description('Optional. BASETRIGGER_WAVE_BREAKER_FAILURES: failures that hold a wave; empty: the code\'s default.')
param waveBreakerFailures string = ''

@description('Optional. BASETRIGGER_WAVE_BREAKER_SHARE: share of failed runs (0 to 1) that holds a wave; empty: the code\'s default.')
param waveBreakerShare string = ''

@description('Optional. BASETRIGGER_CONTEXT_MAX_UNPACKED_MB: MiB an uploaded context may unpack to; empty: the code\'s default.')
param contextMaxUnpackedMb string = ''

@description('Optional. BASETRIGGER_CONTEXT_MAX_FILES: files an uploaded context may hold; empty: the code\'s default.')
param contextMaxFiles string = ''

@description('Optional. BASETRIGGER_ACR_AUDIENCE: token audience for reading ACR manifests (sovereign clouds); empty: the public cloud\'s.')
param acrAudience string = ''

@description('Optional. Whether BASETRIGGER_HARBOR_AUTH (the Harbor webhook\'s Authorization value) is set, as a Key Vault reference to the secret basetrigger-harbor-auth in this environment\'s vault; store the secret there first (docs/deploy.md).')
param harborAuthInKeyVault bool = false

@description('Optional. Whether BASETRIGGER_GITHUB_WEBHOOK_SECRET (the GitHub webhook\'s secret) is set, as a Key Vault reference to the secret basetrigger-github-webhook-secret in this environment\'s vault; store the secret there first (docs/deploy.md).')
param githubWebhookSecretInKeyVault bool = false

@description('Optional. Whether BASETRIGGER_GITLAB_WEBHOOK_TOKEN (the GitLab webhook\'s secret token, source triggers) is set, as a Key Vault reference to the secret basetrigger-gitlab-webhook-token in this environment\'s vault; store the secret there first.')
param gitlabWebhookTokenInKeyVault bool = false

// ---------------------------------------------------------------------------------------------
// Names
// ---------------------------------------------------------------------------------------------

var resourceToken = toLower(uniqueString(resourceGroup().id, environmentName, location))
var tags = {
  'azd-env-name': environmentName
}
var serviceName = 'app' // the service in azure.yaml
var functionAppName = 'func-basetrigger-${resourceToken}'
var secretKeyName = 'basetrigger-secret-key'

// The names the code uses (docs/contract.md, shared/config.py defaults). Each is set below as the
// app setting the code reads, so the Bicep and the code cannot drift apart silently:
// tests/unit/test_infra.py loads shared.config with these values and compares.
var tablePrefix = 'bt'
var buildQueueName = 'build-runs'
var runIdPrefix = 'da'
var deadLetterContainerName = 'eventgrid-deadletter'
var deploymentContainerName = 'app-package-${take(functionAppName, 32)}-${take(resourceToken, 7)}'

var tableNames = [
  '${tablePrefix}tasks'
  '${tablePrefix}dependencies'
  '${tablePrefix}runs'
  '${tablePrefix}decisions'
  '${tablePrefix}counters'
  '${tablePrefix}bases'
  '${tablePrefix}waves'
  '${tablePrefix}slots'
  '${tablePrefix}timers'
  '${tablePrefix}notifications'
  '${tablePrefix}githeads'
]
var queueNames = [
  buildQueueName
  '${buildQueueName}-poison'
]
var containerNames = [
  '${tablePrefix}-run-logs'
  '${tablePrefix}-build-contexts'
  '${tablePrefix}-run-backlog'
  deadLetterContainerName
  deploymentContainerName
]

// ---------------------------------------------------------------------------------------------
// Resources
// ---------------------------------------------------------------------------------------------

// The one identity of the app: the host's storage connection, the code's DefaultAzureCredential,
// Key Vault references, ACR runs, and Event Grid's dead-lettering all use it.
resource identity 'Microsoft.ManagedIdentity/userAssignedIdentities@2023-01-31' = {
  name: 'id-basetrigger-${resourceToken}'
  location: location
  tags: tags
}

module storage 'app/storage.bicep' = {
  name: 'storage'
  params: {
    name: 'st${resourceToken}'
    location: location
    tags: tags
    tableNames: tableNames
    queueNames: queueNames
    containerNames: containerNames
  }
}

module monitoring 'app/monitoring.bicep' = {
  name: 'monitoring'
  params: {
    logAnalyticsName: 'log-${resourceToken}'
    applicationInsightsName: 'appi-${resourceToken}'
    location: location
    tags: tags
  }
}

module keyVault 'app/keyvault.bicep' = {
  name: 'keyvault'
  params: {
    name: 'kv-${resourceToken}'
    location: location
    tags: tags
    secretName: secretKeyName
    secretValue: secretKey
    principalId: identity.properties.principalId
  }
}

module rbac 'app/rbac.bicep' = {
  name: 'rbac'
  params: {
    storageAccountName: storage.outputs.name
    applicationInsightsName: monitoring.outputs.applicationInsightsName
    principalId: identity.properties.principalId
  }
}

// Run events (started, ended, held) for other automation to subscribe to.
module runEvents 'app/run-events.bicep' = {
  name: 'run-events'
  params: {
    name: 'evgt-basetrigger-${resourceToken}'
    location: location
    tags: tags
    principalId: identity.properties.principalId
  }
}

module functionApp 'app/function-app.bicep' = {
  name: 'function-app'
  params: {
    name: functionAppName
    planName: 'plan-basetrigger-${resourceToken}'
    location: location
    tags: tags
    serviceName: serviceName
    identityId: identity.id
    identityClientId: identity.properties.clientId
    storageAccountName: storage.outputs.name
    deploymentContainerName: deploymentContainerName
    applicationInsightsName: monitoring.outputs.applicationInsightsName
    keyVaultName: keyVault.outputs.name
    secretKeyName: secretKeyName
    tablePrefix: tablePrefix
    buildQueueName: buildQueueName
    runIdPrefix: runIdPrefix
    buildTimeoutSeconds: buildTimeoutSeconds
    registryLoginServer: registryLoginServer
    registrySubscriptionId: subscription().subscriptionId
    registryResourceGroupName: registryResourceGroupName
    registryName: registryName
    maximumInstanceCount: maximumInstanceCount
    instanceMemoryMB: instanceMemoryMB
    watch: watch
    gitPoll: gitPoll
    pollInterval: pollInterval
    settleSeconds: settleSeconds
    pollConcurrency: pollConcurrency
    maxRunning: maxRunning
    waveMaxRunning: waveMaxRunning
    waveBreakerFailures: waveBreakerFailures
    waveBreakerShare: waveBreakerShare
    contextMaxUnpackedMb: contextMaxUnpackedMb
    contextMaxFiles: contextMaxFiles
    acrAudience: acrAudience
    harborAuthInKeyVault: harborAuthInKeyVault
    githubWebhookSecretInKeyVault: githubWebhookSecretInKeyVault
    gitlabWebhookTokenInKeyVault: gitlabWebhookTokenInKeyVault
    runEventsTopicEndpoint: runEvents.outputs.endpoint
  }
  // The host starts as soon as the app exists: give it its storage roles first.
  dependsOn: [
    rbac
  ]
}

// ---------------------------------------------------------------------------------------------
// Outputs: names, ids and URLs only (azd stores them in the environment)
// ---------------------------------------------------------------------------------------------

@description('Region of the app\'s resources.')
output AZURE_LOCATION string = location

@description('Resource group of the app\'s resources.')
output AZURE_RESOURCE_GROUP string = resourceGroup().name

@description('Name of the Function App.')
output AZURE_FUNCTION_APP_NAME string = functionApp.outputs.name

@description('Base URL of the Function App.')
output SERVICE_APP_URI string = functionApp.outputs.uri

@description('Webhook ingress for other registries\' notifications; add ?code=<function key>.')
output DISTRIBUTION_WEBHOOK_URL string = '${functionApp.outputs.uri}/api/hooks/distribution'

@description('Name of the app\'s Storage account.')
output AZURE_STORAGE_ACCOUNT_NAME string = storage.outputs.name

@description('Name of the Key Vault holding the secret key.')
output AZURE_KEY_VAULT_NAME string = keyVault.outputs.name

@description('Client id of the app\'s user-assigned identity (an identifier, not a secret).')
output AZURE_USER_ASSIGNED_IDENTITY_CLIENT_ID string = identity.properties.clientId

@description('Resource id of the app\'s user-assigned identity (infra/registry.bicep gives it to the system topic for dead-lettering).')
output AZURE_USER_ASSIGNED_IDENTITY_ID string = identity.id

@description('Principal id of the app\'s user-assigned identity (infra/registry.bicep grants it its roles on the registry).')
output AZURE_USER_ASSIGNED_IDENTITY_PRINCIPAL_ID string = identity.properties.principalId

@description('Resource id of the Function App (the Event Grid subscription\'s destination).')
output AZURE_FUNCTION_APP_ID string = functionApp.outputs.id

@description('Resource id of the Storage account (Event Grid dead-letters into it).')
output AZURE_STORAGE_ACCOUNT_ID string = storage.outputs.id

@description('Blob container Event Grid dead-letters into.')
output EVENTGRID_DEADLETTER_CONTAINER string = deadLetterContainerName

@description('Resource id of the Event Grid custom topic of run events (subscribe to it for run started/ended/held).')
output RUN_EVENTS_TOPIC_ID string = runEvents.outputs.id
