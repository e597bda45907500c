"""Which form of the per-message path the tests run against.

scripts/test.sh runs the suite twice: on server/wire.py, server/sendqueue.py
and server/transport.py as they are, then with them compiled by mypyc
(scripts/build-speedups.sh) and WS_EXPECT_COMPILED_WIRE=1.
This fails either run if it did not get the form it was meant to test: a
stale compiled module left in the tree, or a build that silently fell back
to the source."""

from __future__ import annotations

import os

import pytest

from server import mask, sendqueue, transport, wire


def test_the_run_tests_the_form_of_the_core_it_means_to() -> None:
    expected = os.environ.get("WS_EXPECT_COMPILED_WIRE") == "1"
    assert wire.COMPILED is expected, wire.__file__


@pytest.mark.parametrize("module", [sendqueue, transport], ids=lambda m: m.__name__)
def test_the_send_queue_and_transport_are_compiled_with_the_core(module: object) -> None:
    """One build compiles the three modules of the per-message path
    together (their calls to each other are native): never one without
    the others."""
    compiled = not str(getattr(module, "__file__", "")).endswith((".py", ".pyc"))
    assert compiled is wire.COMPILED, getattr(module, "__file__", "")


def test_masking_uses_tornados_c_speedup() -> None:
    assert mask.SPEEDUPS
    assert mask.apply_mask(b"\x01\x02\x03\x04", b"\x01\x02\x03\x04\x05") == b"\x00\x00\x00\x00\x04"
    assert mask._apply_mask_py(b"\x01\x02\x03\x04", b"\x01\x02\x03\x04\x05") == (
        b"\x00\x00\x00\x00\x04"
    )
