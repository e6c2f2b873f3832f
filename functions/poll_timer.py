"""Timer: one poll cycle over the bases no event source covers (shared/service_layer/polling.py),
then over the git repositories that send no webhooks (shared/service_layer/repo_polling.py).

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
    # The git repositories that send no webhooks (BASETRIGGER_GIT_POLL), in the same cycle.
    repositories = services().repository_poller.cycle()
    for decision in repositories.decisions:
        logging.info("polled commit %s: %s %s", decision.event_id, decision.outcome, ",".join(decision.runs))
    if repositories.failed:
        logging.warning("poll cycle: %d of %d repositories could not be checked", repositories.failed,
                        repositories.polled)
