"""The fast path of the event contract (shared.contracts.eventcheck) never disagrees with marshmallow: for
any payload `accept` returns None or exactly the event `validate_event` loads, in wire form
(`to_wire`: same values, same types, same key order), and for any message `accept_stored`
returns None or exactly what `load_stored` returns (UTC datetimes); every example event takes
the fast path."""
import copy
import json

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shared.contracts.eventcheck import accept, accept_stored
from services.intake.openapi import EXAMPLES, example_event
from shared.contracts.events import load_stored, to_wire, validate_event

POOL = [None, "", "x", "HS-1\n", "HS 1", 0, 1, -1, 1.5, True, False, 3650, 3651, [], ["a"], ["A"],
        ["a", 1], {}, {"id": "x"}, {"id": ""}, {"id": "x", "extra": 1}, "2024-11-05T08:15:00",
        "2024-11-05T08:15:00Z", "2024-11-05T08:15:00+07:00", "2024-11-05", "2024-13-05T08:15:00Z",
        "not a date", "citizen", "organization", "approved", "wd", "x" * 65, "x" * 2001,
        "a@b.vn", "not-an-email", "0901234567", "+84 90 123 4567", "000.00.17.H56", "1.001234",
        "7f0c1a523b1e4d4a9a536a0e2f1b0001", "{7f0c1a52-3b1e-4d4a-9a53-6a0e2f1b0001}",
        "urn:uuid:7f0c1a52-3b1e-4d4a-9a53-6a0e2f1b0001", "7F0C1A52-3B1E-4D4A-9A53-6A0E2F1B0001",
        "dossier.received", "dossier.resolved", "direct", "reception", {"value": 5, "unit": "wd"},
        {"value": True, "unit": "wd"}, {"value": "5", "unit": "wd"},
        # instants in the other shapes datetime.fromisoformat takes, and out of UTC's range
        "2024-11-05 08:15:00+07:00", "2024-11-05T08:15+07:00", "20241105T081500+0700",
        "2024-11-05T08:15:00.123456+07:00", "2024-11-05T08:15:00-00:00", "2024-11-05T08:15:00+25:00",
        "0001-01-01T00:00:00+07:00", "9999-12-31T23:59:59-07:00", "2024-11-05T08:15:00+07:00 ",
        b"2024-11-05T08:15:00Z".decode() + "\u0000", 5.0, 3650.0, 2 ** 64]


