"""A fast path for the event contract: the marshmallow schemas of `shared.contracts.events`, compiled once
into plain functions, for events that are valid. Two entry points, one compiler:

- `accept(payload)` (intake: a posted event) returns exactly what
  `shared.contracts.events.to_wire(validate_event(payload)[0])` is — instants as UTC ISO 8601 strings;
- `accept_stored(value)` (sla and `motcua rebuild`: a message of `dossier.events`, with
  `recorded_at`) returns exactly what `shared.contracts.events.load_stored(value)` does — instants as aware
  UTC datetimes.

Both give the same values in the same key order when the input is valid, and None whenever
anything is unusual — wrong type, missing or unknown field, a field or validator error. The caller
then runs marshmallow (`validate_event` / `load_stored`), which reports every error at once; so the
answers never differ, only valid events skip marshmallow's per-field bookkeeping.

Little is re-implemented: each leaf field is loaded by the schema's own field object
(`Field.deserialize`: required/null checks, conversion, validators) and only the schema walk is
compiled — except the common leaves, inlined with the field's own parts: strings and lists of
strings (a type check, the field's validators), ISO instants (`AwareDateTime`: the field's own
parse function, the awareness check, validators, then the wire form — no second walk), UUIDs and
strict integers. Anything unusual about a value (another type, a parse error) bails to
marshmallow. A schema with hooks, renamed keys, `unknown` other than RAISE or a nested field with
options this compiler does not know is not compiled: such events always take marshmallow.
"""
from __future__ import annotations

import threading
import uuid
from datetime import timezone
from typing import Any, Callable

from marshmallow import RAISE, fields
from marshmallow.exceptions import ValidationError
from marshmallow.utils import missing

from shared.contracts.events import DATA_SCHEMAS, Envelope, StoredEnvelope, to_utc, to_wire

_UTC = timezone.utc


def _wire_instant(value):
    return value.astimezone(_UTC).isoformat()


def _utc_instant(value):
    return value.astimezone(_UTC)


class _Bail(Exception):
    """Not certainly valid: let marshmallow decide and explain."""


def _plain(field) -> bool:
    return not (field.pre_load or field.post_load or field.allow_none)


def _checked(validators: tuple, value):
    """The field's own validators, as `validate.And` runs them (a ValidationError propagates)."""
    for v in validators:
        if v(value) is False:
            raise _Bail
    return value


def _string_loader(field) -> Callable[[Any], Any] | None:
    """`String.deserialize` for a present value, inlined: a `str` (bytes and everything else go
    to marshmallow), then the field's own validators (as `validate.And` runs them)."""
    if not (isinstance(field, fields.String) and _plain(field)
            and type(field)._deserialize is fields.String._deserialize):
        return None
    validators = tuple(field.validators)

    def load(value):
        if type(value) is not str:
            raise _Bail
        return _checked(validators, value)
    return load


def _instant_loader(field, out: Callable) -> Callable[[Any], Any] | None:
    """`AwareDateTime(format="iso")` for a present value, inlined, in wire form: a `str` parsed by
    the field's own ISO function, aware (no default time zone), the field's validators, then
    `out` (UTC ISO 8601 as `to_wire` writes it, or the UTC datetime as `to_utc` gives it; an
    OverflowError propagates: marshmallow explains)."""
    fmt = getattr(field, "format", None) or getattr(field, "DEFAULT_FORMAT", None)
    if not (type(field) is fields.AwareDateTime and _plain(field)
            and field.default_timezone is None and fmt in ("iso", "iso8601")):
        return None
    parse = field.DESERIALIZATION_FUNCS[fmt]
    validators = tuple(field.validators)

    def load(value):
        if type(value) is not str:
            raise _Bail
        try:
            ret = parse(value)
        except (TypeError, AttributeError, ValueError):
            raise _Bail from None
        tz = ret.tzinfo
        if tz is None or tz.utcoffset(ret) is None:
            raise _Bail
        return out(_checked(validators, ret))
    return load


def _uuid_loader(field) -> Callable[[Any], Any] | None:
    """`UUID.deserialize` for a present `str`, inlined (`uuid.UUID(value)`, then validators)."""
    if not (type(field) is fields.UUID and _plain(field)):
        return None
    validators = tuple(field.validators)

    def load(value):
        if type(value) is not str:
            raise _Bail
        try:
            ret = uuid.UUID(value)
        except (ValueError, AttributeError, TypeError):
            raise _Bail from None
        return _checked(validators, ret)
    return load


def _int_loader(field) -> Callable[[Any], Any] | None:
    """`Integer(strict=True)` for a present value, inlined: an `int` (never a bool), validators."""
    if not (type(field) is fields.Integer and _plain(field) and field.strict
            and not field.as_string):
        return None
    validators = tuple(field.validators)

    def load(value):
        if type(value) is not int:
            raise _Bail
        return _checked(validators, value)
    return load


