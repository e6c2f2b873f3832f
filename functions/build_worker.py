"""Queue triggers: the build worker, and the poison-queue handler that fails abandoned runs."""

import logging

import azure.functions as func

from shared.bootstrap import services
from shared.domain.messages import MalformedMessage, decode

bp = func.Blueprint()


@bp.function_name("build_worker")
@bp.queue_trigger(arg_name="msg", queue_name="%BASETRIGGER_BUILD_QUEUE%", connection="AzureWebJobsStorage")
def build_worker(msg: func.QueueMessage) -> None:
    # A malformed message raises: after maxDequeueCount it rests in the poison queue for inspection.
    run_id = decode(msg.get_body())
    logging.info("run %s: delivery %s", run_id, msg.dequeue_count)
    services().worker.execute(run_id)


@bp.function_name("build_poison")
@bp.queue_trigger(arg_name="msg", queue_name="%BASETRIGGER_BUILD_QUEUE%-poison",
                  connection="AzureWebJobsStorage")
def build_poison(msg: func.QueueMessage) -> None:
    try:
        run_id = decode(msg.get_body())
    except MalformedMessage as exc:
        logging.error("poison message is not a build-run message, dropped: %s", exc)
        return
    run = services().lifecycle.fail_abandoned(
        run_id, "the build worker failed on every delivery of this run; see the host log"
    )
    logging.warning("run %s %s after repeated worker failures", run_id,
                    "failed" if run else "left as it was")
