targetScope = 'resourceGroup'

metadata description = 'What basetrigger needs in the registry\'s resource group: its identity\'s roles on the registry, the registry\'s Event Grid system topic and this environment\'s subscription. Deployed into that group by infra/hooks/registry.py (az deployment group create), never by azd: `azd down` deletes every resource group its own deployment touched, and the registry\'s group must not be one of them. See docs/deploy.md.'

@description('Required. Name of the azd environment; names this environment\'s event subscription and is tagged on the system topic.')
@minLength(1)
@maxLength(64)
param environmentName string

@description('Required. Name of the existing container registry (in this deployment\'s resource group).')
@minLength(5)
@maxLength(50)
param registryName string

@description('Required. Principal id of the app\'s user-assigned identity (main.bicep\'s AZURE_USER_ASSIGNED_IDENTITY_PRINCIPAL_ID).')
param principalId string

@description('Required. Resource id of the app\'s user-assigned identity (AZURE_USER_ASSIGNED_IDENTITY_ID): it dead-letters events.')
param identityId string

@description('Optional. Name of the registry\'s system topic. Empty means a new one named after the registry; a registry has at most one, and the hook gives the existing one\'s name.')
param systemTopicName string = ''

@description('Required. Every user-assigned identity the system topic is to have ({ \'<resource id>\': {} }): the app\'s plus those the topic already has that still exist (the hook reads them from the topic).')
param topicUserAssignedIdentities object

@description('Optional. Whether the existing system topic has a system-assigned identity to keep.')
param keepSystemAssignedIdentity bool = false

@description('Optional. Create this environment\'s event subscription. Event Grid refuses a function that is not deployed yet, so the hook passes true only after `azd deploy` (postdeploy).')
param createSubscription bool = false

@description('Required. Resource id of the Function App (AZURE_FUNCTION_APP_ID).')
param functionAppId string

@description('Required. Resource id of the app\'s Storage account (AZURE_STORAGE_ACCOUNT_ID): dead letters go there.')
param deadLetterStorageAccountId string

@description('Required. Blob container for dead letters (EVENTGRID_DEADLETTER_CONTAINER).')
param deadLetterContainerName string

@description('Optional. Event Grid delivery attempts before an event is dead-lettered.')
@minValue(1)
@maxValue(30)
param eventMaxDeliveryAttempts int = 30

@description('Optional. Minutes Event Grid keeps retrying an event before dead-lettering it.')
@minValue(1)
@maxValue(1440)
param eventTimeToLiveInMinutes int = 1440

var eventGridFunctionName = 'eventgrid_image_pushed'
var topicName = empty(systemTopicName) ? 'evgt-${registryName}' : systemTopicName
// One subscription per environment: a fixed name would let a second environment on the same
// registry silently re-point the first one's subscription at itself.
var subscriptionName = take('basetrigger-${environmentName}', 64)

resource registry 'Microsoft.ContainerRegistry/registries@2023-07-01' existing = {
  name: registryName
}

module registryAccess 'app/registry-access.bicep' = {
  name: 'basetrigger-registry-access-${uniqueString(principalId)}'
  params: {
    registryName: registryName
    principalId: principalId
  }
}

module eventGrid 'app/eventgrid.bicep' = {
  name: 'basetrigger-eventgrid-${uniqueString(principalId)}'
  params: {
    systemTopicName: topicName
    registryName: registryName
    location: registry.location
    identityId: identityId
    topicUserAssignedIdentities: topicUserAssignedIdentities
    keepSystemAssignedIdentity: keepSystemAssignedIdentity
    subscriptionName: subscriptionName
    createSubscription: createSubscription
    functionAppId: functionAppId
    functionName: eventGridFunctionName
    deadLetterStorageAccountId: deadLetterStorageAccountId
    deadLetterContainerName: deadLetterContainerName
    maxDeliveryAttempts: eventMaxDeliveryAttempts
    eventTimeToLiveInMinutes: eventTimeToLiveInMinutes
  }
}

@description('Name of the registry\'s Event Grid system topic.')
output EVENTGRID_SYSTEM_TOPIC_NAME string = eventGrid.outputs.systemTopicName

@description('Name of this environment\'s event subscription, or empty while it is not created.')
output EVENTGRID_SUBSCRIPTION_NAME string = eventGrid.outputs.subscriptionName
