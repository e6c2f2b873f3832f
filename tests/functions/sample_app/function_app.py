"""A tiny FunctionApp that tests/functions/test_devhost.py serves with devhost.

Every function appends what it received as one JSON line to `$SAMPLE_OUT_DIR/<function>.jsonl`,
so the tests can observe invocations made in the host's process.
"""

import asyncio
import json
import os
import time
from pathlib import Path

import azure.functions as func

app = func.FunctionApp(http_auth_level=func.AuthLevel.FUNCTION)


def record(function: str, **fields: object) -> None:
    path = Path(os.environ["SAMPLE_OUT_DIR"]) / f"{function}.jsonl"
    with path.open("a", encoding="utf-8") as out:
        out.write(json.dumps(fields, default=str) + "\n")


def echo(req: func.HttpRequest) -> dict:
    return {
        "method": req.method,
        "url": req.url,
        "route_params": dict(req.route_params),
        "params": dict(req.params),
        "body": req.get_body().decode("utf-8", "replace"),
        "header": req.headers.get("x-sample"),
    }


@app.route(route="hello/{name}/{greeting?}", methods=["GET", "POST"], auth_level=func.AuthLevel.ANONYMOUS)
def hello(req: func.HttpRequest) -> func.HttpResponse:
    reply = {**echo(req), "setting": os.environ.get("SAMPLE_GREETING")}
    return func.HttpResponse(json.dumps(reply), mimetype="application/json", headers={"X-Sample": "yes"})


@app.route(route="hello/world", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
def hello_world(req: func.HttpRequest) -> func.HttpResponse:
    return func.HttpResponse("the literal route", status_code=200)


@app.route(route="secret", methods=["POST"])
def secret(req: func.HttpRequest, context: func.Context) -> func.HttpResponse:
    reply = {**echo(req), "invocation_id": context.invocation_id}
    return func.HttpResponse(json.dumps(reply), status_code=201, mimetype="application/json")


@app.route(route="admin-only", methods=["GET"], auth_level=func.AuthLevel.ADMIN)
def admin_only(req: func.HttpRequest) -> func.HttpResponse:
    return func.HttpResponse("admin")


@app.route(route="async/{n:int}", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
async def async_route(req: func.HttpRequest) -> func.HttpResponse:
    await asyncio.sleep(0.01)
    return func.HttpResponse(f"async {int(req.route_params['n']) * 2}")


@app.route(route="boom", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
def boom(req: func.HttpRequest) -> func.HttpResponse:
    raise RuntimeError("sensitive-detail-in-traceback")


@app.route(route="slow", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
def slow(req: func.HttpRequest) -> func.HttpResponse:
    time.sleep(float(req.params.get("seconds", "1")))
    return func.HttpResponse("slept")


@app.event_grid_trigger(arg_name="event")
def events(event: func.EventGridEvent) -> None:
    fields = {"kind": type(event).__name__, "id": event.id, "data": event.get_json()}
    fields["subject"] = event.subject
    record("events", **fields)
    if event.subject == "fail":
        raise ValueError("this event fails on purpose")


@app.queue_trigger(arg_name="msg", queue_name="%SAMPLE_QUEUE%", connection="AzureWebJobsStorage")
def flaky(msg: func.QueueMessage) -> None:
    """Fails while the dequeue count is at most `fail_times` in the message (all times for -1)."""
    payload = msg.get_json()
    record("flaky", id=msg.id, dequeue_count=msg.dequeue_count, payload=payload, pop_receipt=msg.pop_receipt)
    fail_times = payload.get("fail_times", 0)
    if fail_times < 0 or msg.dequeue_count <= fail_times:
        raise RuntimeError(f"attempt {msg.dequeue_count} fails on purpose")


@app.queue_trigger(arg_name="msg", queue_name="%SAMPLE_QUEUE%-poison", connection="AzureWebJobsStorage")
def flaky_poison(msg: func.QueueMessage) -> None:
    record("flaky_poison", id=msg.id, dequeue_count=msg.dequeue_count, payload=msg.get_json())


@app.queue_trigger(arg_name="msg", queue_name="%SLOW_QUEUE%", connection="AzureWebJobsStorage")
def slow_build(msg: func.QueueMessage) -> None:
    """Runs longer than the host's queue lease, which must be renewed meanwhile."""
    record("slow_build", id=msg.id, dequeue_count=msg.dequeue_count, started=time.time())
    time.sleep(msg.get_json()["seconds"])
    record("slow_build_done", id=msg.id)


@app.timer_trigger(schedule="*/1 * * * * *", arg_name="timer", run_on_startup=True, use_monitor=False)
def tick(timer: func.TimerRequest) -> None:
    record("tick", past_due=timer.past_due, at=time.time())


@app.timer_trigger(schedule="%MISSING_SCHEDULE%", arg_name="timer")
def unresolved(timer: func.TimerRequest) -> None:
    """Its schedule names a setting that is never set: the host reports it and serves the rest."""
