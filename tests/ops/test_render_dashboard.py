"""The dashboard image in the docs is drawn from the dashboard's JSON."""

from __future__ import annotations

import json
from pathlib import Path

from PIL import Image

from ops import monitoring
from ops.render_dashboard import main, source
from tests.support import ROOT


def test_the_image_is_drawn_from_the_json_with_the_committed_layout(tmp_path: Path) -> None:
    out = tmp_path / "dashboard.png"
    assert main(["--out", str(out)]) == 0
    with Image.open(out) as drawn, Image.open(ROOT / "docs" / "dashboard.png") as committed:
        # The size follows the layout's rows and columns: a changed layout needs a new image in the docs.
        assert drawn.size == committed.size


def test_every_data_set_is_labelled_with_where_its_numbers_come_from() -> None:
    dashboard = json.loads(monitoring.DASHBOARD_FILE.read_text())
    sources = [
        source(data)
        for tile in dashboard["mosaicLayout"]["tiles"]
        for data in tile["widget"].get("xyChart", {}).get("dataSets", [])
    ]
    assert "PromQL: notifications_deliveries_late, notifications_deliveries" in sources
    assert "notifications_stream_rejections (rate)" in sources
    assert "PromQL: run_googleapis_com:request_count" in sources
    assert "firestore.googleapis.com/document/read_count (rate)" in sources
