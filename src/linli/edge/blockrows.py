"""One read's answer straight into its rows, by a function written for that read.

The poller decodes every value of every device at every poll (77 a charger, 7,700 a second
at 100 chargers), and a loop over a read's points pays Python's dispatch for each: which
type, which scale, which limits. A read's points never change once planned, so the loop is
unrolled once into Python source with each point's scale and limits as constants: a plain
point becomes one expression and one comparison.

The function only takes the common case, a block in which every value decodes; it returns
False without touching the rows otherwise, and the caller decodes that block the general way
(`BlockDecoder`), which says which value failed and why. So the values stored are the
`BlockDecoder`'s by construction where it matters (tests/catalog/test_properties.py compares
both over every built-in profile, good values and bad).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from types import CodeType
from typing import cast

from linli.catalog.registers import BlockDecoder, DecodeError, Plain, Value

Rows = dict[int | None, dict[str, Value]]
RowsInto = Callable[[Sequence[int], Rows], bool]
Run = tuple[int | None, int, int, tuple[str, ...]]  # channel, first and past-last slot, field names

# Reads of one profile give the same source: compiled once, not once per device.
_CODE: dict[str, CodeType] = {}
_CODE_MAX = 1_000


def _plain(plain: Plain, position: int, v: str, literal: Callable[[float], str]) -> tuple[str, list[str]]:
    """BlockDecoder's steps for a plain point, spelled out with its constants: the expression of
    its value from its raw value `r{position}`, and what must hold of the value `v`."""
    expr = f'float(f"{{r{position}:.7g}}")' if plain.is_float else f"r{position}"
    if not plain.integer:
        if plain.divisor:
            expr = f"{expr} / {plain.divisor} + {literal(plain.offset)}"
        else:
            expr = f"{expr} * {literal(plain.scale)} + {literal(plain.offset)}"
    lo, hi = plain.lo, plain.hi
    if lo is not None and hi is not None:
        return expr, [f"{literal(lo)} <= {v} <= {literal(hi)}"]  # false for nan and inf
    checks = []
    if lo is not None:
        checks.append(f"{v} >= {literal(lo)}")
    if hi is not None:
        checks.append(f"{v} <= {literal(hi)}")
    if not plain.integer:
        checks.append(f"isfinite({v})")
    return expr, checks


def compile_rows(block: BlockDecoder, runs: Sequence[Run]) -> RowsInto:
    """A function that adds a block's values to the rows by channel, as `runs` say, and
    returns True; or returns False, the rows untouched, when any value does not decode."""
    names: dict[str, object] = {"DecodeError": DecodeError, "isfinite": math.isfinite}
    lines = [f"    if len(block) != {block.count}:", "        return False"]
    if block.unpack is not None:
        names["pack"], names["unpack"] = block.pack, block.unpack
        raws = ", ".join(f"r{i}" for i in range(block.unpacked))
        lines.append(f"    ({raws},) = unpack(pack(*block))")
    checks: list[str] = []

    def literal(value: float) -> str:
        # repr gives back the same float; inf and nan have no literal and go by name.
        if math.isfinite(value):
            return f"({value!r})"
        name = f"c{len(names)}"
        names[name] = value
        return name

    calls: list[str] = []
    for index, (position, offset, decoder, plain) in enumerate(block.steps):
        v = f"v{index}"
        if position < 0 or plain is None:
            # Its own decoder, which raises DecodeError for a value it refuses.
            names[f"f{index}"] = decoder.fn
            calls.append(f"        {v} = f{index}(block, {offset})")
            continue
        expr, check = _plain(plain, position, v, literal)
        lines.append(f"    {v} = {expr}")
        checks += check
    if calls:
        lines += ["    try:", *calls, "    except DecodeError:", "        return False"]
    if checks:
        lines += [f"    if not ({' and '.join(checks)}):", "        return False"]
    for channel, start, stop, fields in runs:
        row = ", ".join(f"{name!r}: v{i}" for i, name in zip(range(start, stop), fields, strict=True))
        lines += [
            f"    row = rows.get({channel!r})",
            "    if row is None:",
            f"        rows[{channel!r}] = {{{row}}}",
            "    else:",
            f"        row.update({{{row}}})",
        ]
    source = "\n".join(["def rows_into(block, rows):", *lines, "    return True", ""])
    code = _CODE.get(source)
    if code is None:
        code = compile(source, "<linli.edge.blockrows>", "exec")
        if len(_CODE) < _CODE_MAX:
            _CODE[source] = code
    exec(code, names)  # noqa: S102 (our own source: numbers, field names by repr)
    return cast("RowsInto", names["rows_into"])
