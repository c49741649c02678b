"""Cloud Function (gen2, Pub/Sub trigger on CONTENT_EVENTS_TOPIC): store and announce one content event.

Return to acknowledge; raise to have Pub/Sub redeliver.
"""

import functions_framework
from cloudevents.http import CloudEvent

from functions.ingest.ingest import ingest_cloud_event
from shared.backends import get_backends
from shared.config import get_settings
from shared.logs import configure_logging

configure_logging(get_settings().log_level)


@functions_framework.cloud_event
def ingest_content_event(cloud_event: CloudEvent) -> None:
    ingest_cloud_event(
        cloud_event.data, str(cloud_event["id"]), get_backends(), get_settings(), cloud_event.get("time")
    )
