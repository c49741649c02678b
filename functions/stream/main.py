"""Cloud Run service: per-user SSE streams and the notification history (SPEC sections 4 and 5).

Run with ``python -m functions.stream.serve`` (see docs/stream.md);
everything is built from ``shared.stream`` at startup (ASGI lifespan).
"""

from shared.config import get_settings
from shared.logs import configure_logging
from shared.stream.app import create_app

configure_logging(get_settings().log_level)

app = create_app()
