"""Markdown documentation generated from a profile: storage schema and register map."""

from __future__ import annotations

from linli.catalog.profile import ModbusCommand, ModbusPoint, Profile


def _enum_text(point: ModbusPoint) -> str:
    if not point.enum:
        return ""
    return ", ".join(f"{k} {v}" for k, v in point.enum.items())


def _range(point: ModbusPoint) -> str:
    if point.valid_min is None and point.valid_max is None:
        return ""
    lo = "" if point.valid_min is None else f"{point.valid_min:g}"
    hi = "" if point.valid_max is None else f"{point.valid_max:g}"
    return f"{lo}..{hi}"


def _point_row(point: ModbusPoint, default_byte: str, default_word: str) -> str:
    dtype = point.type.value + (f" bit {point.bit}" if point.bit is not None else "")
    orders = ""
    if point.type.registers > 1 or point.byte_order:
        orders = f"{point.byte_order or default_byte}/{point.word_order or default_word}"
    scale = (
        ""
        if point.scale == 1 and point.offset == 0
        else f"x{point.scale:g}" + (f" {point.offset:+g}" if point.offset else "")
    )
    cells = [
        point.table.value,
        str(point.address),
        dtype,
        orders,
        scale,
        point.unit,
        f"`{point.field}`",
        _range(point),
        point.description,
        _enum_text(point),
    ]
    return "| " + " | ".join(cells) + " |"


def _command_row(command: ModbusCommand) -> str:
    return f"| {command.table.value} | {command.address} | `{command.name}` | {command.description} |"


def profile_markdown(profile: Profile) -> str:
    """The page for one device kind."""
    out = [
        f"# {profile.title} (`{profile.kind}`)",
        "",
        "Generated from the profile by `linli catalog doc " + profile.kind + "`; do not edit by hand.",
        "",
        profile.description,
        "",
        "## Storage",
        "",
        f"Measurement `{profile.measurement}`. Tags: `site`, `device`"
        + (f", and `{profile.group_tag}` on per-{profile.group_tag} points" if profile.group_tag else "")
        + ". Time: the edge's clock at the poll, UTC, millisecond precision.",
        "Integer fields are written as integers (`i`), scaled values as floats; bit fields as 0 or 1.",
    ]
    mb = profile.modbus
    if mb is None:
        return "\n".join(out) + "\n"
    header = [
        "| table | address | type | byte/word order | scale | unit | field | valid | meaning | values |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    out += [
        "",
        "## Modbus register map",
        "",
        f"Unit id {mb.unit} by default. Addresses are zero-based (PDU addresses; add 1 for "
        "tools such as mbpoll that count from 1). Default byte and word order: "
        f"{mb.byte_order.value}/{mb.word_order.value}.",
        "",
        "### Device points",
        "",
        *header,
        *(_point_row(p, mb.byte_order.value, mb.word_order.value) for p in mb.points),
    ]
    if mb.commands:
        out += [
            "",
            "### Device commands",
            "",
            "| table | address | command | effect |",
            "|---|---|---|---|",
        ]
        out += [_command_row(c) for c in mb.commands]
    group = mb.group
    if group is not None:
        out += [
            "",
            f"### Per-{group.tag} points",
            "",
            f"{group.count} {group.tag}s by default, up to {group.max_count}. The addresses are those of "
            f"{group.tag} 1; {group.tag} N is at address + {group.stride} x (N - 1).",
            "",
            *header,
            *(_point_row(p, mb.byte_order.value, mb.word_order.value) for p in group.points),
        ]
        if group.commands:
            out += [
                "",
                f"### Per-{group.tag} commands",
                "",
                "| table | address | command | effect |",
                "|---|---|---|---|",
            ]
            out += [_command_row(c) for c in group.commands]
    return "\n".join(out) + "\n"
