"""A small local Azure Functions host for this project's `function_app.py`.

Azure Functions Core Tools cannot be installed on our machines (its installer downloads the host
from a CDN they cannot reach; see docs/local-stack.md), so `python -m devhost` stands in for
`func start`: it imports the app's one `FunctionApp`, calls `get_functions()` once, and serves what
that returns the way the Functions host does — HTTP triggers under the route prefix with function
keys, the Event Grid webhook, queue triggers with host.json's retry/poison rules, and NCRONTAB
timers. It reads `local.settings.json` and `host.json` like Core Tools.

Modules, one concern each:
    settings    local.settings.json values and `%NAME%` binding expressions
    hostconfig  the parts of host.json that are honoured
    loader      importing the app and turning `get_functions()` into the function table
    invocation  calling a user function (thread pool or event loop) with the host's log lines
    auth        function keys
    web         request-body limits and JSON error responses shared by the HTTP endpoints
    routes      ASP.NET-style route templates
    http        HTTP triggers
    eventgrid   the Event Grid webhook
    queues      queue triggers
    timers      timer triggers
    server      wiring it together: startup, the admin endpoints, graceful shutdown
"""
