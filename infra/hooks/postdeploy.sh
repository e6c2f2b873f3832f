#!/bin/sh
# azd postdeploy hook: once the app's functions exist, create this environment's Event Grid
# subscription (Event Grid refuses a subscription to a function that is not deployed yet). Only the
# registry-side deployment runs again (registry.py); the app's own resources are not provisioned
# again.
set -eu
here=$(dirname "$0")

if [ "${CREATE_EVENT_SUBSCRIPTION:-false}" = "true" ]; then
    exec python3 "$here/registry.py" --with-subscription
fi

echo "eventgrid_image_pushed is deployed: subscribing it to the registry's pushes."
attempt=1
until python3 "$here/registry.py" --with-subscription; do
    if [ "$attempt" -ge 3 ]; then
        echo "Could not create the Event Grid subscription; run 'python3 infra/hooks/registry.py --with-subscription' (with the azd environment's values: azd hooks run postdeploy) later." >&2
        exit 1
    fi
    attempt=$((attempt + 1))
    echo "Retrying in 60 s: a just-deployed function can take a minute to be listed."
    sleep 60
done
azd env set CREATE_EVENT_SUBSCRIPTION true
