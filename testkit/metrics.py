"""A ``/metrics`` page read by prometheus_client's own parser
(``text_string_to_metric_families``), one sample looked up by name and labels.

A missing sample is an error (:class:`MissingSample`), never 0: a typo in a
name or a label, or a series the server forgot to export, would otherwise
pass every ``== 0`` check. A caller that means "not exported yet counts as 0"
(a labelled counter before its first increment) says so with ``missing=0``.
"""

from __future__ import annotations

import urllib.request

from prometheus_client.parser import text_string_to_metric_families

__all__ = ["Key", "MissingSample", "Samples", "key", "parse", "sample", "scrape"]

#: A sample's name and its labels, sorted.
Key = tuple[str, tuple[tuple[str, str], ...]]
Samples = dict[Key, float]


class MissingSample(AssertionError):
    """No sample of that name with exactly those labels on the page."""


def key(name: str, **labels: str) -> Key:
    return name, tuple(sorted(labels.items()))


def parse(text: str, *, created: bool = True) -> Samples:
    """Every sample on a page; the ``_created`` ones left out unless ``created``
    (their values are start times, which differ between workers and runs)."""
    return {
        key(s.name, **s.labels): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if created or not s.name.endswith("_created")
    }


def sample(page: Samples | str, name: str, *, missing: float | None = None, **labels: str) -> float:
    """The value of ``name{labels}`` (exactly those labels) on ``page`` (its
    text, or :func:`parse`'s result). Raises :class:`MissingSample` if there
    is none, unless ``missing`` gives the value to use instead."""
    samples = parse(page) if isinstance(page, str) else page
    found = samples.get(key(name, **labels))
    if found is not None:
        return found
    if missing is not None:
        return missing
    similar = sorted(k for k in samples if k[0] == name)
    raise MissingSample(f"no sample {key(name, **labels)} on the page; of that name: {similar}")


def scrape(base_url: str, *, created: bool = True, timeout: float = 5.0) -> Samples:
    """``GET base_url/metrics`` on a new connection, parsed; the page must be
    Prometheus' text format."""
    with urllib.request.urlopen(base_url.rstrip("/") + "/metrics", timeout=timeout) as response:
        content_type = response.headers.get("Content-Type", "")
        assert content_type.startswith("text/plain"), content_type
        text = response.read().decode()
    return parse(text, created=created)
