"""The kind + Knative job (.github/workflows/e2e.yaml, scripts/kind-*.sh)
cannot run here: what can be checked without GitHub and Docker is checked
here - its pins, where it downloads from, the settings the clock tests of
e2e/test_knative.py depend on, and that a failure keeps its diagnostics."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import yaml

from e2e.test_knative import CLOCK_AGE

ROOT = Path(__file__).resolve().parent.parent
WORKFLOW = ROOT / ".github" / "workflows" / "e2e.yaml"
KIND_UP = ROOT / "scripts" / "kind-up.sh"


def _default(name: str) -> str:
    """A ``NAME=${NAME:-default}`` default of scripts/kind-up.sh."""
    match = re.search(rf"^{name}=\$\{{{name}:-([^}}]*)\}}$", KIND_UP.read_text(), re.M)
    assert match, f"kind-up.sh sets no default for {name}"
    return match.group(1)


def _steps() -> list[dict[str, object]]:
    workflow = yaml.safe_load(WORKFLOW.read_text())
    [job] = workflow["jobs"].values()
    return list(job["steps"])


def test_every_action_is_pinned_by_commit() -> None:
    """In every workflow (a tag can be moved; a commit cannot), and one
    action at one commit across them."""
    pins: dict[str, set[str]] = {}
    for path in sorted((ROOT / ".github" / "workflows").glob("*.y*ml")):
        workflow = yaml.safe_load(path.read_text())
        for job in workflow["jobs"].values():
            for step in job.get("steps", []):
                if "uses" in step:
                    uses = str(step["uses"])
                    assert re.fullmatch(r"[\w.-]+/[\w.-]+@[0-9a-f]{40}", uses), (path.name, step)
                    action, commit = uses.split("@")
                    pins.setdefault(action, set()).add(commit)
    assert {a: c for a, c in pins.items() if len(c) > 1} == {}
    assert "actions/checkout" in pins


def test_a_failure_uploads_kind_logs_and_the_knative_and_kourier_logs() -> None:
    steps = _steps()
    [diagnose] = [s for s in steps if "kind-diagnostics.sh" in str(s.get("run", ""))]
    [upload] = [s for s in steps if "actions/upload-artifact@" in str(s.get("uses", ""))]
    assert diagnose["if"] == upload["if"] == "failure()"
    assert steps.index(diagnose) < steps.index(upload)
    assert steps.index(upload) < steps.index(next(s for s in steps if "kind-down" in str(s)))
    directory = str(diagnose["run"]).split()[-1].strip('"')
    assert directory == "$RUNNER_TEMP/kind-diagnostics"
    assert upload["with"]["path"] == "${{ runner.temp }}/kind-diagnostics"  # type: ignore[index]
    script = (ROOT / "scripts" / "kind-diagnostics.sh").read_text()
    assert "kind export logs" in script
    assert "knative-serving kourier-system" in script


def test_kourier_comes_from_knative_extensions() -> None:
    script = KIND_UP.read_text()
    assert (
        "https://github.com/knative-extensions/net-kourier/releases/download/"
        "knative-$KNATIVE_VERSION" in script
    )
    assert "github.com/knative/net-kourier" not in script.replace(
        "from\n# github.com/knative/net-kourier", ""
    )


def test_kubectl_is_pinned_to_the_nodes_minor_version() -> None:
    kubectl = _default("KUBECTL_VERSION")
    node = _default("KIND_NODE_IMAGE")
    assert re.fullmatch(r"[0-9a-f]{64}", _default("KUBECTL_SHA256"))
    node_version = re.search(r":(v\d+\.\d+)\.\d+@sha256:", node)
    assert node_version, node
    assert kubectl.rsplit(".", 1)[0] == node_version.group(1)
    assert "https://dl.k8s.io/release/$KUBECTL_VERSION/bin/linux/amd64/kubectl" in (
        KIND_UP.read_text()
    )


def test_kind_up_refuses_a_kubectl_of_another_minor_before_downloading(tmp_path: Path) -> None:
    """Run for real, with curl, kind and kubectl stubbed to fail loudly: if
    the check ever came after a download, nothing would be fetched or made."""
    stubs = tmp_path / "stubs"
    stubs.mkdir()
    for tool in ("curl", "kind", "kubectl"):
        (stubs / tool).write_text(f"#!/bin/sh\necho 'stub {tool} called' >&2\nexit 97\n")
        (stubs / tool).chmod(0o755)
    env = {**os.environ, "KIND_NODE_IMAGE": "kindest/node:v1.34.3@sha256:" + "0" * 64}
    env["BIN"] = str(tmp_path / "bin")
    env["PATH"] = f"{stubs}:{env['PATH']}"
    proc = subprocess.run(
        ["bash", str(KIND_UP)], env=env, capture_output=True, text=True, timeout=30, check=False
    )
    assert proc.returncode == 1, proc.stderr
    assert "kubectl v1.35.5 does not match the node's Kubernetes 1.34" in proc.stderr
    assert "stub" not in proc.stderr


def test_the_response_start_default_suits_the_clock_tests() -> None:
    """e2e/test_knative.py needs the default small enough to see it run out,
    and the server's close come after it (kind-up.sh sets it)."""
    value = int(_default("KNATIVE_RESPONSE_START_TIMEOUT"))
    assert 0 < value <= CLOCK_AGE // 2
    assert "revision-response-start-timeout-seconds" in KIND_UP.read_text()


