metadata description = 'The Event Grid system topic of the existing container registry and its subscription for image pushes, delivered to the app\'s Event Grid trigger function. Deployed into the registry\'s resource group by infra/registry.bicep.'

@description('Required. Name of the system topic. A registry can have only one system topic: if it already has one, give that one\'s name; this deployment then adds the app\'s identity to it and keeps the identities given in keptUserAssignedIdentityIds and keepSystemAssignedIdentity.')
param systemTopicName string

@description('Required. Name of the existing container registry (in this module\'s resource group).')
param registryName string

@description('Required. Azure region of the system topic; must be the registry\'s region.')
param location string

@description('Optional. Tags applied to the system topic.')
param tags object = {}

@description('Required. Resource id of the user-assigned identity that writes dead-lettered events.')
param identityId string

@description('Required. Every user-assigned identity the topic is to have, as its identity.userAssignedIdentities object ({ \'<resource id>\': {} }): the app\'s and those the topic already has that still exist. A deployment sets the topic\'s whole identity, so an identity left out is removed from it; infra/hooks/registry.py builds this from the topic as it is (no Bicep lambdas, which Checkov\'s parser cannot read).')
param topicUserAssignedIdentities object

@description('Required. Name of this environment\'s event subscription: one per environment, so two environments on one registry never re-point each other\'s.')
@minLength(3)
@maxLength(64)
param subscriptionName string

@description('Optional. Whether an existing system topic has a system-assigned identity to keep (the preprovision hook reads it from the topic).')
param keepSystemAssignedIdentity bool = false

@description('Optional. Create the event subscription. Event Grid checks that the target function exists, so this is false until the app\'s code has been deployed once (azure.yaml\'s postdeploy hook turns it on).')
param createSubscription bool = false

@description('Required. Resource id of the Function App.')
param functionAppId string

@description('Required. Name of the Event Grid trigger function in the app.')
param functionName string

@description('Required. Resource id of the Storage account that receives dead-lettered events.')
param deadLetterStorageAccountId string

@description('Required. Blob container that receives dead-lettered events.')
param deadLetterContainerName string

@description('Optional. Delivery attempts before an event is dead-lettered.')
@minValue(1)
@maxValue(30)
param maxDeliveryAttempts int = 30

@description('Optional. Minutes Event Grid keeps retrying an event before dead-lettering it.')
@minValue(1)
@maxValue(1440)
param eventTimeToLiveInMinutes int = 1440

resource registry 'Microsoft.ContainerRegistry/registries@2023-07-01' existing = {
  name: registryName
}

resource systemTopic 'Microsoft.EventGrid/systemTopics@2025-02-15' = {
  name: systemTopicName
  location: location
  tags: tags
  identity: {
    type: keepSystemAssignedIdentity ? 'SystemAssigned, UserAssigned' : 'UserAssigned'
    userAssignedIdentities: topicUserAssignedIdentities
  }
  properties: {
    source: registry.id
    topicType: 'Microsoft.ContainerRegistry.Registries'
  }
}

resource imagePushed 'Microsoft.EventGrid/systemTopics/eventSubscriptions@2025-02-15' = if (createSubscription) {
  parent: systemTopic
  name: subscriptionName
  properties: {
    eventDeliverySchema: 'EventGridSchema'
    filter: {
      includedEventTypes: [
        'Microsoft.ContainerRegistry.ImagePushed'
      ]
    }
    destination: {
      endpointType: 'AzureFunction'
      properties: {
        resourceId: '${functionAppId}/functions/${functionName}'
        maxEventsPerBatch: 1
        preferredBatchSizeInKilobytes: 64
      }
    }
    retryPolicy: {
      maxDeliveryAttempts: maxDeliveryAttempts
      eventTimeToLiveInMinutes: eventTimeToLiveInMinutes
    }
    deadLetterWithResourceIdentity: {
      identity: {
        type: 'UserAssigned'
        userAssignedIdentity: identityId
      }
      deadLetterDestination: {
        endpointType: 'StorageBlob'
        properties: {
          resourceId: deadLetterStorageAccountId
          blobContainerName: deadLetterContainerName
        }
      }
    }
  }
}

@description('Name of the system topic.')
output systemTopicName string = systemTopic.name

@description('Name of the event subscription, or an empty string while it is not created yet.')
output subscriptionName string = createSubscription ? imagePushed.name : ''
