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

@description('Optional. Resource group of that registry, in this subscription. Empty means this deployment\'s resource group.')
param registryResourceGroupName string = ''

@description('Optional. Name of the registry\'s Event Grid system topic. Empty means a new one named after the registry. A registry has at most one system topic: if it already has one, give its name (the preprovision hook does).')
param systemTopicName string = ''

@description('Optional. User-assigned identities the registry\'s existing system topic already has (resource ids, comma-separated): kept, since a deployment sets the topic\'s whole identity. The preprovision hook reads them from the topic.')
param systemTopicUserAssignedIdentityIds string = ''

@description('Optional. Whether the registry\'s existing system topic has a system-assigned identity to keep (the preprovision hook reads it from the topic).')
param systemTopicSystemAssignedIdentity bool = false

@description('Optional. Create the Event Grid subscription to the eventgrid_image_pushed function. Leave false on the first deployment: Event Grid refuses a function that is not deployed yet (azure.yaml\'s postdeploy hook sets it to true).')
param createEventSubscription bool = false

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

@description('Optional. Event Grid delivery attempts before an event is dead-lettered.')
@minValue(1)
@maxValue(30)
param eventMaxDeliveryAttempts int = 30

@description('Optional. Minutes Event Grid keeps retrying an event before dead-lettering it.')
@minValue(1)
@maxValue(1440)
param eventTimeToLiveInMinutes int = 1440

// ---------------------------------------------------------------------------------------------
// Names
// ---------------------------------------------------------------------------------------------

var resourceToken = toLower(uniqueString(resourceGroup().id, environmentName, location))
var tags = {
  'azd-env-name': environmentName
}
var serviceName = 'app' // the service in azure.yaml
var functionAppName = 'func-basetrigger-${resourceToken}'
var registryGroupName = empty(registryResourceGroupName) ? resourceGroup().name : registryResourceGroupName
var topicName = empty(systemTopicName) ? 'evgt-${registryName}' : systemTopicName
var secretKeyName = 'basetrigger-secret-key'

// The names the code uses (docs/contract.md, shared/config.py defaults). Each is set below as the
// app setting the code reads, so the Bicep and the code cannot drift apart silently:
// tests/unit/test_infra.py loads shared.config with these values and compares.
var tablePrefix = 'bt'
var buildQueueName = 'build-runs'
var runIdPrefix = 'da'
var eventGridFunctionName = 'eventgrid_image_pushed'
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
]
var queueNames = [
  buildQueueName
  '${buildQueueName}-poison'
]
var containerNames = [
  '${tablePrefix}-run-logs'
  '${tablePrefix}-build-contexts'
  deadLetterContainerName
  deploymentContainerName
]

// ---------------------------------------------------------------------------------------------
// Resources
// ---------------------------------------------------------------------------------------------

resource registry 'Microsoft.ContainerRegistry/registries@2023-07-01' existing = {
  name: registryName
  scope: resourceGroup(registryGroupName)
}

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

module registryAccess 'app/registry-access.bicep' = {
  name: 'registry-access-${resourceToken}'
  scope: resourceGroup(registryGroupName)
  params: {
    registryName: registryName
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
    registryLoginServer: registry.properties.loginServer
    registrySubscriptionId: subscription().subscriptionId
    registryResourceGroupName: registryGroupName
    registryName: registryName
    maximumInstanceCount: maximumInstanceCount
    instanceMemoryMB: instanceMemoryMB
  }
  // The host starts as soon as the app exists: give it its storage roles first.
  dependsOn: [
    rbac
  ]
}

module eventGrid 'app/eventgrid.bicep' = {
  name: 'eventgrid-${resourceToken}'
  scope: resourceGroup(registryGroupName)
  params: {
    systemTopicName: topicName
    registryName: registryName
    location: registry.location
    tags: tags
    identityId: identity.id
    keptUserAssignedIdentityIds: systemTopicUserAssignedIdentityIds
    keepSystemAssignedIdentity: systemTopicSystemAssignedIdentity
    createSubscription: createEventSubscription
    functionAppId: functionApp.outputs.id
    functionName: eventGridFunctionName
    deadLetterStorageAccountId: storage.outputs.id
    deadLetterContainerName: deadLetterContainerName
    maxDeliveryAttempts: eventMaxDeliveryAttempts
    eventTimeToLiveInMinutes: eventTimeToLiveInMinutes
  }
  // Dead-lettering writes blobs as the identity: its Storage role must exist first.
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

@description('Name of the registry\'s Event Grid system topic.')
output EVENTGRID_SYSTEM_TOPIC_NAME string = eventGrid.outputs.systemTopicName

@description('Whether the Event Grid subscription exists.')
output EVENTGRID_SUBSCRIPTION_CREATED bool = createEventSubscription
