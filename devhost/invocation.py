"""Calling user functions the way the Python worker does, with the host's log lines.

Sync functions run in a thread pool so they never block the event loop that serves HTTP and
polls queues; `async def` functions run on the loop itself, as in the worker. Every invocation is
logged like the Functions host (`Executing 'Functions.x' (Reason=..., Id=...)` then
`Executed 'Functions.x' (Succeeded|Failed, Id=..., Duration=...ms)`), and a failure's traceback
goes to the log only — callers decide what the outside world sees.

The invoker also tracks what is still running (threads cannot be cancelled), so shutdown can wait
for in-flight invocations and know when it had to abandon some.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import functools
import logging
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import azure.functions as func
from azure.functions import _abc as azf_abc

from .loader import FunctionEntry

log = logging.getLogger("devhost.function")


@dataclass(frozen=True)
class Outcome:
    invocation_id: str
    succeeded: bool
    value: Any = None


class _TraceContext(azf_abc.TraceContext):
    def __init__(self) -> None:
        self._parent = f"00-{uuid.uuid4().hex}-{uuid.uuid4().hex[:16]}-00"

    @property
    def trace_state(self) -> str:
        return ""

    @property
    def trace_parent(self) -> str:
        return self._parent

    @property
    def attributes(self) -> dict[str, str]:
        return {}


class _RetryContext(azf_abc.RetryContext):
    @property
    def retry_count(self) -> int:
        return 0

    @property
    def max_retry_count(self) -> int:
        return 0

    @property
    def exception(self) -> Any:
        return None


@dataclass(frozen=True)
class InvocationContext(func.Context):
    """What a function gets for a `context: func.Context` parameter."""

    _invocation_id: str
    _function_name: str
    _function_directory: str
    _thread_local_storage: threading.local = field(default_factory=threading.local)

    @property
    def invocation_id(self) -> str:
        return self._invocation_id

    @property
    def function_name(self) -> str:
        return self._function_name

    @property
    def function_directory(self) -> str:
        return self._function_directory

    # azure.functions' Context declares type[threading.local], but the worker (and this host)
    # hand the function an instance: the library's annotation is the one that is wrong.
    @property
    def thread_local_storage(self) -> threading.local:  # type: ignore[override]
        return self._thread_local_storage

    @property
    def trace_context(self) -> azf_abc.TraceContext:
        return _TraceContext()

    @property
    def retry_context(self) -> azf_abc.RetryContext:
        return _RetryContext()


class Invoker:
    def __init__(self, executor: concurrent.futures.Executor, function_directory: str) -> None:
        self._executor = executor
        self._function_directory = function_directory
        self._running: set[concurrent.futures.Future[Any] | asyncio.Future[Any]] = set()

    @property
    def running(self) -> int:
        # Pruned only on the loop thread (not from done-callbacks, which run in worker threads).
        self._running = {f for f in self._running if not f.done()}
        return len(self._running)

    async def invoke(
        self,
        entry: FunctionEntry,
        trigger_value: Any,
        *,
        reason: str,
        details: str | None = None,
        executor: concurrent.futures.Executor | None = None,
    ) -> Outcome:
        invocation_id = str(uuid.uuid4())
        kwargs = {entry.param: trigger_value}
        if entry.context_param:
            kwargs[entry.context_param] = InvocationContext(
                invocation_id, entry.name, self._function_directory
            )

        log.info("Executing 'Functions.%s' (Reason='%s', Id=%s)", entry.name, reason, invocation_id)
        if details:
            log.info("Trigger Details: %s", details)
        started = time.monotonic()
        try:
            value = await self._start(entry.user_function, kwargs, entry.is_async, executor)
        except Exception:
            elapsed = round((time.monotonic() - started) * 1000)
            log.error(
                "Executed 'Functions.%s' (Failed, Id=%s, Duration=%dms)", entry.name, invocation_id, elapsed
            )
            log.error("Exception while executing function: Functions.%s", entry.name, exc_info=True)
            return Outcome(invocation_id, succeeded=False)
        elapsed = round((time.monotonic() - started) * 1000)
        log.info(
            "Executed 'Functions.%s' (Succeeded, Id=%s, Duration=%dms)", entry.name, invocation_id, elapsed
        )
        return Outcome(invocation_id, succeeded=True, value=value)

    async def _start(
        self,
        user_function: Callable[..., Any],
        kwargs: dict[str, Any],
        is_async: bool,
        executor: concurrent.futures.Executor | None,
    ) -> Any:
        future: concurrent.futures.Future[Any] | asyncio.Future[Any]
        if is_async:
            task = asyncio.ensure_future(user_function(**kwargs))
            future = task
            awaitable = asyncio.shield(task)  # a cancelled caller must not cancel the function
        else:
            # copy_context: log records and context variables behave as if called inline.
            call = functools.partial(contextvars.copy_context().run, user_function, **kwargs)
            future = (executor or self._executor).submit(call)
            awaitable = asyncio.wrap_future(future)
        self._running = {f for f in self._running if not f.done()} | {future}
        return await awaitable

    async def drain(self, timeout: float) -> int:
        """Wait up to `timeout` seconds for running invocations; return how many still run."""
        deadline = time.monotonic() + timeout
        while self.running and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        return self.running
