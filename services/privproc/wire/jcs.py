"""JSON Canonicalization Scheme (RFC 8785) for the ledger's entries — sans-I/O.

privproc's entries hold objects, arrays, strings, booleans, null and
integers only; floats are refused (RFC 8785 numbers follow ECMAScript's
shortest round-trip form, which no entry needs). Integers must be exact in
an IEEE double (|n| ≤ 2^53), as RFC 8785 §3.2.2.3 requires.
"""

from __future__ import annotations

import json
import json.encoder
from typing import Any

from privproc.errors import WireError

MAX_SAFE_INTEGER = 2**53 - 1
_encode_basestring = json.encoder.encode_basestring


class CanonicalJsonError(WireError):
    """A value that has no canonical JSON form here, or bytes that are not canonical."""


def _string(value: str) -> str:
    # json's encode_basestring (what json.dumps(value, ensure_ascii=False) calls, without
    # building an encoder per string) escapes exactly what RFC 8785 §3.2.2.2 asks: '"',
    # '\\', and controls (short forms \b \f \n \r \t, else \u00xx).
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise CanonicalJsonError("lone surrogate in string") from None
    return _encode_basestring(value)


def _encode(value: Any, out: list[str], depth: int) -> None:
    if depth > 32:
        raise CanonicalJsonError("nesting too deep")
    if value is None:
        out.append("null")
    elif value is True:
        out.append("true")
    elif value is False:
        out.append("false")
    elif isinstance(value, int):
        if abs(value) > MAX_SAFE_INTEGER:
            raise CanonicalJsonError("integer outside the exact double range")
        out.append(str(value))
    elif isinstance(value, float):
        raise CanonicalJsonError("floats are not used in entries")
    elif isinstance(value, str):
        out.append(_string(value))
    elif isinstance(value, list | tuple):
        out.append("[")
        for i, item in enumerate(value):
            if i:
                out.append(",")
            _encode(item, out, depth + 1)
        out.append("]")
    elif isinstance(value, dict):
        if not all(isinstance(k, str) for k in value):
            raise CanonicalJsonError("object keys must be strings")
        out.append("{")
        # RFC 8785 §3.2.3: keys sorted by their UTF-16 code units.
        for i, key in enumerate(sorted(value, key=lambda k: k.encode("utf-16-be"))):
            if i:
                out.append(",")
            out.append(_string(key))
            out.append(":")
            _encode(value[key], out, depth + 1)
        out.append("}")
    else:
        raise CanonicalJsonError("value has no JSON form")


def canonicalize(value: Any) -> bytes:
    """The RFC 8785 canonical UTF-8 bytes of ``value``."""
    out: list[str] = []
    _encode(value, out, 0)
    return "".join(out).encode("utf-8")


def parse_canonical(data: bytes) -> Any:
    """Parse JSON bytes that must already be canonical (re-encoding gives them back)."""
    try:
        value = json.loads(data.decode("utf-8"), parse_float=_no_float, parse_constant=_no_float)
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise CanonicalJsonError("not JSON") from None
    if canonicalize(value) != data:
        raise CanonicalJsonError("JSON is not in canonical form")
    return value


def _no_float(_: str) -> Any:
    raise ValueError("floats are not used in entries")
