"""Timer: fail runs whose worker stopped reporting, so none stays Running forever."""

import logging

import azure.functions as func

from shared.bootstrap import services

bp = func.Blueprint()


@bp.function_name("housekeeping")
@bp.timer_trigger(arg_name="timer", schedule="0 */5 * * * *", run_on_startup=False)
def housekeeping(timer: func.TimerRequest) -> None:
    failed = services().worker.sweep()
    if failed:
        logging.warning("failed abandoned runs: %s", ", ".join(failed))
