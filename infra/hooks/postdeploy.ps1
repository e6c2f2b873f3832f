# azd postdeploy hook (Windows): same as postdeploy.sh.
$ErrorActionPreference = 'Stop'

if ($env:CREATE_EVENT_SUBSCRIPTION -eq 'true') { exit 0 }

Write-Host "eventgrid_image_pushed is deployed: provisioning again to subscribe it to the registry's pushes."
azd env set CREATE_EVENT_SUBSCRIPTION true
for ($attempt = 1; $attempt -le 3; $attempt++) {
    azd provision --no-prompt
    if ($LASTEXITCODE -eq 0) { exit 0 }
    if ($attempt -lt 3) {
        Write-Host "Retrying in 60 s: a just-deployed function can take a minute to be listed."
        Start-Sleep -Seconds 60
    }
}
azd env set CREATE_EVENT_SUBSCRIPTION false
Write-Error "Could not create the Event Grid subscription; run 'azd env set CREATE_EVENT_SUBSCRIPTION true; azd provision' later."
