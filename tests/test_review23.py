"""Review of issue 23's per-message work and issue 21's backlog cap.

Run both pure and compiled (scripts/build-speedups.sh, then
WS_EXPECT_COMPILED_WIRE=1): each test holds in both forms."""

from __future__ import annotations

from server import wire


def test_message_matches_positionally() -> None:
    """``case Message(data)`` (the documented ``__match_args__``) works in
    the compiled core too: mypyc took a class-level ``__match_args__`` of a
    native class for an instance attribute's default, and the match raised
    ``TypeError: Message.__match_args__ must be a tuple``."""
    event: wire.Event = wire.Message("hi")
    match event:
        case wire.Message(data):
            assert data == "hi"
        case _:
            raise AssertionError(event)
    assert wire.Message.__match_args__ == ("data",)
