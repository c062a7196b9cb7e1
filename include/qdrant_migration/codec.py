"""One codec for stored records and XComs: dataclasses in, plain JSON out, and back.

:func:`encode` turns a value into JSON types only (dicts with string keys, lists, strings,
numbers, booleans, None): a dataclass becomes the dict of its fields (and of the properties
its class names in ``encoded_properties``), an enum its value, a tuple or set a list. No
enum or other class ever reaches a payload or an XCom (the embedded store pickles payloads:
a class there would be stored with its import path).

:func:`decode` is the way back, directed by the type asked for and checked against it:
dataclasses (frozen or not, nested), enums, ``Literal``, unions and ``Optional``, lists,
tuples, sets, dicts, ``TypedDict`` (keys it does not declare are kept) and ``Any``. A
mismatch raises :class:`CodecError` naming where it is (``plan.source.size: expected int,
got 'x'``). For a dataclass:

* a missing key takes the field's default (records written before the field existed), and
  so does a null where the field's type has none (what older writers stored for "none
  yet"); a missing field without a default is an error;
* a key the class does not know is ignored: a release that added a field can be read by
  the one before it. A record that such a release rewrites loses that key, so a change whose
  loss matters raises the record's schema version instead (``state/schemas.py``), and then
  the older release refuses the record rather than mangle it.

Hand-written rather than pydantic's ``TypeAdapter``: both handle these types, but the
records need ``TypedDict`` keys kept (pydantic drops undeclared ones, and on Python 3.11
refuses ``typing.TypedDict``), properties encoded beside fields, and no coercion of strings
into numbers; measured per checkpoint (docs/development.md, "State"), this codec costs
tens of microseconds, negligible beside the write that follows it.
"""

from __future__ import annotations

import dataclasses
import numbers
import threading
import types
import typing
from collections.abc import Callable
from enum import Enum
from typing import Any, Literal, TypeVar, Union, cast, get_args, get_origin, get_type_hints

T = TypeVar("T")
#: A compiled decoder: the data and the path to it (for errors), to the value.
Decoder = Callable[[Any, str], Any]


class CodecError(ValueError):
    """Data does not fit the type it is decoded as; the message says where and why."""


# -- encoding ----------------------------------------------------------------------------


def encode(value: Any) -> Any:
    """``value`` as JSON types only (see the module's docstring)."""
    kind = type(value)
    if kind in _PLAIN:
        return value
    if kind is list or kind is tuple:
        return [v if type(v) in _PLAIN else encode(v) for v in value]
    if kind is dict:
        return {
            k if type(k) is str else _key(k): v if type(v) in _PLAIN else encode(v)
            for k, v in value.items()
        }
    if isinstance(value, Enum):
        return encode(value.value)
    names = _encoded_names(kind)
    if names is not None:
        return {name: encode(getattr(value, name)) for name in names}
    return _encode_other(value)


#: Types that are JSON as they are (exactly these: not their subclasses, such as enums).
_PLAIN = frozenset({str, int, float, bool, type(None)})


def encode_dict(value: Any) -> dict[str, Any]:
    """A dataclass (or a dict) encoded: a JSON object, typed as one."""
    encoded = encode(value)
    if not isinstance(encoded, dict):
        raise CodecError(f"{type(value).__name__} is not encoded as a JSON object")
    return encoded


