"""The image built from this checkout's Dockerfile, run as a container: it
imports the wire core compiled by mypyc, not the pure-Python source, and its
runtime stage carries no C compiler (only the build stage has one).

Runs with the docker client that reaches the image (``$E2E_DOCKER``: the
local cluster's, ``scripts/local-cluster.sh docker``, in
``scripts/local-e2e.env``; the runner's ``docker`` in ``scripts/kind-e2e.sh``)
on ``$E2E_IMAGE``. Without them both tests are skipped with the reason, or
fail where ``E2E_REQUIRE_CLUSTER`` promises a cluster.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
IMAGE = os.environ.get("E2E_IMAGE", "")
DOCKER = shlex.split(os.environ.get("E2E_DOCKER", ""))

PROBE = """
import json, shutil
import server.wire as wire
print(json.dumps({
    "compiled": wire.COMPILED,
    "file": wire.__file__,
    "accept": wire.accept_key("dGhlIHNhbXBsZSBub25jZQ=="),
    "compilers": [c for c in ("gcc", "cc", "x86_64-linux-gnu-gcc", "aarch64-linux-gnu-gcc")
                  if shutil.which(c)],
}))
"""


@pytest.fixture(scope="module")
def image_report() -> dict[str, object]:
    if not (IMAGE and DOCKER):
        reason = "E2E_IMAGE and E2E_DOCKER name no image built from this Dockerfile"
        if os.environ.get("E2E_REQUIRE_CLUSTER"):
            pytest.fail(f"E2E_REQUIRE_CLUSTER is set, but: {reason}")
        pytest.skip(reason)
    run = subprocess.run(
        [*DOCKER, "run", "--rm", "--network", "none", "--entrypoint", "python", IMAGE, "-c", PROBE],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr
    report: dict[str, object] = json.loads(run.stdout)
    return report


def test_the_image_runs_the_compiled_wire_core(image_report: dict[str, object]) -> None:
    assert image_report["compiled"] is True, image_report["file"]
    assert str(image_report["file"]).endswith(".so"), image_report["file"]
    # RFC 6455 section 1.3's example, computed by the compiled module.
    assert image_report["accept"] == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="


def test_the_runtime_image_has_no_c_compiler(image_report: dict[str, object]) -> None:
    assert image_report["compilers"] == []
