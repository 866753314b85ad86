"""Import Jepsen histories written in EDN, one map per line::

    {:process 0, :type :invoke, :f :cas, :value [1 2], :time 1234}

The reader handles the subset of EDN that histories use: maps, vectors, lists, sets, nil, booleans,
integers, floats, strings, keywords, commas as whitespace and ``;`` comments. Keywords used as values
become strings with their colon (``:a`` → ``":a"``), so they never equal a string ``"a"``. Events of
the ``:nemesis`` process are skipped: they record faults, not operations. Keys other than
``:process :type :f :key :value :time`` and the optional ``:revision :staleness_ms
:max_staleness_ms`` of the JSON format (``:index``, ``:error``...) are ignored.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from types import MappingProxyType

from kvstore.jepsen.history import Event, HistoryError, Value, event_from_mapping


@dataclass(frozen=True, slots=True)
class Keyword:
    name: str

    def __repr__(self) -> str:
        return f":{self.name}"


# What the reader produces: frozen values, keywords, and maps (only valid as the event itself).
_Parsed = Value | Keyword | dict

_NUMBER = re.compile(r"[+-]?\d+(?:\.\d*)?(?:[eE][+-]?\d+)?[NM]?")
_INTEGER = re.compile(r"[+-]?\d+N?")
# Characters EDN allows in symbols and keywords.
_SYMBOL = re.compile(r"[A-Za-z0-9*+!\-_'?<>=/.#:$%&|]+")
_ESCAPES = MappingProxyType({'"': '"', "\\": "\\", "n": "\n", "t": "\t", "r": "\r", "b": "\b", "f": "\f"})
_DELIMITERS = MappingProxyType({"[": "]", "(": ")", "{": "}"})
_NEMESIS = Keyword("nemesis")
_CONSTANTS: MappingProxyType[str, None | bool] = MappingProxyType({"nil": None, "true": True, "false": False})


class _Reader:
    """Recursive-descent reader over one line of text."""

    def __init__(self, text: str, line: int) -> None:
        self.text = text
        self.line = line
        self.position = 0

    def error(self, message: str) -> HistoryError:
        return HistoryError(self.line, f"column {self.position + 1}: {message}")

    def skip_blank(self) -> None:
        text = self.text
        while self.position < len(text):
            char = text[self.position]
            if char.isspace() or char == ",":
                self.position += 1
            elif char == ";":
                self.position = len(text)
            else:
                return

    def at_end(self) -> bool:
        self.skip_blank()
        return self.position >= len(self.text)

    def read(self) -> _Parsed:
        self.skip_blank()
        text = self.text
        if self.position >= len(text):
            raise self.error("unexpected end of line")
        char = text[self.position]
        if char in _DELIMITERS:
            self.position += 1
            items = self.read_until(_DELIMITERS[char])
            return self.make_map(items) if char == "{" else tuple(items)
        if text.startswith("#{", self.position):
            self.position += 2
            items = self.read_until("}")
            try:
                return frozenset(items)
            except TypeError:
                raise self.error("a set may only hold values, not maps") from None
        if char == '"':
            return self.read_string()
        if char == ":":
            match = _SYMBOL.match(text, self.position + 1)
            if match is None:
                raise self.error("empty keyword")
            self.position = match.end()
            return Keyword(match.group())
        if char.isdigit() or (char in "+-" and text[self.position + 1 : self.position + 2].isdigit()):
            return self.read_number()
        if char == "#":
            raise self.error("tagged literals and dispatch forms (#...) are not supported")
        match = _SYMBOL.match(text, self.position)
        if match is None:
            raise self.error(f"unexpected character {char!r}")
        symbol = match.group()
        if symbol not in _CONSTANTS:
            raise self.error(f"unsupported symbol {symbol!r} (only nil, true and false are read)")
        self.position = match.end()
        return _CONSTANTS[symbol]

    def read_until(self, closing: str) -> list[_Parsed]:
        items: list[_Parsed] = []
        while True:
            self.skip_blank()
            if self.position >= len(self.text):
                raise self.error(f"missing {closing!r}")
            if self.text[self.position] == closing:
                self.position += 1
                return items
            if self.text[self.position] in ")]}":
                raise self.error(f"unexpected {self.text[self.position]!r}, expected {closing!r}")
            items.append(self.read())

    def make_map(self, items: list[_Parsed]) -> dict[_Parsed, _Parsed]:
        if len(items) % 2:
            raise self.error("a map needs an even number of forms")
        try:
            return dict(zip(items[::2], items[1::2], strict=True))
        except TypeError:
            raise self.error("map keys must be values, not maps") from None

    def read_string(self) -> str:
        text = self.text
        chunks: list[str] = []
        opening = self.position
        self.position += 1
        while True:
            end = self.position
            while end < len(text) and text[end] not in '"\\':
                end += 1
            chunks.append(text[self.position : end])
            if end >= len(text):
                self.position = opening
                raise self.error("unterminated string")
            if text[end] == '"':
                self.position = end + 1
                return "".join(chunks)
            escape = text[end + 1 : end + 2]
            if escape in _ESCAPES:
                chunks.append(_ESCAPES[escape])
                self.position = end + 2
            elif escape == "u" and re.fullmatch(r"[0-9a-fA-F]{4}", text[end + 2 : end + 6]):
                chunks.append(chr(int(text[end + 2 : end + 6], 16)))
                self.position = end + 6
            else:
                self.position = end
                raise self.error(f"unsupported escape \\{escape}")

    def read_number(self) -> int | float:
        match = _NUMBER.match(self.text, self.position)
        assert match is not None  # the caller saw a digit
        token = match.group()
        if _INTEGER.fullmatch(token):
            self.position = match.end()
            return int(token.rstrip("N"))
        if token.endswith("M"):
            raise self.error(f"unsupported decimal {token}")
        self.position = match.end()
        return float(token)


def _to_value(parsed: _Parsed, reader: _Reader) -> Value:
    if isinstance(parsed, Keyword):
        return f":{parsed.name}"
    if isinstance(parsed, dict):
        raise reader.error("maps are only supported as the event itself, not as values")
    if isinstance(parsed, tuple):
        return tuple(_to_value(item, reader) for item in parsed)
    if isinstance(parsed, frozenset):
        return frozenset(_to_value(item, reader) for item in parsed)
    return parsed


def _name(parsed: _Parsed) -> _Parsed:
    """Keywords name event types and functions: ``:invoke`` → ``"invoke"``."""
    return parsed.name if isinstance(parsed, Keyword) else parsed


def parse_edn_event(text: str, line: int) -> Event | None:
    """The event on one line, or None for a nemesis event."""
    reader = _Reader(text, line)
    parsed = reader.read()
    if not isinstance(parsed, dict):
        raise HistoryError(line, "expected one map per line, like {:process 0, :type :invoke, :f :read}")
    if not reader.at_end():
        raise reader.error("unexpected text after the map (one map per line)")
    fields: dict[str, object] = {}
    for field_key, field_value in parsed.items():
        if not isinstance(field_key, Keyword):
            raise HistoryError(line, f"map keys must be keywords, got {field_key!r}")
        fields[field_key.name] = field_value
    if fields.get("process") == _NEMESIS:
        return None
    return event_from_mapping(
        {
            "process": fields.get("process"),
            "type": _name(fields.get("type")),
            "f": _name(fields.get("f")),
            "key": _to_value(fields.get("key"), reader),
            "value": _to_value(fields.get("value"), reader),
            "time": fields.get("time"),
            "revision": fields.get("revision"),
            "staleness_ms": fields.get("staleness_ms"),
            "max_staleness_ms": fields.get("max_staleness_ms"),
        },
        line,
    )


def parse_edn(lines: Iterable[str]) -> list[Event]:
    """Parse an EDN history; blank and comment-only lines are skipped."""
    events: list[Event] = []
    for line_number, text in enumerate(lines, start=1):
        if _Reader(text, line_number).at_end():
            continue
        event = parse_edn_event(text, line_number)
        if event is not None:
            events.append(event)
    return events

