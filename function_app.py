"""The one FunctionApp: each module of functions/ contributes a blueprint."""

import azure.functions as func

from functions import (
    admin_api,
    api,
    build_worker,
    dashboard,
    eventgrid_ingress,
    housekeeping,
    insight_api,
    latency_api,
    poll_timer,
    quarantine_api,
    registry_api,
    source_hooks,
    task_timers,
    trigger_api,
    wave_api,
    webhooks_distribution,
    webhooks_dockerhub,
    webhooks_github,
    webhooks_harbor,
)

app = func.FunctionApp(http_auth_level=func.AuthLevel.FUNCTION)

app.register_functions(eventgrid_ingress.bp)
app.register_functions(webhooks_distribution.bp)
app.register_functions(build_worker.bp)
app.register_functions(housekeeping.bp)
app.register_functions(api.bp)
app.register_functions(insight_api.bp)
app.register_functions(wave_api.bp)
app.register_functions(admin_api.bp)
app.register_functions(dashboard.bp)
# Bases anywhere: polling, more registries' webhooks, bases and registry credentials in the API.
app.register_functions(poll_timer.bp)
app.register_functions(webhooks_harbor.bp)
app.register_functions(webhooks_dockerhub.bp)
app.register_functions(webhooks_github.bp)
app.register_functions(registry_api.bp)
# Timer and source triggers, and notifications (issue 18).
app.register_functions(task_timers.bp)
app.register_functions(trigger_api.bp)
app.register_functions(source_hooks.bp)
# Know what a base change is: quarantined digests (base changes is in registry_api).
app.register_functions(quarantine_api.bp)
# Patch latency: from a base push to the last dependent pushed.
app.register_functions(latency_api.bp)
