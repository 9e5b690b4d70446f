"""Decode a tool call's code argument while its JSON streams: feed each arguments delta, get the code it adds.

A code tool's arguments are a JSON object, `{"code": "import numpy as np\\n..."}`, streamed in pieces
that cut anywhere, inside an escape (`\\`, `\\u00`) or between the halves of a surrogate pair. The
detector must see code, not JSON, and see it as early as the model writes it.

jiter and pydantic_core were looked at first. Both decode a prefix right (`partial_mode="trailing-strings"`
drops a trailing incomplete escape or a lone high surrogate until the rest arrives), but neither can resume:
each call parses the whole prefix again, O(prefix) per delta and O(n^2) per call. This state machine is
O(delta): outside the code value it only tracks nesting, strings and the keys of the top-level object; inside
it copies runs of plain characters and holds back at most one unfinished escape and one high surrogate.
Every string it returns is final. At the end the complete arguments are parsed once more (`finish`) and
compared with what it returned: a difference is an error, never a silent divergence.
"""

from __future__ import annotations

import json
import re
from typing import Protocol

_SIMPLE_ESCAPES = {'"': '"', "\\": "\\", "/": "/", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t"}
_SPECIAL = re.compile(r'["\\]')
_HEX = re.compile(r"[0-9a-fA-F]{4}")


class ToolArgumentsError(ValueError):
    """The arguments are not the JSON object they should be, or the code in them is not the code that ran."""


class CodeDecoder(Protocol):
    """What the producer needs of a decoder: code out of each piece, and the whole code checked at the end."""

    @property
    def closed(self) -> bool: ...

    def feed(self, text: str) -> str: ...

    def finish(self) -> str: ...


class RawInput:
    """A free-form (custom) tool's input is the code itself: nothing to decode, nothing that can stay open."""

    def __init__(self) -> None:
        self._parts: list[str] = []

    @property
    def closed(self) -> bool:
        return True

    def feed(self, text: str) -> str:
        self._parts.append(text)
        return text

    def finish(self) -> str:
        return "".join(self._parts)


class ArgumentDecoder:
    """The string value of `key` in the top-level JSON object, decoded piece by piece."""

    def __init__(self, key: str) -> None:
        self.key = key
        self._raw: list[str] = []  # every piece, for the final re-parse
        self._emitted: list[str] = []
        self._state = "outside"  # -> "value" (inside the code string) -> "closed"
        # outside the value: nesting depth, the string being scanned, the last top-level key
        self._depth = 0
        self._want_key = False
        self._in_string = False
        self._string_escape = False
        self._key_chars: list[str] | None = None  # a top-level key being read, raw (escapes undecoded)
        self._last_key: str | None = None
        # inside the value
        self._escape = ""  # an escape begun and not yet complete: "\\", "\\u", "\\u0", ...
        self._high: int | None = None  # a high surrogate waiting for its low half

    @property
    def closed(self) -> bool:
        """The code string's closing quote arrived: everything it holds was returned."""
        return self._state == "closed"

    def feed(self, text: str) -> str:
        """The code that `text` completes: final, never taken back."""
        self._raw.append(text)
        out: list[str] = []
        i = 0
        while i < len(text):
            if self._state == "outside":
                i = self._scan(text, i)
            elif self._state == "value":
                i = self._decode(text, i, out)
            else:
                break
        code = "".join(out)
        self._emitted.append(code)
        return code

    def finish(self) -> str:
        """The code of the complete arguments; raises ToolArgumentsError unless it is exactly what `feed` returned."""
        raw = "".join(self._raw)
        try:
            arguments = json.loads(raw, strict=False)
        except json.JSONDecodeError as exc:
            if not self.closed:
                raise ToolArgumentsError(f"the arguments never closed ({len(raw)} characters, {exc.msg} at "
                                         f"character {exc.pos}): the model stopped inside the call") from exc
            raise ToolArgumentsError(f"the arguments are not JSON: {exc.msg} at character {exc.pos}") from exc
        if not isinstance(arguments, dict):
            raise ToolArgumentsError(f"the arguments are a JSON {type(arguments).__name__}, not an object")
        code = arguments.get(self.key)
        if not isinstance(code, str):
            raise ToolArgumentsError(f"the arguments have no string `{self.key}` (keys: {sorted(arguments)})")
        ran = "".join(self._emitted)
        if code != ran:
            at = next((k for k, (a, b) in enumerate(zip(code, ran)) if a != b), min(len(code), len(ran)))
            raise ToolArgumentsError(f"the complete arguments' `{self.key}` differs from the code decoded while "
                                     f"streaming, from character {at} on ({len(code)} vs {len(ran)} characters)")
        return code

    def _scan(self, text: str, i: int) -> int:
        """One character outside the code value: track the top-level object until the code string opens."""
        ch = text[i]
        if self._in_string:
            if self._string_escape:
                self._string_escape = False
            elif ch == "\\":
                self._string_escape = True
            elif ch == '"':
                self._in_string = False
                if self._key_chars is not None:
                    self._last_key = _json_string("".join(self._key_chars))
                    self._key_chars = None
                return i + 1
            if self._key_chars is not None:
                self._key_chars.append(ch)
        elif ch == '"':
            if self._depth == 1 and not self._want_key and self._last_key == self.key:
                self._state = "value"
            else:
                self._in_string = True
                self._key_chars = [] if self._depth == 1 and self._want_key else None
        elif ch in "{[":
            self._depth += 1
            self._want_key = self._depth == 1
        elif ch in "}]":
            self._depth -= 1
        elif self._depth == 1 and ch == ":":
            self._want_key = False
        elif self._depth == 1 and ch == ",":
            self._want_key, self._last_key = True, None
        return i + 1

    def _decode(self, text: str, i: int, out: list[str]) -> int:
        """Inside the code string: a run of plain characters, an escape (or its next piece) or the closing quote."""
        if self._escape:
            return self._continue_escape(text, i, out)
        match = _SPECIAL.search(text, i)
        end = match.start() if match else len(text)
        if end > i:
            self._flush_high(out)
            out.append(text[i:end])
        if match is None:
            return end
        if text[end] == '"':
            self._flush_high(out)
            self._state = "closed"
        else:
            self._escape = "\\"
        return end + 1

    def _continue_escape(self, text: str, i: int, out: list[str]) -> int:
        if self._escape == "\\":
            ch = text[i]
            if ch == "u":
                self._escape = "\\u"
                return i + 1
            if ch not in _SIMPLE_ESCAPES:
                raise ToolArgumentsError(f"invalid escape \\{ch} in the `{self.key}` string")
            self._escape = ""
            self._flush_high(out)
            out.append(_SIMPLE_ESCAPES[ch])
            return i + 1
        take = min(6 - len(self._escape), len(text) - i)
        self._escape += text[i:i + take]
        if len(self._escape) == 6:
            digits, self._escape = self._escape[2:], ""
            if not _HEX.fullmatch(digits):
                raise ToolArgumentsError(f"invalid escape \\u{digits} in the `{self.key}` string")
            self._code_point(int(digits, 16), out)
        return i + take

    def _code_point(self, point: int, out: list[str]) -> None:
        """As json.loads does: a high and a low surrogate escape make one character; a lone half stays itself."""
        if 0xDC00 <= point <= 0xDFFF and self._high is not None:
            out.append(chr(0x10000 + ((self._high - 0xD800) << 10) + (point - 0xDC00)))
            self._high = None
            return
        self._flush_high(out)
        if 0xD800 <= point <= 0xDBFF:
            self._high = point
        else:
            out.append(chr(point))

    def _flush_high(self, out: list[str]) -> None:
        if self._high is not None:
            out.append(chr(self._high))
            self._high = None


def _json_string(body: str) -> str | None:
    """A key's raw characters decoded, or None when they are not a valid JSON string (never the code key)."""
    try:
        return json.loads(f'"{body}"', strict=False)
    except json.JSONDecodeError:
        return None
