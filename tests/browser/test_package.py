"""clients/web as a package: it type-checks, packs what an app needs, and is what the service serves."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.browser.npm import PACKAGE, SERVED_CLIENT, ensure_installed, npm, pack


@pytest.fixture(scope="module", autouse=True)
def typecheck() -> Iterator[Future[str]]:
    """``npm run typecheck`` (tsc --noEmit, strict), started with the module and checked by the last test.

    tsc keeps one core busy for 4 s, as the npm pack below does: on two cores they run side by side.
    """
    ensure_installed(PACKAGE)
    with ThreadPoolExecutor(max_workers=1) as pool:
        yield pool.submit(npm, ["run", "typecheck"], PACKAGE)


def test_the_served_client_is_a_fresh_build_of_the_package(tmp_path: Path) -> None:
    ensure_installed(PACKAGE)
    fresh = tmp_path / "client.js"
    npm(["run", "build", "--", "--served-only", "--out", str(fresh)], PACKAGE)
    assert fresh.read_text() == SERVED_CLIENT.read_text(), (
        "functions/stream/web/client.js is stale: run `npm run build` in clients/web and commit it"
    )


def test_the_tarball_holds_modules_declarations_and_styles_only(tmp_path: Path) -> None:
    report = pack(tmp_path)
    files = {entry["path"] for entry in report["files"]}
    for needed in (
        "package.json",
        "dist/index.js",
        "dist/index.d.ts",
        "dist/react/index.js",
        "dist/react/index.d.ts",
        "dist/styles.css",
        "README.md",
    ):
        assert needed in files, needed
    assert not [path for path in files if path.startswith(("src/", "node_modules/")) or path.endswith(".ts.map")]
    assert (tmp_path / report["filename"]).stat().st_size == report["size"] < 100_000


def test_the_typescript_type_checks(typecheck: Future[str]) -> None:
    typecheck.result(timeout=300)  # npm's output on failure
