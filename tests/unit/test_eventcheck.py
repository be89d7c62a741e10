"""The fast path of the event contract (shared.contracts.eventcheck) never disagrees with marshmallow: for
any payload `accept` returns None or exactly the event `validate_event` loads, in wire form
(`to_wire`: same values, same types, same key order), and for any message `accept_stored`
returns None or exactly what `load_stored` returns (UTC datetimes); every example event takes
the fast path. Here every example and every single change of one; random combinations of
changes (1500 each) are in tests/fuzz/test_eventcheck_fuzz.py."""
from shared.contracts.eventcheck import accept, accept_stored
from services.intake.openapi import EXAMPLES, example_event
from shared.contracts.events import load_stored, to_wire, validate_event

from helpers.eventcheck import POOL, clone, dump, paths, slow_stored, slow_wire, stored


def test_every_example_takes_the_fast_path_with_the_same_result():
    for etype in EXAMPLES:
        e = example_event(etype)
        fast = accept(clone(e))
        assert fast is not None, etype
        assert dump(fast) == dump(to_wire(validate_event(e)[0])), etype


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
        for path in [p for p in paths(base) if p]:
            for value in POOL:
                payload = clone(base)
                parent = payload
                for k in path[:-1]:
                    parent = parent[k]
                parent[path[-1]] = clone(value)
                yield (etype, path, value), payload


def _agree_exhaustively(bases, fast_path, slow_path):
    """The fast path returns None or exactly the slow path's result for every single change."""
    checked = fast_taken = 0
    for label, payload in _single_replacements(bases):
        fast = fast_path(clone(payload))
        slow = slow_path(payload)                 # a fresh copy already: no other reader
        checked += 1
        if fast is not None:
            fast_taken += 1
            assert slow is not None, label
            assert dump(fast) == dump(slow), label
    assert checked > 5000 and fast_taken > 100, (checked, fast_taken)


def test_every_single_replacement_agrees_with_marshmallow():
    """Exhaustive: each value of POOL at each position of each example event (the random test
    in tests/fuzz combines changes but may miss a rare position, e.g. an integer set to a bool)."""
    _agree_exhaustively([(t, example_event(t)) for t in sorted(EXAMPLES)], accept, slow_wire)


def test_every_example_message_takes_the_stored_fast_path_with_the_same_result():
    for etype in EXAMPLES:
        message = stored(example_event(etype))
        fast = accept_stored(clone(message))
        assert fast is not None, etype
        assert dump(fast) == dump(load_stored(message)), etype
        assert list(fast) == list(load_stored(message))           # same key order


def test_every_single_replacement_in_a_message_agrees_with_load_stored():
    _agree_exhaustively([(t, stored(example_event(t))) for t in sorted(EXAMPLES)], accept_stored,
                        slow_stored)