def _exported_default(script: Path, name: str) -> str:
    """An ``export NAME=${NAME:-default}`` default of a script."""
    match = re.search(rf"^export {name}=\$\{{{name}:-([^}}]*)\}}$", script.read_text(), re.M)
    assert match, f"{script.name} exports no default for {name}"
    return match.group(1)


def _after(line: str, word: str) -> str:
    words = line.split()
    return words[words.index(word) + 1]


def test_kind_load_loads_every_image_kind_e2e_names(tmp_path: Path) -> None:
    """scripts/kind-load.sh run for real, with docker and kind stubbed to
    record their arguments (no Docker daemon or kind here): it builds and
    loads the server, the chat example and Redis (from e2e/redis.Dockerfile,
    on stdin), the images scripts/kind-e2e.sh names, and kind-e2e.sh
    promises the backplane's, so e2e/test_backplane.py fails there instead
    of skipping."""
    for part in ("scripts/kind-load.sh", "e2e/redis.Dockerfile"):
        (tmp_path / part).parent.mkdir(exist_ok=True)
        shutil.copy(ROOT / part, tmp_path / part)
    stubs = tmp_path / "stubs"
    stubs.mkdir()
    calls = tmp_path / "calls"
    for tool in ("docker", "kind"):
        (stubs / tool).write_text(
            "#!/bin/sh\n"
            f'echo "{tool} $*" >> {calls}\n'
            "for last; do :; done\n"
            f'if [ "$last" = - ]; then cat > {tmp_path}/stdin; fi\n'
        )
        (stubs / tool).chmod(0o755)
    env = {k: v for k, v in os.environ.items() if k not in ("IMAGE", "CHAT_IMAGE", "REDIS_IMAGE")}
    env["PATH"] = f"{stubs}:{env['PATH']}"
    subprocess.run(
        ["bash", str(tmp_path / "scripts" / "kind-load.sh")], env=env, check=True, timeout=30
    )
    lines = calls.read_text().splitlines()
    built = [_after(line, "-t") for line in lines if line.startswith("docker build")]
    loaded = [_after(line, "docker-image") for line in lines if line.startswith("kind load")]
    kind_e2e = ROOT / "scripts" / "kind-e2e.sh"
    named = [_exported_default(kind_e2e, f"E2E_{n}IMAGE") for n in ("", "CHAT_", "REDIS_")]
    assert built == loaded == named, lines
    assert f"docker build --target chat -t {named[1]} ." in lines
    assert f"docker build -t {named[2]} -" in lines
    assert (tmp_path / "stdin").read_text() == (ROOT / "e2e" / "redis.Dockerfile").read_text()
    assert _exported_default(kind_e2e, "E2E_REQUIRE_BACKPLANE") == "1"
    # kind has DNS: the chat pods reach Redis by its Service's name there
    # (the local cluster has none, and gives them the pod's address).
    assert _exported_default(kind_e2e, "E2E_CLUSTER_DNS") == "1"
    assert "E2E_CLUSTER_DNS" not in (ROOT / "scripts" / "local-e2e.env").read_text()
