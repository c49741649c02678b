"""Cloud Run service: per-user SSE streams and the notification history (SPEC sections 4 and 5).

Run with ``python -m functions.stream.serve`` (see docs/stream.md);
everything is built from ``functions.stream`` at startup (ASGI lifespan).
"""

from functions.stream.app import create_app
from functions.stream.config import get_stream_settings
from shared.logs import configure_logging

configure_logging(get_stream_settings().log_level)

app = create_app()
