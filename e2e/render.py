"""Render the deployment manifests with the real tools: ``helm template``
and ``kubectl kustomize``.

A *route* is one way a user deploys: a kustomize directory, or the chart with
one of its ``chart/ci/*-values.yaml`` files. Route names pair them up:
``base``, ``dev`` and ``prod`` exist for both tools and must render the same
Knative Service.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
CHART = ROOT / "chart"
KUSTOMIZE = ROOT / "kustomize"
RELEASE = "websocket-server"

__all__ = [
    "CHART",
    "KUSTOMIZE",
    "ROOT",
    "RenderError",
    "Route",
    "find",
    "find_tool",
    "helm_template",
    "is_hook",
    "knative_service",
    "kustomize_build",
    "routes",
]


class RenderError(RuntimeError):
    """A tool refused to render; the message is the tool's own."""


def find_tool(name: str) -> str:
    """``$HELM``/``$KUBECTL``, else the pinned copy in ``.tools/bin``, else PATH."""
    env = os.environ.get(name.upper())
    if env:
        return env
    local = ROOT / ".tools" / "bin" / name
    if local.exists():
        return str(local)
    found = shutil.which(name)
    if not found:
        raise RenderError(f"{name} not found: run scripts/setup.sh (or put {name} on PATH)")
    return found


def _run(cmd: list[str]) -> list[dict[str, Any]]:
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)
    if proc.returncode != 0:
        raise RenderError(proc.stderr.strip() or f"{cmd[0]} exited {proc.returncode}")
    return [doc for doc in yaml.safe_load_all(proc.stdout) if doc]


def helm_template(
    values: list[Path] | None = None,
    set_values: dict[str, str] | None = None,
    release: str = RELEASE,
    namespace: str = "default",
    include_tests: bool = True,
) -> list[dict[str, Any]]:
    """``helm template`` of the chart; hooks (the test Pod) included."""
    cmd = [find_tool("helm"), "template", release, str(CHART), "--namespace", namespace]
    for path in values or []:
        cmd += ["-f", str(path)]
    for key, value in (set_values or {}).items():
        cmd += ["--set", f"{key}={value}"]
    if not include_tests:
        cmd.append("--skip-tests")
    return _run(cmd)


def kustomize_build(path: Path) -> list[dict[str, Any]]:
    """``kubectl kustomize`` of a directory."""
    return _run([find_tool("kubectl"), "kustomize", str(path)])


@dataclass(frozen=True)
class Route:
    """One way to deploy: ``tool`` is "helm" or "kustomize"; ``name`` pairs
    the two (a kustomize overlay and the chart's ci/<name>-values.yaml)."""

    tool: str
    name: str
    source: Path

    @property
    def id(self) -> str:
        return f"{self.tool}-{self.name}"

    @property
    def mode(self) -> str:
        """ "kubernetes" (Deployment + Service: the route ``kubernetes`` and
        those named ``kubernetes-...``) or "knative" (a Knative Service)."""
        return "kubernetes" if self.name.split("-")[0] == "kubernetes" else "knative"

    def render(self, namespace: str = "default") -> list[dict[str, Any]]:
        if self.tool == "helm":
            return helm_template([self.source], namespace=namespace)
        docs = kustomize_build(self.source)
        for doc in docs:
            doc.setdefault("metadata", {}).setdefault("namespace", namespace)
        return docs


def routes() -> list[Route]:
    """Every route, kustomize's and helm's, paired by name."""
    found = [Route("kustomize", "base", KUSTOMIZE / "base")]
    for overlay in sorted((KUSTOMIZE / "overlays").iterdir()):
        if (overlay / "kustomization.yaml").exists():
            found.append(Route("kustomize", overlay.name, overlay))
    for values in sorted((CHART / "ci").glob("*-values.yaml")):
        name = values.name.removesuffix("-values.yaml")
        found.append(Route("helm", "base" if name == "default" else name, values))
    return found


def knative_service(docs: list[dict[str, Any]]) -> dict[str, Any]:
    """The one Knative Service among rendered documents."""
    services = [
        d
        for d in docs
        if d.get("apiVersion") == "serving.knative.dev/v1" and d.get("kind") == "Service"
    ]
    if len(services) != 1:
        raise RenderError(f"expected one Knative Service, found {len(services)}")
    return services[0]


def is_hook(doc: dict[str, Any]) -> bool:
    return "helm.sh/hook" in doc.get("metadata", {}).get("annotations", {})


def find(docs: list[dict[str, Any]], api_version: str, kind: str) -> dict[str, Any]:
    """The one non-hook document of that apiVersion and kind."""
    found = [
        d
        for d in docs
        if d.get("apiVersion") == api_version and d.get("kind") == kind and not is_hook(d)
    ]
    if len(found) != 1:
        raise RenderError(f"expected one {api_version} {kind}, found {len(found)}")
    return found[0]