def _encode_other(value: Any) -> Any:
    if isinstance(value, str):  # a str subclass that is not an enum
        return str(value)
    if isinstance(value, bool):
        return bool(value)
    if isinstance(value, numbers.Integral):  # numpy's integers among them
        return int(value)
    if isinstance(value, numbers.Real):
        return float(value)
    if isinstance(value, dict):
        return {_key(k): encode(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        items = sorted(value, key=repr) if isinstance(value, set | frozenset) else value
        return [encode(v) for v in items]
    raise CodecError(f"{type(value).__name__} cannot be encoded as JSON: {value!r:.80}")


def _key(key: Any) -> str:
    if isinstance(key, Enum):
        return str(key.value)
    return key if type(key) is str else str(key)


_ENCODED: dict[type, tuple[str, ...] | None] = {}


def _encoded_names(kind: type) -> tuple[str, ...] | None:
    """The names a dataclass is encoded with (its fields, then its encoded properties);
    None for anything else."""
    try:
        return _ENCODED[kind]
    except KeyError:
        pass
    names: tuple[str, ...] | None = None
    if dataclasses.is_dataclass(kind):
        extra: tuple[str, ...] = getattr(kind, "encoded_properties", ())
        names = tuple(f.name for f in dataclasses.fields(kind)) + tuple(extra)
    _ENCODED[kind] = names
    return names


# -- decoding ----------------------------------------------------------------------------


def decode(kind: type[T], data: Any, where: str = "") -> T:
    """``data`` (JSON types) as a ``kind``, checked; ``where`` names it in errors."""
    return cast(T, decoder(kind)(data, where or _name(kind)))


def decode_as(hint: Any, data: Any, where: str = "value") -> Any:
    """:func:`decode` for any type expression (``list[Partition]``, ``int | None``)."""
    return decoder(hint)(data, where)


_DECODERS: dict[Any, Decoder] = {}
_BUILDING = threading.RLock()


def decoder(hint: Any) -> Decoder:
    """The compiled decoder of ``hint`` (made once per type; recursive types allowed)."""
    try:
        return _DECODERS[hint]
    except KeyError:
        pass
    with _BUILDING:
        if hint in _DECODERS:
            return _DECODERS[hint]
        made: list[Decoder] = []
        # A type that contains itself (a lineage's source lineage) finds this forwarder.
        _DECODERS[hint] = lambda data, where: made[0](data, where)
        try:
            made.append(_build(hint))
        except BaseException:
            del _DECODERS[hint]
            raise
        _DECODERS[hint] = made[0]
        return made[0]


def _build(hint: Any) -> Decoder:
    if hint is Any or hint is object:
        return _any
    if hint is None or hint is type(None):
        return _none
    simple = _SIMPLE.get(hint)
    if simple is not None:
        return simple
    origin = get_origin(hint)
    if origin is Literal:
        return _literal(get_args(hint))
    if origin is Union or origin is types.UnionType:
        return _union(get_args(hint))
    if origin in (list, tuple, set, frozenset, dict):
        return _container(origin, get_args(hint))
    if isinstance(hint, type) and issubclass(hint, Enum):
        return _enum(hint)
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        return _dataclass(hint)
    if typing.is_typeddict(hint):
        return _typeddict(hint)
    raise CodecError(f"The codec cannot decode {hint!r}")


def _name(hint: Any) -> str:
    return getattr(hint, "__name__", None) or str(hint)


def _fail(where: str, wanted: str, data: Any) -> CodecError:
    return CodecError(f"{where}: expected {wanted}, got {data!r:.120}")


def _any(data: Any, where: str) -> Any:
    return data


def _none(data: Any, where: str) -> None:
    if data is not None:
        raise _fail(where, "null", data)


def _str(data: Any, where: str) -> str:
    if type(data) is not str:
        if isinstance(data, str):
            return str(data)
        raise _fail(where, "a string", data)
    return data


def _int(data: Any, where: str) -> int:
    if type(data) is not int:
        if isinstance(data, bool) or not isinstance(data, numbers.Integral):
            raise _fail(where, "an integer", data)
        return int(data)
    return data


def _float(data: Any, where: str) -> float:
    if type(data) is not float:
        if isinstance(data, bool) or not isinstance(data, numbers.Real):
            raise _fail(where, "a number", data)
        return float(data)
    return data


def _bool(data: Any, where: str) -> bool:
    if type(data) is not bool:
        raise _fail(where, "true or false", data)
    return data


_SIMPLE: dict[Any, Decoder] = {str: _str, int: _int, float: _float, bool: _bool}


def _literal(choices: tuple[Any, ...]) -> Decoder:
    def literal(data: Any, where: str) -> Any:
        for choice in choices:
            if data == choice and type(data) is type(choice):
                return choice
        raise _fail(where, " or ".join(map(repr, choices)), data)

    return literal


def _union(members: tuple[Any, ...]) -> Decoder:
    optional = type(None) in members
    others = [m for m in members if m is not type(None)]
    if optional and len(others) == 1:
        inner = decoder(others[0])

        def maybe(data: Any, where: str) -> Any:
            return None if data is None else inner(data, where)

        return maybe
    decoders = [decoder(m) for m in members]
    wanted = " or ".join(_name(m) for m in members)

    def union(data: Any, where: str) -> Any:
        for member in decoders:
            try:
                return member(data, where)
            except CodecError:
                continue
        raise _fail(where, wanted, data)

    return union


def _container(origin: Any, args: tuple[Any, ...]) -> Decoder:
    if origin is dict:
        return _mapping(args)
    if origin is tuple and args and args[-1] is not Ellipsis:
        return _fixed(args)
    return _sequence(origin, decoder(args[0]) if args else _any)


def _mapping(args: tuple[Any, ...]) -> Decoder:
    keys = decoder(args[0]) if args else _any
    values = decoder(args[1]) if args else _any
    if args[:1] == (int,):  # JSON keys are strings
        keys = _int_key
    if keys is _str and values is _any:
        return _plain_mapping

    def mapping(data: Any, where: str) -> dict[Any, Any]:
        if not isinstance(data, dict):
            raise _fail(where, "an object", data)
        try:
            return {keys(k, where): values(v, where) for k, v in data.items()}
        except CodecError:
            for k, v in data.items():  # again, to name the entry that failed
                keys(k, where)
                values(v, f"{where}.{k}")
            raise

    return mapping


def _plain_mapping(data: Any, where: str) -> dict[str, Any]:
    if not isinstance(data, dict):
        raise _fail(where, "an object", data)
    return {_str(k, where): v for k, v in data.items()}


def _fixed(args: tuple[Any, ...]) -> Decoder:
    fixed = [decoder(a) for a in args]

    def fixed_tuple(data: Any, where: str) -> tuple[Any, ...]:
        if not isinstance(data, list | tuple) or len(data) != len(fixed):
            raise _fail(where, f"a list of {len(fixed)}", data)
        return tuple(
            part(v, f"{where}[{i}]") for i, (part, v) in enumerate(zip(fixed, data, strict=True))
        )

    return fixed_tuple


def _sequence(make: Callable[[Any], Any], item: Decoder) -> Decoder:
    if item is _any:

        def plain(data: Any, where: str) -> Any:
            if not isinstance(data, list | tuple):
                raise _fail(where, "a list", data)
            return make(data)

        return plain

    def sequence(data: Any, where: str) -> Any:
        if not isinstance(data, list | tuple):
            raise _fail(where, "a list", data)
        try:
            return make([item(v, where) for v in data])
        except CodecError:
            for i, v in enumerate(data):  # again, to name the item that failed
                item(v, f"{where}[{i}]")
            raise

    return sequence


def _int_key(key: Any, where: str) -> int:
    try:
        return int(key)
    except (TypeError, ValueError):
        raise _fail(where, "integer keys", key) from None


def _enum(kind: type[Enum]) -> Decoder:
    def member(data: Any, where: str) -> Enum:
        if isinstance(data, kind):
            return data
        try:
            return kind(data)
        except ValueError:
            wanted = " or ".join(repr(m.value) for m in kind)
            raise _fail(where, wanted, data) from None

    return member


def _dataclass(kind: type) -> Decoder:
    hints = get_type_hints(kind)
    fields = [
        (f.name, _required(f))
        for f in dataclasses.fields(kind)
        if f.init and not isinstance(hints.get(f.name), dataclasses.InitVar)
    ]
    #: Fields with a default that null does not fit: null takes the default (what older
    #: writers stored for "none yet", e.g. a plan's estimate).
    defaulted = frozenset(
        name for name, required in fields if not required and not _nullable(hints[name])
    )
    parts: dict[str, Decoder] = {}

    def instance(data: Any, where: str) -> Any:
        if isinstance(data, kind):
            return data
        if not isinstance(data, dict):
            raise _fail(where, f"an object ({kind.__name__})", data)
        given: dict[str, Any] = {}
        for name, required in fields:
            if name in data:
                if data[name] is None and name in defaulted:
                    continue
                part = parts.get(name)
                if part is None:  # made on first use: a field may be of the class itself
                    part = parts[name] = decoder(hints[name])
                given[name] = part(data[name], where + "." + name)
            elif required:
                raise CodecError(f"{where}.{name}: missing (no default)")
        return kind(**given)

    return instance


def _nullable(hint: Any) -> bool:
    return hint is Any or hint is object or hint is None or type(None) in get_args(hint)


def _required(field: dataclasses.Field[Any]) -> bool:
    return field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING


def _typeddict(kind: Any) -> Decoder:
    hints = get_type_hints(kind)
    required: frozenset[str] = getattr(kind, "__required_keys__", frozenset())
    parts: dict[str, Decoder] = {}

    def typed(data: Any, where: str) -> dict[str, Any]:
        if not isinstance(data, dict):
            raise _fail(where, f"an object ({kind.__name__})", data)
        missing = required - set(data)
        if missing:
            raise CodecError(f"{where}: missing {', '.join(sorted(missing))}")
        out = dict(data)  # keys it does not declare are kept as they are
        for name, value in data.items():
            hint = hints.get(name)
            if hint is None:
                continue
            part = parts.get(name)
            if part is None:
                part = parts[name] = decoder(hint)
            out[name] = part(value, f"{where}.{name}")
        return out

    return typed
