"""Timer: runs left without a message or whose worker stopped reporting are sent again or taken
over (a minute at most), and runs silent for long are failed, so none stays Queued or Running forever;
bases still for their settle window are dispatched; run notifications left pending by a process that
ended are sent again."""

import logging

import azure.functions as func

from shared.bootstrap import services

bp = func.Blueprint()


@bp.function_name("housekeeping")
# Every minute: a run left without its message, or whose worker died, is picked up within one.
@bp.timer_trigger(arg_name="timer", schedule="0 * * * * *", run_on_startup=False)
def housekeeping(timer: func.TimerRequest) -> None:
    failed = services().lifecycle.sweep()
    if failed:
        logging.warning("failed abandoned runs: %s", ", ".join(failed))
    # Bases still for their settle window start their one wave (a minute's resolution at most).
    settled = services().dispatcher.release_settled()
    if settled:
        logging.info("settled bases dispatched: %s", ", ".join(f"{d.image}@{d.digest}" for d in settled))
    # Notifications a process that ended left unsent go out again (in the background).
    resent = services().notifier.resend_stale()
    if resent:
        logging.info("notifications sent again: %s", ", ".join(resent))
