#!/bin/sh
# azd postprovision hook: deploy infra/registry.bicep into the registry's resource group, outside
# azd's own deployment (so `azd down` never deletes that group), and forget the local copy of the
# secret key once Key Vault holds it. The decisions are in registry.py.
set -eu
here=$(dirname "$0")
exec python3 "$here/registry.py"
