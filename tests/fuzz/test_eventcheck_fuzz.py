"""Random combinations of changes to the example events (hypothesis, 1500 each): the event
contract's fast path (shared.contracts.eventcheck) returns None or exactly what marshmallow's
`validate_event` (wire form) or `load_stored` returns. Every single change is checked
exhaustively in tests/unit/test_eventcheck.py."""
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shared.contracts.eventcheck import accept, accept_stored
from shared.contracts.events import to_wire, validate_event

from helpers.eventcheck import clone, dump, payloads, slow_stored


@settings(max_examples=1500, deadline=None, database=None, suppress_health_check=list(HealthCheck))
@given(payloads())
def test_fast_path_agrees_with_marshmallow(payload):
    slow, errors = validate_event(clone(payload))
    fast = accept(clone(payload))
    if fast is not None:
        assert slow is not None, errors
        assert dump(fast) == dump(to_wire(slow))


@settings(max_examples=1500, deadline=None, database=None, suppress_health_check=list(HealthCheck))
@given(payloads(), st.sampled_from(["2024-11-05T01:16:02.123456+00:00", "2024-11-05T08:16:02+07:00",
                                    "2024-11-05T01:16:02", None, 5, "x"]))
def test_stored_fast_path_agrees_with_load_stored(payload, recorded_at):
    message = dict(payload) if isinstance(payload, dict) else payload
    if recorded_at is not None:
        message["recorded_at"] = recorded_at
    slow = slow_stored(message)
    fast = accept_stored(clone(message))
    if fast is not None:
        assert slow is not None
        assert dump(fast) == dump(slow)
