"""Check monitoring files (log-based metrics, alert policies, dashboards) against the API message schemas of the SDK.

Run with the SDK's own Python (tests/ops/test_monitoring_schema.py does):
    python gcloud_schema_check.py SDK_ROOT FILE...
Prints one line per file, "OK" or "BAD <reason>"; nothing leaves the machine.
"""

from __future__ import annotations

import json
import sys
from typing import Any


def main() -> int:
    root = sys.argv[1]
    sys.path[:0] = [f"{root}/lib", f"{root}/lib/third_party"]
    from apitools.base.protorpclite import messages
    from apitools.base.py import encoding
    from googlecloudsdk.core import yaml
    from googlecloudsdk.generated_clients.apis.logging.v2 import logging_v2_messages
    from googlecloudsdk.generated_clients.apis.monitoring.v1 import monitoring_v1_messages
    from googlecloudsdk.generated_clients.apis.monitoring.v3 import monitoring_v3_messages

    def unknown(message: Any, path: str = "") -> list[str]:
        found = [f"{path}/{name}" for name in message.all_unrecognized_fields()]
        for field in message.all_fields():
            value = message.get_assigned_value(field.name)
            if isinstance(field, messages.MessageField) and value is not None:
                for i, item in enumerate(value if field.repeated else [value]):
                    if isinstance(item, messages.Message):
                        found += unknown(item, f"{path}/{field.name}[{i}]")
        return found

    for path in sys.argv[2:]:
        if "/metrics/" in path:
            kind = logging_v2_messages.LogMetric
        elif "/dashboards/" in path:
            kind = monitoring_v1_messages.Dashboard
        else:
            kind = monitoring_v3_messages.AlertPolicy
        try:
            with open(path) as handle:
                data = json.loads(json.dumps(yaml.load(handle.read())))
            problems = unknown(encoding.PyValueToMessage(kind, data))
        except Exception as exc:  # reported per file
            problems = [repr(exc)]
        print(f"{path} {'OK' if not problems else 'BAD ' + ', '.join(problems)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
