"""Timer: one poll cycle over the bases no event source covers (shared/service_layer/polling.py).

The schedule follows BASETRIGGER_POLL_INTERVAL (default 300 s: every 5 minutes). A binding is read
when the app is imported, before any service exists, so config.poll_schedule computes it from the
environment there; a cycle that overruns makes the next occurrence wait (timers never overlap), and
two instances that both poll dispatch the same derived event ids, which the decision log keeps once.
"""

import logging

import azure.functions as func

from shared import config
from shared.bootstrap import services

bp = func.Blueprint()


@bp.function_name("poll_bases")
@bp.timer_trigger(arg_name="timer", schedule=config.poll_schedule(), run_on_startup=False)
def poll_bases(timer: func.TimerRequest) -> None:
    report = services().poller.cycle()
    if report.failed:
        logging.warning("poll cycle: %d of %d bases could not be checked (see `basetrigger base list`)",
                        report.failed, report.polled)
