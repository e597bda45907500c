"""What tests/ and bench/ both need, written once: a server process
(:mod:`testkit.process`), a ``/metrics`` reader (:mod:`testkit.metrics`) and a
client frame builder (:mod:`testkit.frames`).

A top-level package rather than ``tests/support``: ``bench/`` scripts run as
``python bench/run.py`` from a checkout without pytest, and importing from
``tests`` would make the benchmark depend on the test suite. ``testkit``
imports only the standard library and prometheus_client (a dependency of the
server), never ``server`` itself nor pytest, so the helpers stay independent
of the code they check. Not shipped: the wheel holds ``server`` only.
"""
