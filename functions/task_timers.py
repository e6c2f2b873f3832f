"""Timer: start the runs of task timers whose slot has come (shared/service_layer/timers.py).

It ticks every BASETRIGGER_TIMER_TICK seconds (default 60). Each slot is decided once in the
decision log and each timer's last slot is recorded, so neither a restart nor two instances ticking
at once miss or double a slot.
"""

import logging

import azure.functions as func

from shared import config
from shared.bootstrap import services

bp = func.Blueprint()


@bp.function_name("task_timers")
@bp.timer_trigger(arg_name="timer", schedule=config.timer_schedule(), run_on_startup=False)
def task_timers(timer: func.TimerRequest) -> None:
    report = services().timers.tick()
    for decision in report.decisions:
        logging.info("timer slot %s: %s %s", decision.event_id, decision.outcome, ",".join(decision.runs))
    if report.failed:
        logging.warning("task timers: %d slot(s) could not be started; tried again at the next tick",
                        report.failed)
