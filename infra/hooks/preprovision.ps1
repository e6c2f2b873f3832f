# azd preprovision hook (Windows): the decisions are in preprovision.py, as on POSIX.
$ErrorActionPreference = 'Stop'
$script = Join-Path $PSScriptRoot 'preprovision.py'
$python = (Get-Command python3 -ErrorAction SilentlyContinue) ?? (Get-Command python -ErrorAction SilentlyContinue)
if ($python) {
    & $python.Source $script
} elseif (Get-Command py -ErrorAction SilentlyContinue) {
    & py -3 $script
} else {
    Write-Error "preprovision: Python 3 is needed (it decides whether Key Vault already holds the secret key)"
}
exit $LASTEXITCODE
