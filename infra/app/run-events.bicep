metadata description = 'The Event Grid custom topic the app publishes run events to (a run started, ended or was held), so other automation can subscribe; identity auth only, the app\'s identity may send.'

@description('Required. Name of the custom topic.')
param name string

@description('Optional. Azure region of the topic.')
param location string = resourceGroup().location

@description('Optional. Tags applied to the topic.')
param tags object = {}

@description('Required. Principal id of the app\'s user-assigned identity (granted EventGrid Data Sender on the topic).')
param principalId string

var eventGridDataSenderRoleId = 'd5a91429-5739-47e2-a06b-3470a27159e7' // EventGrid Data Sender

resource topic 'Microsoft.EventGrid/topics@2025-02-15' = {
  name: name
  location: location
  tags: tags
  properties: {
    inputSchema: 'EventGridSchema'
    // No access keys or SAS tokens: publishers sign in with Entra ID (the app's managed identity).
    disableLocalAuth: true
    publicNetworkAccess: 'Enabled'
    minimumTlsVersionAllowed: '1.2'
  }
}

resource dataSender 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(topic.id, principalId, eventGridDataSenderRoleId)
  scope: topic
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', eventGridDataSenderRoleId)
    principalId: principalId
    principalType: 'ServicePrincipal'
  }
}

@description('Name of the topic.')
output name string = topic.name

@description('Resource id of the topic (subscribe to it with az eventgrid event-subscription create --source-resource-id).')
output id string = topic.id

@description('The topic\'s publishing endpoint (BASETRIGGER_RUN_EVENTS_TOPIC).')
output endpoint string = topic.properties.endpoint
