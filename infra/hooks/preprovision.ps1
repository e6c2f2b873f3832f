# azd preprovision hook (Windows): same as preprovision.sh.
$ErrorActionPreference = 'Stop'

if (-not $env:ACR_NAME) {
    Write-Error "basetrigger builds on an existing Azure Container Registry: run 'azd env set ACR_NAME <registry-name>' (and ACR_RESOURCE_GROUP if it is in another resource group) first."
}

if (-not $env:BASETRIGGER_SECRET_KEY) {
    $bytes = New-Object byte[] 32
    [System.Security.Cryptography.RandomNumberGenerator]::Create().GetBytes($bytes)
    $key = [Convert]::ToBase64String($bytes).Replace('+', '-').Replace('/', '_')
    azd env set BASETRIGGER_SECRET_KEY $key
    Write-Host "Generated BASETRIGGER_SECRET_KEY in the azd environment (it encrypts secret build args)."
}
