# azd postprovision hook (Windows): same as postprovision.sh.
$ErrorActionPreference = 'Stop'
python3 (Join-Path $PSScriptRoot 'registry.py')
exit $LASTEXITCODE
