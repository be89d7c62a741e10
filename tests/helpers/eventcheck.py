"""Payloads for the tests that hold the event contract's fast path (shared.contracts.eventcheck)
to marshmallow: a pool of awkward values, example events changed at random, and the slow paths'
answers in comparable form. Used by tests/unit/test_eventcheck.py (exhaustive single changes) and
tests/fuzz/test_eventcheck_fuzz.py (random combinations)."""
import copy
import json

from hypothesis import strategies as st

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


def clone(obj):
    """A deep copy of a JSON-like payload, several times cheaper than copy.deepcopy (whose memo
    bookkeeping was most of the cost of the sweeps); anything else goes through copy.deepcopy."""
    if isinstance(obj, dict):
        return {k: clone(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [clone(v) for v in obj]
    if obj is None or isinstance(obj, (str, int, float)):
        return obj
    return copy.deepcopy(obj)


def paths(obj, prefix=()):
    """Every position in a payload, as a tuple of keys and indexes (the root is ())."""
    yield prefix
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from paths(v, prefix + (k,))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from paths(v, prefix + (i,))


def dump(event) -> str:
    """Comparable text of an event: same values, same types, same key order."""
    return json.dumps(event, default=lambda o: f"{type(o).__name__}:{o.isoformat()}", ensure_ascii=False)


# built once: a strategy built inside every draw is labelled (hashed) again each time
_TYPES = st.sampled_from(sorted(EXAMPLES))
_VALUES = st.sampled_from(POOL)
_OPS = st.sampled_from(["set", "set", "delete", "add"])
_EXTRA_KEYS = st.sampled_from(["extra", "note", "digitized", "actor"])


@st.composite
def payloads(draw):
    """An example event with up to three random changes (set, delete, add a key)."""
    event = clone(example_event(draw(_TYPES)))
    for _ in range(draw(st.integers(0, 3))):
        where = [p for p in paths(event) if p]
        path = where[draw(st.integers(0, len(where) - 1))]
        parent = event
        for k in path[:-1]:
            parent = parent[k]
        op = draw(_OPS)
        if op == "delete":
            del parent[path[-1]]
        elif op == "add" and isinstance(parent, dict):
            parent[draw(_EXTRA_KEYS)] = clone(draw(_VALUES))
        else:
            parent[path[-1]] = clone(draw(_VALUES))
    return event


def slow_wire(payload):
    """marshmallow's answer in wire form, None when invalid or with no UTC form."""
    event, _ = validate_event(payload)
    try:
        return None if event is None else to_wire(event)
    except OverflowError:
        return None


def stored(event: dict, recorded_at="2024-11-05T01:16:02.123456+00:00") -> dict:
    """The Kafka message of a posted event: the event plus `recorded_at`."""
    return dict(event, recorded_at=recorded_at)


def slow_stored(message):
    """load_stored's answer, None when it refuses the message."""
    try:
        return load_stored(clone(message))
    except ValueError:
        return None
