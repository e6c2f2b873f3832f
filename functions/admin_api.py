"""HTTP API for operating the deployment (see docs/api.md):

    POST /api/secrets/rotate   re-encrypt every stored secret with the first BASETRIGGER_SECRET_KEY key
    POST /api/admin/migrate    move rows stored by an older schema into today's layout (runs,
                               decisions, wave members)

Key rotation runs here, in the app, because only the app has both the keys (a Key Vault reference
in the cloud) and the storage rights (its managed identity); docs/deploy.md gives the steps.
The answer names tasks and a fingerprint of the encrypting key, never a key or a secret.
"""

from __future__ import annotations

import logging

import azure.functions as func

from functions.http import api_handler, json_response
from shared.bootstrap import services

bp = func.Blueprint()


@bp.function_name("api_secrets_rotate")
@bp.route(route="secrets/rotate", methods=["POST"], auth_level=func.AuthLevel.FUNCTION)
@api_handler
def api_secrets_rotate(req: func.HttpRequest) -> func.HttpResponse:
    report = services().task_store.reseal_secrets()
    logging.info("secrets resealed: %d re-encrypted, %d current, %d unreadable, %d busy",
                 len(report.resealed), len(report.current), len(report.unreadable), len(report.busy))
    return json_response(report.to_dict())


@bp.function_name("api_admin_migrate")
@bp.route(route="admin/migrate", methods=["POST"], auth_level=func.AuthLevel.FUNCTION)
@api_handler
def api_admin_migrate(req: func.HttpRequest) -> func.HttpResponse:
    """One-shot, idempotent: run it again after a failure, or any time (it then finds nothing)."""
    app = services()
    runs = app.runs.migrate_legacy()
    decisions = app.decisions.migrate_legacy()
    waves = app.wave_store.migrate_legacy()
    logging.info("migrate: %d run(s), %d decision(s), %d event marker(s) and the members of %d wave(s) "
                 "moved into their partitions", runs.runs, decisions.decisions, decisions.markers,
                 waves.waves)
    return json_response({"runs": runs.to_dict(), "decisions": decisions.to_dict(), "waves": waves.to_dict()})
