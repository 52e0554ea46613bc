"""What a model accepts: its predictors, their types and levels, and validation.

The prototype is derived from the fitted R object (its terms, data classes
and factor levels), never written by hand, so another lm/glm with other
predictors is validated correctly with no code change. Validation turns JSON
rows into typed columns for R, or into a list of problems that say which
field is wrong and what to send instead.
"""

from __future__ import annotations

import math
import re
import sys
from array import array
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

from .errors import BadRequest, Problem
from .rsession import Column, Factor, Integer, Logical, Numeric, Text

# Numbers as JSON sends them, or as text (the original client sent strings).
# Stricter than float(): no "nan", "inf", "1_000" or surrounding junk. Text
# is bounded (200 significant integer digits, a 2-digit exponent) so that
# every string this accepts is a finite double: then the OpenAPI document
# (openapi.py) states the rule exactly as a pattern, with nothing a pattern
# cannot say (such as "not past 1.8e308").
# Digits are ASCII ([0-9], not Python's \d, which takes any Unicode digit:
# "٣" was read as 3), as the document's patterns mean in any regex dialect
# (ECMA-262's \d is ASCII) and as batch.R reads cells.
NUMBER_TEXT = r"[+-]?(?:0*[0-9]{1,200}(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?0*[0-9]{1,2})?"
# Whole numbers as text: at most 9 significant digits, always within R's integers.
INTEGER_TEXT = r"[+-]?0*[0-9]{1,9}"
LOGICAL_TEXT = r"[Tt][Rr][Uu][Ee]|[Tt]|[Yy][Ee][Ss]|1|[Ff][Aa][Ll][Ss][Ee]|[Ff]|[Nn][Oo]|0"
_NUMBER = re.compile(NUMBER_TEXT)
NUMBER_LIKE = re.compile(r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
# The white space text values may carry around them: ASCII's six, which R's
# as.numeric() and PCRE's \s skip (batch.R), not str.strip()'s Unicode set
# (a no-break space around a number was accepted here and refused in batch).
SPACE = " \t\n\v\f\r"
_INTEGER = re.compile(INTEGER_TEXT)
_TRUE = {"true", "t", "yes", "1"}
_FALSE = {"false", "f", "no", "0"}
# The largest double as an exact int: a JSON integer past it is refused,
# where float() would round some of them down to it.
MAX_DOUBLE_INT = int(sys.float_info.max)
MAX_PROBLEMS = 20
# R integers are 32-bit; -2**31 is R's NA_integer_.
_INT_MAX = 2**31 - 1
# Types a JSON field can carry.
TYPES = ("numeric", "integer", "logical", "factor", "character")


def _shown(value: Any) -> str:
    """A short, safe rendering of a client's value for a message."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, int) and abs(value) >= 10**40:
        # str() of a huge int is slow, and refused past 4,300 digits
        return f"an integer of about {value.bit_length() * 30103 // 100000 + 1} digits"
    text = repr(value) if isinstance(value, str) else str(value)
    return text if len(text) <= 40 else text[:37] + "..."


@dataclass(frozen=True)
class Predictor:
    """One input the model needs.

    ``type`` is ``numeric``, ``integer``, ``logical``, ``factor`` (with
    levels) or ``character`` (with levels when the model turned the text into
    a factor and so knows which values it accepts; free text otherwise).
    """

    name: str
    type: str
    levels: tuple[str, ...] = ()
    _codes: dict[str, int] = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self) -> None:
        self._codes.update({level: i + 1 for i, level in enumerate(self.levels)})

    def expected(self) -> str:
        """What a valid value looks like, for messages."""
        if self.levels:
            return "one of " + ", ".join(self.levels)
        if self.type == "logical":
            return "true or false"
        if self.type == "integer":
            return "a whole number"
        if self.type == "character":
            return "a string"
        return "a finite number"

    def describe(self) -> dict[str, Any]:
        """The JSON shape used by /metadata."""
        out: dict[str, Any] = {"name": self.name, "type": self.type}
        if self.type in ("factor", "character") and (self.levels or self.type == "factor"):
            out["levels"] = list(self.levels)
        return out

    def parse_number(self, value: Any) -> float | str:
        """A float, or the problem with ``value``."""
        kind = type(value)
        if kind is float:
            if math.isfinite(value):
                return value
            return "must be a finite number"
        if kind is int:
            if -MAX_DOUBLE_INT <= value <= MAX_DOUBLE_INT:
                return float(value)
            return "is too large for a number"
        if kind is str:
            text = value.strip(SPACE)
            if _NUMBER.fullmatch(text):
                number = float(text)
                if math.isfinite(number):
                    return number
            if NUMBER_LIKE.fullmatch(text):
                return "is too large for a number as text (at most a 2-digit exponent); send a JSON number"
        if value is None:
            return "is required: send " + self.expected()
        return f"must be {self.expected()}, got {_shown(value)}"

    def parse_integer(self, value: Any) -> int | str:
        """An int within R's integer range, or the problem with ``value``."""
        if type(value) is str and not _INTEGER.fullmatch(value.strip(SPACE)):
            return f"must be {self.expected()} (at most 9 digits as text), got {_shown(value)}"
        number = self.parse_number(value)
        if type(number) is str:
            return number.replace("a finite number", self.expected())
        if not number.is_integer():
            return f"must be {self.expected()}, got {_shown(value)}"
        if abs(number) > _INT_MAX:
            return f"is too large for an R integer (at most {_INT_MAX})"
        return int(number)

    def parse_text(self, value: Any) -> str:
        """The text to pass to R; a problem is returned as a :class:`_Problem`."""
        if self.levels:
            code = self.parse_level(value)
            return self.levels[code - 1] if type(code) is int else _Problem(code)
        if type(value) is str:
            return value
        if value is None:
            return _Problem("is required: send " + self.expected())
        return _Problem(f"must be {self.expected()}, got {_shown(value)}")

    def parse_level(self, value: Any) -> int | str:
        """A 1-based level code, or the problem with ``value``."""
        kind = type(value)
        if kind is str:
            code = self._codes.get(value.strip(SPACE))
        elif kind is int:
            code = self._codes.get(str(value))
        elif kind is float and value.is_integer():
            code = self._codes.get(str(int(value)))
        else:
            code = None
        if code is not None:
            return code
        if value is None:
            return "is required: send " + self.expected()
        return f"must be {self.expected()}, got {_shown(value)}"

    def parse_logical(self, value: Any) -> bool | str:
        """A bool, or the problem with ``value``."""
        if type(value) is bool:
            return value
        if type(value) is str:
            text = value.strip(SPACE).lower()
            if text in _TRUE:
                return True
            if text in _FALSE:
                return False
        if value is None:
            return "is required: send " + self.expected()
        return f"must be {self.expected()}, got {_shown(value)}"


class _Problem(str):
    """A problem message, told apart from a valid text value by its type."""


@dataclass(frozen=True)
class Prototype:
    """The model's predictors, in the order R declares them."""

    predictors: tuple[Predictor, ...]

    @classmethod
    def from_description(cls, description: Mapping[str, Any]) -> "Prototype":
        """Build from what ``rl_load`` in R (serve.R) reports about the fitted object."""
        names = description.get("names") or []
        types = description.get("types") or []
        levels = description.get("levels") or []
        return cls(tuple(Predictor(n, t, tuple(lv)) for n, t, lv in zip(names, types, levels)))

    def describe(self) -> list[dict[str, Any]]:
        """The JSON shape used by /metadata."""
        return [p.describe() for p in self.predictors]

    def example(self) -> dict[str, Any]:
        """A valid made-up row (first level, 1, false, "a"), to exercise the scoring path."""
        made = {"numeric": 1.0, "integer": 1, "logical": False, "character": "a"}
        return {p.name: p.levels[0] if p.levels else made.get(p.type, 1.0) for p in self.predictors}

    def unsupported(self) -> list[Predictor]:
        """Predictors whose R type cannot be sent as JSON (matrix columns and the like)."""
        return [p for p in self.predictors if p.type not in TYPES]

    def columns(self, rows: Sequence[Any], prefix: str | None = None) -> dict[str, Column]:
        """Validate rows (JSON objects) and return one typed column per predictor.

        ``prefix`` names the rows in messages (``instances``); ``None`` means
        a single row whose fields are named bare. Raises :class:`BadRequest`
        listing every problem (up to ``MAX_PROBLEMS``).
        """
        problems: list[Problem] = []
        count = 0

        def where(i: int, name: str) -> str:
            return name if prefix is None else f"{prefix}[{i}].{name}"

        for i, row in enumerate(rows):
            if not isinstance(row, dict):
                count += 1
                if len(problems) < MAX_PROBLEMS:
                    label = "the body" if prefix is None else f"{prefix}[{i}]"
                    problems.append(Problem(label, f"must be a JSON object of fields, got {_shown(row)}"))
        if problems:
            raise _bad(problems, count)

        out: dict[str, Column] = {}
        for p in self.predictors:
            if p.type == "factor":
                parse, buf, make = p.parse_level, array("i"), lambda b, p=p: Factor(b, p.levels)
                ok: type = int
            elif p.type == "logical":
                parse, buf, make = p.parse_logical, [], Logical
                ok = bool
            elif p.type == "integer":
                parse, buf, make = p.parse_integer, array("i"), Integer
                ok = int
            elif p.type == "character":
                parse, buf, make = p.parse_text, [], Text
                ok = str
            else:
                parse, buf, make = p.parse_number, array("d"), Numeric
                ok = float
            append = buf.append
            name = p.name
            for i, row in enumerate(rows):
                value = parse(row.get(name))
                if type(value) is ok:
                    append(value)
                else:
                    count += 1
                    if len(problems) < MAX_PROBLEMS:
                        problems.append(Problem(where(i, name), str(value)))
            out[name] = make(buf)
        if problems:
            raise _bad(problems, count)
        return out


def _bad(problems: list[Problem], count: int) -> BadRequest:
    shown = "; ".join(f"{p.field} {p.problem}" for p in problems[:3])
    more = count - min(3, len(problems))
    if more > 0:
        shown += f" (and {more} more)"
    return BadRequest(f"Invalid input: {shown}.", problems)
