#!/bin/sh
# azd postdeploy hook: once the app's functions exist, provision again with the Event Grid
# subscription (Event Grid refuses a subscription to a function that is not deployed yet).
set -eu

if [ "${CREATE_EVENT_SUBSCRIPTION:-false}" = "true" ]; then
    exit 0
fi

echo "eventgrid_image_pushed is deployed: provisioning again to subscribe it to the registry's pushes."
azd env set CREATE_EVENT_SUBSCRIPTION true
attempt=1
until azd provision --no-prompt; do
    if [ "$attempt" -ge 3 ]; then
        azd env set CREATE_EVENT_SUBSCRIPTION false
        echo "Could not create the Event Grid subscription; run 'azd env set CREATE_EVENT_SUBSCRIPTION true && azd provision' later." >&2
        exit 1
    fi
    attempt=$((attempt + 1))
    echo "Retrying in 60 s: a just-deployed function can take a minute to be listed."
    sleep 60
done
