# azd postdeploy hook (Windows): same as postdeploy.sh.
$ErrorActionPreference = 'Stop'
$registry = Join-Path $PSScriptRoot 'registry.py'

for ($attempt = 1; $attempt -le 3; $attempt++) {
    python3 $registry --with-subscription
    if ($LASTEXITCODE -eq 0) {
        azd env set CREATE_EVENT_SUBSCRIPTION true
        exit 0
    }
    if ($attempt -lt 3) {
        Write-Host "Retrying in 60 s: a just-deployed function can take a minute to be listed."
        Start-Sleep -Seconds 60
    }
}
Write-Error "Could not create the Event Grid subscription; run 'azd hooks run postdeploy' later."
