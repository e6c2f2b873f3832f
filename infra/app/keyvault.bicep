metadata description = 'Key Vault (RBAC mode) holding BASETRIGGER_SECRET_KEY and, where used, the webhook secrets; its secrets are readable by the app\'s identity and nothing else.'

@description('Required. Name of the Key Vault (3-24 characters, globally unique).')
@minLength(3)
@maxLength(24)
param name string

@description('Optional. Azure region of the vault.')
param location string = resourceGroup().location

@description('Optional. Tags applied to the vault.')
param tags object = {}

@description('Required. Name of the secret holding the key.')
param secretName string

@description('Optional. The key(s) to store: Fernet keys, comma-separated, the first encrypting. Empty leaves the secret the vault holds as it is; a provision writes the secret only while the vault has none (the preprovision hook decides), since another key could not read what the stored one sealed.')
@secure()
param secretValue string = ''

@description('Required. Principal id of the identity that reads the secret (the Function App\'s).')
param principalId string

var keyVaultSecretsUserRoleId = '4633458b-17de-408a-b874-0445c86b69e6' // Key Vault Secrets User

resource vault 'Microsoft.KeyVault/vaults@2023-07-01' = {
  name: name
  location: location
  tags: tags
  properties: {
    tenantId: subscription().tenantId
    sku: {
      family: 'A'
      name: 'standard'
    }
    enableRbacAuthorization: true
    enableSoftDelete: true
    softDeleteRetentionInDays: 7
    publicNetworkAccess: 'Enabled'
  }
}

resource secret 'Microsoft.KeyVault/vaults/secrets@2023-07-01' = if (!empty(secretValue)) {
  parent: vault
  name: secretName
  properties: {
    value: secretValue
    contentType: 'Fernet keys, comma-separated, first encrypts (BASETRIGGER_SECRET_KEY)'
  }
}

// On the vault, not on one secret: the app also reads the webhook secrets (basetrigger-harbor-auth,
// basetrigger-github-webhook-secret) the operator stores later, and a role cannot be assigned on a
// secret that does not exist yet. The vault holds this app's secrets only.
resource secretReader 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(vault.id, principalId, keyVaultSecretsUserRoleId)
  scope: vault
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', keyVaultSecretsUserRoleId)
    principalId: principalId
    principalType: 'ServicePrincipal'
  }
}

@description('Name of the Key Vault.')
output name string = vault.name
