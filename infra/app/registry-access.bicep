metadata description = 'What the app\'s identity may do on the existing container registry: pull (read manifests; ACR runs push the images themselves), and schedule and follow ACR runs through a custom role with exactly those actions. Deployed into the registry\'s resource group.'

@description('Required. Name of the existing container registry (in this module\'s resource group).')
param registryName string

@description('Required. Principal id of the app\'s user-assigned identity.')
param principalId string

var acrPullRoleId = '7f951dda-4ed3-4680-a7ca-43fe172d538d' // AcrPull

// What AcrBuilder (shared/adapters/builders/acr.py) calls, and nothing more: no built-in role grants
// scheduleRun without also granting registry writes (Contributor) or task management.
var acrRunActions = [
  'Microsoft.ContainerRegistry/registries/scheduleRun/action' // POST .../scheduleRun
  'Microsoft.ContainerRegistry/registries/runs/read' // GET .../runs/{runId}
  'Microsoft.ContainerRegistry/registries/runs/listLogSasUrl/action' // POST .../runs/{runId}/listLogSasUrl
  'Microsoft.ContainerRegistry/registries/runs/cancel/action' // POST .../runs/{runId}/cancel
  'Microsoft.ContainerRegistry/registries/listBuildSourceUploadUrl/action' // POST .../listBuildSourceUploadUrl
  // A scheduleRun or cancel answered 202 is polled at its Azure-AsyncOperation or Location URL:
  'Microsoft.ContainerRegistry/registries/operationStatuses/read' // GET .../registries/{r}/operationStatuses/{id}
  'Microsoft.ContainerRegistry/locations/operationResults/read' // GET .../locations/{l}/operationResults/{id}
]

// AcrPull only: the app reads manifests (shared/adapters/registry_acr.py); ACR runs push with their
// own identity, so AcrPush would only let the app overwrite any repository.
var builtInRoleIds = [
  acrPullRoleId
]

resource registry 'Microsoft.ContainerRegistry/registries@2023-07-01' existing = {
  name: registryName
}

resource registryRoles 'Microsoft.Authorization/roleAssignments@2022-04-01' = [
  for roleId in builtInRoleIds: {
    name: guid(registry.id, principalId, roleId)
    scope: registry
    properties: {
      roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roleId)
      principalId: principalId
      principalType: 'ServicePrincipal'
    }
  }
]

// Custom roles cannot be assignable at a single resource, so the role is assignable in the
// registry's resource group and assigned on the registry alone.
resource acrRunScheduler 'Microsoft.Authorization/roleDefinitions@2022-04-01' = {
  name: guid(registry.id, 'basetrigger-acr-run-scheduler')
  properties: {
    roleName: 'basetrigger ACR run scheduler (${registryName})'
    description: 'Schedule ACR quick builds, read and cancel their runs, read their logs, and get the source-upload URL. Used by basetrigger\'s ACR builder.'
    type: 'CustomRole'
    assignableScopes: [
      resourceGroup().id
    ]
    permissions: [
      {
        actions: acrRunActions
        notActions: []
        dataActions: []
        notDataActions: []
      }
    ]
  }
}

resource acrRunSchedulerAssignment 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(registry.id, principalId, acrRunScheduler.id)
  scope: registry
  properties: {
    roleDefinitionId: acrRunScheduler.id
    principalId: principalId
    principalType: 'ServicePrincipal'
  }
}

@description('Resource id of the custom role definition.')
output runSchedulerRoleId string = acrRunScheduler.id
