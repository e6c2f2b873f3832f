"""The host itself: load settings and the app, serve HTTP and the webhooks, run queue listeners and
timers, report status, and shut down gracefully.

Startup mirrors Core Tools: `local.settings.json` values enter the environment first (so the app
sees them on import), then host.json is read, then the app is imported and indexed once. A function
whose binding cannot be served (an unresolved `%NAME%`, a bad schedule, a missing connection) is
reported in the log and in `/admin/host/status` `errors`, and the rest of the app still runs — the
host does the same.

On SIGTERM/SIGINT the host stops polling queues and firing timers, stops accepting connections,
and gives in-flight invocations `grace_seconds` to finish. Messages of invocations abandoned after
that are still leased and reappear when the lease ends. A second signal exits at once.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import os
import secrets
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web

from . import eventgrid
from .auth import presents_key
from .eventgrid import EventGridWebhook
from .hostconfig import HostConfig, HostConfigError, load_host_config
from .http import HttpRoute, HttpTriggers
from .invocation import Invoker
from .loader import (
    EVENT_GRID_TRIGGER,
    HTTP_TRIGGER,
    QUEUE_TRIGGER,
    TIMER_TRIGGER,
    FunctionTable,
    LoadError,
    import_app,
    load_functions,
)
from .queues import DEFAULT_CONNECTION, DEFAULT_LEASE_SECONDS, QueueConnections, QueueListener, queue_name
from .routes import RouteError
from .settings import SettingsError, load_local_settings, resolve
from .timers import Schedule, ScheduleError, TimerRunner
from .web import DEFAULT_MAX_BODY_BYTES, error_response

log = logging.getLogger("devhost")

DEFAULT_PORT = 7071
STATUS_PATH = "/admin/host/status"
PING_PATH = "/admin/host/ping"
QUEUE_PREPARE_TIMEOUT = 10.0

EXIT_OK, EXIT_STARTUP_FAILED, EXIT_ABANDONED = 0, 1, 2


@dataclass(frozen=True)
class Options:
    app: str = "function_app"
    root: Path = Path(".")
    host: str = "127.0.0.1"
    port: int | None = None
    key: str | None = None
    max_body_bytes: int | None = None
    grace_seconds: float = 30.0
    queue_lease_seconds: float = DEFAULT_LEASE_SECONDS
    log_level: str | None = None


@dataclass
class Prepared:
    """Everything resolved before the event loop starts."""

    root: Path
    config: HostConfig
    table: FunctionTable
    key: str
    port: int
    max_body_bytes: int


@dataclass
class Status:
    state: str = "Initialized"
    functions: list[str] = field(default_factory=list)
    errors: dict[str, str] = field(default_factory=dict)


def configure_logging(level: int) -> None:
    formatter = logging.Formatter(
        "[%(asctime)s.%(msecs)03dZ] %(levelname)s %(name)s: %(message)s", "%Y-%m-%dT%H:%M:%S"
    )
    formatter.converter = time.gmtime
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # The storage SDK logs every HTTP request at INFO and aiohttp every access; the host's own
    # invocation lines are the useful record.
    logging.getLogger("azure").setLevel(max(level, logging.WARNING))
    logging.getLogger("aiohttp.access").setLevel(max(level, logging.WARNING))


def _int_setting(name: str) -> int | None:
    value = os.environ.get(name)
    if not value:
        return None
    try:
        return int(value)
    except ValueError:
        raise SettingsError(f"{name} must be an integer, got {value!r}") from None


def prepare(options: Options) -> Prepared:
    root = options.root.resolve()
    # The worker runs in the app's directory; relative paths in the app behave the same here.
    os.chdir(root)
    local = load_local_settings(root)
    if local.path:
        log.info(
            "Read %s (%d values applied; environment variables take precedence)",
            local.path,
            len(local.applied),
        )
    config = load_host_config(root)
    if options.log_level is None:
        logging.getLogger().setLevel(config.log_level)

    key = options.key or os.environ.get("DEVHOST_KEY")
    if not key:
        key = secrets.token_urlsafe(32)
        log.warning("Neither --key nor DEVHOST_KEY is set; this run's function key is %s", key)

    port = options.port if options.port is not None else (_int_setting("HOST_PORT") or local.local_http_port)
    max_body = (
        options.max_body_bytes or _int_setting("FUNCTIONS_REQUEST_BODY_SIZE_LIMIT") or DEFAULT_MAX_BODY_BYTES
    )
    table = load_functions(import_app(options.app, root))
    return Prepared(root, config, table, key, port if port is not None else DEFAULT_PORT, max_body)


def run(options: Options) -> int:
    configure_logging(logging.getLevelName(options.log_level.upper()) if options.log_level else logging.INFO)
    try:
        prepared = prepare(options)
    except (SettingsError, HostConfigError) as exc:
        log.error("%s", exc)
        return EXIT_STARTUP_FAILED
    except LoadError:
        log.exception("The app cannot be loaded")
        return EXIT_STARTUP_FAILED
    return asyncio.run(serve(prepared, options))


def _build_http_routes(prepared: Prepared, errors: dict[str, str]) -> list[HttpRoute]:
    routes = []
    for entry in prepared.table.of_type(HTTP_TRIGGER):
        try:
            routes.append(HttpRoute.of(entry))
        except RouteError as exc:
            errors[entry.name] = str(exc)
    return routes


def _build_listeners(
    prepared: Prepared,
    options: Options,
    invoker: Invoker,
    connections: QueueConnections,
    errors: dict[str, str],
) -> list[QueueListener]:
    listeners = []
    for entry in prepared.table.of_type(QUEUE_TRIGGER):
        try:
            service = connections.service(entry.trigger.get("connection") or DEFAULT_CONNECTION)
            name = queue_name(resolve(str(entry.trigger["queueName"])))
            queues, lease = prepared.config.queues, options.queue_lease_seconds
            listeners.append(QueueListener(entry, name, service, queues, invoker, lease))
        except SettingsError as exc:
            errors[entry.name] = str(exc)
    return listeners


def _build_timers(prepared: Prepared, invoker: Invoker, errors: dict[str, str]) -> list[TimerRunner]:
    timers = []
    for entry in prepared.table.of_type(TIMER_TRIGGER):
        try:
            timers.append(TimerRunner(entry, Schedule(resolve(str(entry.trigger["schedule"]))), invoker))
        except (SettingsError, ScheduleError) as exc:
            errors[entry.name] = str(exc)
    return timers


def _log_functions(
    base_url: str,
    http: HttpTriggers,
    listeners: list[QueueListener],
    timers: list[TimerRunner],
    table: FunctionTable,
) -> None:
    lines = []
    for route in http.routes:
        methods = ",".join(sorted(route.methods)) if route.methods else "ALL"
        lines.append(f"{route.entry.name}: [{methods}] {base_url}{http.url_path(route)} ({route.auth_level})")
    for entry in table.of_type(EVENT_GRID_TRIGGER):
        lines.append(f"{entry.name}: eventGridTrigger {base_url}{EventGridWebhook.url_path(entry.name)}")
    for listener in listeners:
        lines.append(f"{listener.entry.name}: queueTrigger on '{listener.queue_name}'")
    for timer in timers:
        lines.append(f"{timer.entry.name}: timerTrigger '{timer.schedule.expression}'")
    log.info("Functions:\n%s", "\n".join(f"        {line}" for line in sorted(lines)))


def _report_crash(task: asyncio.Task[Any]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("Background task %s stopped", task.get_name(), exc_info=task.exception())


async def serve(prepared: Prepared, options: Options) -> int:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()

    def on_signal(signum: int) -> None:
        if stop.is_set():
            log.error("Second %s: exiting without waiting", signal.Signals(signum).name)
            logging.shutdown()
            os._exit(EXIT_ABANDONED)
        log.info("Received %s", signal.Signals(signum).name)
        stop.set()

    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, on_signal, signum)

    threads = _int_setting("PYTHON_THREADPOOL_THREAD_COUNT")  # the worker's own knob for sync functions
    executor = concurrent.futures.ThreadPoolExecutor(max_workers=threads, thread_name_prefix="function")
    invoker = Invoker(executor, str(prepared.root))
    connections = QueueConnections(os.environ)
    status = Status(errors=dict(prepared.table.errors))

    http = HttpTriggers(
        _build_http_routes(prepared, status.errors),
        prepared.config.route_prefix,
        prepared.key,
        prepared.max_body_bytes,
        invoker,
    )
    webhook = EventGridWebhook(prepared.table, prepared.key, prepared.max_body_bytes, invoker)
    listeners = _build_listeners(prepared, options, invoker, connections, status.errors)
    timers = _build_timers(prepared, invoker, status.errors)
    status.functions = sorted(e.name for e in prepared.table.entries if e.name not in status.errors)
    for name, why in sorted(status.errors.items()):
        log.error("Function '%s' is not served: %s", name, why)

    # Queues exist before the host reports Running, so producers can send at once; but storage that
    # does not answer (the SDK retries for a long time) must not keep HTTP functions from serving.
    try:
        await asyncio.wait_for(asyncio.gather(*(x.prepare() for x in listeners)), QUEUE_PREPARE_TIMEOUT)
    except TimeoutError:
        log.warning(
            "Queue storage did not answer within %ss; queue listeners keep trying", QUEUE_PREPARE_TIMEOUT
        )

    async def host_status(request: web.Request) -> web.Response:
        # It lists every function: as in Azure (the master key), not for anonymous callers.
        if not presents_key(request, prepared.key):
            return error_response(401, "the host status needs the key (x-functions-key or code=)")
        return web.json_response(
            {"state": status.state, "functions": status.functions, "errors": status.errors}
        )

    async def ping(_: web.Request) -> web.Response:
        return web.Response(status=200)

    app = web.Application()
    app.router.add_get(STATUS_PATH, host_status)
    app.router.add_get(PING_PATH, ping)
    app.router.add_route("POST", eventgrid.PATH, webhook.handle)
    app.router.add_route("OPTIONS", eventgrid.PATH, webhook.handle)
    # Last: everything else is an HTTP trigger's (`[\s\S]`: a path may hold an encoded newline).
    app.router.add_route("*", "/{tail:[\\s\\S]*}", http.handle)
    runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=options.grace_seconds)
    await runner.setup()
    try:
        await web.TCPSite(runner, options.host, prepared.port).start()
    except OSError as exc:
        log.error("Cannot listen on %s:%s: %s", options.host, prepared.port, exc)
        await runner.cleanup()
        await connections.close()
        return EXIT_STARTUP_FAILED
    base_url = f"http://{options.host}:{runner.addresses[0][1]}"

    _log_functions(base_url, http, listeners, timers, prepared.table)
    workers: list[QueueListener | TimerRunner] = [*listeners, *timers]
    tasks = [asyncio.create_task(x.run(), name=f"{type(x).__name__}:{x.entry.name}") for x in workers]
    for task in tasks:
        task.add_done_callback(_report_crash)
    status.state = "Running"
    log.info("Host started. Now listening on: %s (status: %s%s)", base_url, base_url, STATUS_PATH)

    await stop.wait()

    status.state = "Stopping"
    log.info("Stopping host; in-flight invocations get %ss to finish", options.grace_seconds)
    deadline = loop.time() + options.grace_seconds
    for worker in workers:
        worker.stop()
    await runner.cleanup()  # stops accepting, waits for running HTTP requests up to the grace period
    if tasks:
        _, pending = await asyncio.wait(tasks, timeout=max(0.0, deadline - loop.time()))
        for task in pending:
            task.cancel()
    abandoned = await invoker.drain(max(0.0, deadline - loop.time()))
    await connections.close()
    executor.shutdown(wait=False, cancel_futures=True)
    if abandoned:
        log.error("%d invocation(s) still running after the grace period; exiting without them", abandoned)
        return EXIT_ABANDONED
    log.info("Host stopped")
    return EXIT_OK
