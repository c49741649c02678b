"""Cloud Function (gen2, HTTP): remove stale connections, expired data and orphan subscriptions.

Cloud Scheduler calls it every 5 minutes with an OIDC token. The token is checked
by Cloud Run's IAM before the request reaches this code: the function is deployed
with --no-allow-unauthenticated and only the scheduler's service account holds
run.invoker on it, so this code does not verify the token again.

``?budget_seconds=`` (or the same key in a JSON body) bounds the run; the
answer is ``{"removed": {...}, "complete": bool, "elapsed_seconds": x}``.
"""

from typing import Any

import flask
import functions_framework

from functions.cleanup.run import respond
from shared.config import get_settings
from shared.logs import configure_logging, reset_trace, set_trace

configure_logging(get_settings().log_level)


@functions_framework.http
def cleanup(request: flask.Request) -> tuple[Any, int, dict[str, str]]:
    settings = get_settings()
    trace = set_trace(request.headers.get("X-Cloud-Trace-Context"), settings.project_id)
    try:
        budget = request.args.get("budget_seconds")
        if budget is None and request.is_json:
            body = request.get_json(silent=True)
            if isinstance(body, dict) and body.get("budget_seconds") is not None:
                budget = str(body["budget_seconds"])
        status, payload = respond(budget, settings)
        return flask.jsonify(payload), status, {"Cache-Control": "no-store"}
    finally:
        reset_trace(trace)
