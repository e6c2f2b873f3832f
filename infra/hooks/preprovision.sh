#!/bin/sh
# azd preprovision hook: make sure the azd environment holds what infra/main.parameters.json reads.
set -eu

if [ -z "${ACR_NAME:-}" ]; then
    echo "basetrigger builds on an existing Azure Container Registry: set it first with" >&2
    echo "  azd env set ACR_NAME <registry-name>" >&2
    echo "  azd env set ACR_RESOURCE_GROUP <its-resource-group>   # if not this environment's group" >&2
    exit 1
fi

if [ -z "${BASETRIGGER_SECRET_KEY:-}" ]; then
    # A Fernet key: URL-safe base64 of 32 random bytes. Generated once; Key Vault keeps it for the
    # app and the azd environment keeps it so every later provision sends the same key.
    if command -v python3 >/dev/null 2>&1; then
        key=$(python3 -c 'import base64, os; print(base64.urlsafe_b64encode(os.urandom(32)).decode())')
    else
        key=$(openssl rand -base64 32 | tr '+/' '-_')
    fi
    azd env set BASETRIGGER_SECRET_KEY "$key"
    echo "Generated BASETRIGGER_SECRET_KEY in the azd environment (it encrypts secret build args)."
fi
