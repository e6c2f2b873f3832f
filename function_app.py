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
    webhook_ingress,
)

app = func.FunctionApp(http_auth_level=func.AuthLevel.FUNCTION)

app.register_functions(eventgrid_ingress.bp)
app.register_functions(webhook_ingress.bp)
app.register_functions(build_worker.bp)
app.register_functions(housekeeping.bp)
app.register_functions(api.bp)
app.register_functions(insight_api.bp)
app.register_functions(admin_api.bp)
app.register_functions(dashboard.bp)