def _leaf_loader(name: str, field, instant: Callable) -> Callable[[Any], Any]:
    """A present value of a non-nested field, loaded as `field.deserialize` would, its instants
    put in the output form (`instant`: wire string or UTC datetime)."""
    for fast in (_string_loader(field), _instant_loader(field, instant), _uuid_loader(field),
                 _int_loader(field)):
        if fast is not None:
            return fast
    if (type(field) is fields.List and _plain(field)
            and (item := _string_loader(field.inner)) is not None):
        validators = tuple(field.validators)

        def load_list(value):
            if type(value) is not list:
                raise _Bail
            return _checked(validators, [item(x) for x in value])
        return load_list
    convert = to_wire if instant is _wire_instant else to_utc
    return lambda value: convert(field.deserialize(value, name, None))


def _placeholder(field) -> Callable[[Any], Any] | None:
    """A plain `fields.Dict` whose value the caller replaces (the envelope's `data`, loaded by
    its type's schema): only its position in the output is kept here."""
    if type(field) is fields.Dict and _plain(field) and not field.validators \
            and field.key_field is None and field.value_field is None:
        def keep(value):
            if type(value) is not dict:
                raise _Bail
            return value
        return keep
    return None


def _compile(schema_cls, instant: Callable, replaced: frozenset = frozenset()
             ) -> Callable[[Any], dict] | None:
    schema = schema_cls()
    if any(schema._hooks.values()) or schema.unknown != RAISE or schema.many or schema.partial:
        return None
    specs: list[tuple[str, Any, Callable | None, Callable | None]] = []
    for name, field in schema.load_fields.items():
        if field.data_key not in (None, name) or field.attribute not in (None, name):
            return None
        sub = leaf = None
        if isinstance(field, fields.Nested):
            nested = field.nested
            if (not isinstance(nested, type) or field.many or field.unknown is not None
                    or field.only or field.exclude or field.pre_load or field.post_load
                    or field.load_default is not missing):
                return None
            sub = _compile(nested, instant)
            if sub is None:
                return None
        elif name in replaced:
            leaf = _placeholder(field)
            if leaf is None:
                return None
        else:
            leaf = _leaf_loader(name, field, instant)
        specs.append((name, field, sub, leaf))
    names = frozenset(n for n, _, _, _ in specs)

    def load(data: Any) -> dict:
        if type(data) is not dict or not names.issuperset(data):
            raise _Bail
        out = {}
        for name, field, sub, leaf in specs:
            value = data.get(name, missing)
            if value is missing:
                if field.required:
                    raise _Bail
                default = field.load_default
                if default is not missing:
                    out[name] = default() if callable(default) else default
            elif sub is None:
                out[name] = leaf(value)
            else:
                value = sub(value)
                field._validate(value)
                out[name] = value
        return out
    return load


class _Compiled:
    def __init__(self, envelope, instant: Callable):
        self.envelope = _compile(envelope, instant, replaced=frozenset({"data"}))
        self.data = {etype: _compile(cls, instant) for etype, cls in DATA_SCHEMAS.items()}


_compiled: dict[str, _Compiled] = {}
_lock = threading.Lock()


def _schemas(kind: str) -> _Compiled:
    c = _compiled.get(kind)
    if c is None:
        with _lock:
            c = _compiled.get(kind)
            if c is None:
                c = _compiled[kind] = (_Compiled(Envelope, _wire_instant) if kind == "wire"
                                       else _Compiled(StoredEnvelope, _utc_instant))
    return c


def _accept(c: _Compiled, payload: Any) -> dict | None:
    if c.envelope is None or type(payload) is not dict:
        return None
    etype = payload.get("type")
    data_load = c.data.get(etype) if type(etype) is str else None
    data = payload.get("data")
    if data_load is None or type(data) is not dict:
        return None
    try:
        event = c.envelope(payload)
        event["data"] = data_load(data)
    except (_Bail, ValidationError, OverflowError):   # OverflowError: an instant beyond UTC's range
        return None
    event["event_id"] = str(event["event_id"])
    return event


def accept(payload: Any) -> dict | None:
    """The posted event in wire form if `payload` is certainly valid — exactly
    `to_wire(validate_event(payload)[0])`: instants already UTC ISO 8601 strings — else None."""
    return _accept(_schemas("wire"), payload)


def accept_stored(value: Any) -> dict | None:
    """The event of a `dossier.events` message if `value` is certainly valid — exactly
    `load_stored(value)`: instants as aware UTC datetimes — else None (then `load_stored` says
    what is wrong)."""
    return _accept(_schemas("stored"), value)