def _clone(obj):
    """A deep copy of a JSON-like payload (copy.deepcopy's memo bookkeeping made it most of the
    cost of the sweeps below); anything else goes through copy.deepcopy."""
    if isinstance(obj, dict):
        return {k: _clone(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_clone(v) for v in obj]
    if obj is None or isinstance(obj, (str, int, float)):
        return obj
    return copy.deepcopy(obj)


def _paths(obj, prefix=()):
    yield prefix
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from _paths(v, prefix + (k,))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from _paths(v, prefix + (i,))


def _dump(event) -> str:
    return json.dumps(event, default=lambda o: f"{type(o).__name__}:{o.isoformat()}", ensure_ascii=False)


# built once: a strategy built inside every draw is labelled (hashed) again each time
_TYPES = st.sampled_from(sorted(EXAMPLES))
_VALUES = st.sampled_from(POOL)
_OPS = st.sampled_from(["set", "set", "delete", "add"])
_EXTRA_KEYS = st.sampled_from(["extra", "note", "digitized", "actor"])


@st.composite
def payloads(draw):
    event = _clone(example_event(draw(_TYPES)))
    for _ in range(draw(st.integers(0, 3))):
        paths = [p for p in _paths(event) if p]
        path = paths[draw(st.integers(0, len(paths) - 1))]
        parent = event
        for k in path[:-1]:
            parent = parent[k]
        op = draw(_OPS)
        if op == "delete":
            del parent[path[-1]]
        elif op == "add" and isinstance(parent, dict):
            parent[draw(_EXTRA_KEYS)] = _clone(draw(_VALUES))
        else:
            parent[path[-1]] = _clone(draw(_VALUES))
    return event


def test_every_example_takes_the_fast_path_with_the_same_result():
    for etype in EXAMPLES:
        e = example_event(etype)
        fast = accept(_clone(e))
        assert fast is not None, etype
        assert _dump(fast) == _dump(to_wire(validate_event(e)[0])), etype


@settings(max_examples=1500, deadline=None, database=None, suppress_health_check=list(HealthCheck))
@given(payloads())
def test_fast_path_agrees_with_marshmallow(payload):
    slow, errors = validate_event(_clone(payload))
    fast = accept(_clone(payload))
    if fast is not None:
        assert slow is not None, errors
        assert _dump(fast) == _dump(to_wire(slow))


def test_not_an_object_or_unknown_type_is_left_to_marshmallow():
    assert accept([]) is None and accept("x") is None and accept(None) is None
    assert accept(dict(example_event("dossier.received"), type="dossier.unknown")) is None
    assert accept(dict(example_event("dossier.received"), data=[])) is None


def test_a_type_that_is_not_a_string_is_an_error_not_a_crash():
    for bad in ([], {}, ["dossier.received"]):
        payload = dict(example_event("dossier.received"), type=bad)
        assert accept(payload) is None
        event, errors = validate_event(payload)
        assert event is None and [e.field for e in errors] == ["type"]


def _single_replacements(bases):
    """(label, payload) for each value of POOL at each position of each base payload."""
    for etype, base in bases:
        for path in [p for p in _paths(base) if p]:
            for value in POOL:
                payload = _clone(base)
                parent = payload
                for k in path[:-1]:
                    parent = parent[k]
                parent[path[-1]] = _clone(value)
                yield (etype, path, value), payload


def _agree_exhaustively(bases, fast_path, slow_path):
    """The fast path returns None or exactly the slow path's result for every single change."""
    checked = fast_taken = 0
    for label, payload in _single_replacements(bases):
        slow = slow_path(_clone(payload))
        fast = fast_path(_clone(payload))
        checked += 1
        if fast is not None:
            fast_taken += 1
            assert slow is not None, label
            assert _dump(fast) == _dump(slow), label
    assert checked > 5000 and fast_taken > 100, (checked, fast_taken)


def test_every_single_replacement_agrees_with_marshmallow():
    """Exhaustive: each value of POOL at each position of each example event (the random test
    above combines changes but may miss a rare position, e.g. an integer set to a bool)."""
    _agree_exhaustively([(t, example_event(t)) for t in sorted(EXAMPLES)], accept, _slow_wire)


def _slow_wire(payload):
    """marshmallow's answer in wire form, None when invalid or with no UTC form."""
    event, _ = validate_event(payload)
    try:
        return None if event is None else to_wire(event)
    except OverflowError:
        return None

def _stored(event: dict, recorded_at="2024-11-05T01:16:02.123456+00:00") -> dict:
    """The Kafka message of a posted event: the event plus `recorded_at`."""
    return dict(event, recorded_at=recorded_at)


def _slow_stored(message):
    try:
        return load_stored(_clone(message))
    except ValueError:
        return None


def test_every_example_message_takes_the_stored_fast_path_with_the_same_result():
    for etype in EXAMPLES:
        message = _stored(example_event(etype))
        fast = accept_stored(_clone(message))
        assert fast is not None, etype
        assert _dump(fast) == _dump(load_stored(message)), etype
        assert list(fast) == list(load_stored(message))           # same key order


@settings(max_examples=1500, deadline=None, database=None, suppress_health_check=list(HealthCheck))
@given(payloads(), st.sampled_from(["2024-11-05T01:16:02.123456+00:00", "2024-11-05T08:16:02+07:00",
                                    "2024-11-05T01:16:02", None, 5, "x"]))
def test_stored_fast_path_agrees_with_load_stored(payload, recorded_at):
    message = dict(payload) if isinstance(payload, dict) else payload
    if recorded_at is not None:
        message["recorded_at"] = recorded_at
    slow = _slow_stored(message)
    fast = accept_stored(_clone(message))
    if fast is not None:
        assert slow is not None
        assert _dump(fast) == _dump(slow)


def test_every_single_replacement_in_a_message_agrees_with_load_stored():
    _agree_exhaustively([(t, _stored(example_event(t))) for t in sorted(EXAMPLES)], accept_stored,
                        _slow_stored)
