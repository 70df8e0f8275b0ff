"""Markdown documentation generated from a profile: storage schema and register map."""

from __future__ import annotations

from linli.catalog.mqttspec import MqttSpec
from linli.catalog.profile import ModbusCommand, ModbusPoint, Profile


def _enum_text(point: ModbusPoint) -> str:
    if not point.enum:
        return ""
    return ", ".join(f"{k} {v}" for k, v in point.enum.items())


def _stored_text(point: ModbusPoint, every: float) -> str:
    """When a point is stored: every poll, or by exception (see `linli.edge.deadband`)."""
    if not point.store:
        return "no"
    if point.deadband is None:
        return "every poll"
    change = "any change" if point.deadband == 0 else f"change > {point.deadband:g}"
    return f"{change}, or {point.store_every or every:g} s"


def _point_row(point: ModbusPoint, default_byte: str, default_word: str, every: float) -> str:
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
        point.valid_range,
        _stored_text(point, every),
        point.description + (" (a setting: read at start and every 60 s)" if point.setting else ""),
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
    if profile.mqtt is not None:
        out[-2] = out[-2].replace(
            "the edge's clock at the poll", "the device's own (`time_key`), else the edge's at receipt"
        )
        return "\n".join(out + _mqtt_section(profile.mqtt)) + "\n"
    mb = profile.modbus
    if mb is None:
        return "\n".join(out) + "\n"
    header = [
        "| table | address | type | byte/word order | scale | unit | field | valid | stored | meaning "
        "| values |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    out += [
        "",
        "## Modbus register map",
        "",
        f"Unit id {mb.unit} by default. Addresses are zero-based (PDU addresses; add 1 for "
        "tools such as mbpoll that count from 1). Default byte and word order: "
        f"{mb.byte_order.value}/{mb.word_order.value}.",
        "",
        "Stored: a point with a deadband is stored when it moves by more than that from the value "
        "last stored, or crosses an alarm limit, and at least as often as given (report by exception; "
        "the edge config can change both, or turn it off).",
        "",
        "### Device points",
        "",
        *header,
        *(_point_row(p, mb.byte_order.value, mb.word_order.value, mb.store_every) for p in mb.points),
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
    derived = [p for p in mb.points if p.decimals_from or p.offset_from or not p.store]
    if derived or mb.faults:
        out += ["", "### Derived values", ""]
        for p in derived:
            if p.decimals_from or p.offset_from:
                out.append(
                    f"- `{p.field}` = (raw + `{p.offset_from or 0}`) / 10^`{p.decimals_from or 0}`, "
                    "both read from the device."
                )
            if not p.store:
                out.append(f"- `{p.field}` qualifies another value and is not stored.")
        for f in mb.faults:
            out.append(
                f"- `{f.field}` is true when `{f.point}` is outside {f.min:g}..{f.max:g}; "
                f"then {', '.join(f'`{d}`' for d in f.drops)} is not stored "
                "(a sensor fault is not a reading)."
            )
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
            *(_point_row(p, mb.byte_order.value, mb.word_order.value, mb.store_every) for p in group.points),
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


def _mqtt_section(spec: MqttSpec) -> list[str]:
    out = [
        "",
        "## MQTT",
        "",
        f"Heartbeat every {spec.heartbeat_s:g} s: a device silent for three heartbeats is shown offline.",
    ]
    if spec.status_topic:
        out.append(
            f"Status topic `{spec.status_topic}`: `{spec.online}` (retained) on connect, and the "
            f"last-will `{spec.offline}`."
        )
    for message in spec.messages:
        out += [
            "",
            f"### `{message.name}`: `{message.topic}` (QoS {message.qos})"
            + (", sent by the platform to the device" if message.to_device else ""),
            "",
            "JSON object; unknown keys are ignored, wrong types and out-of-range values rejected."
            + (f" Device time: `{message.time_key}` in epoch milliseconds." if message.time_key else ""),
            "",
            "| key | type | stored as | required | range or values | unit | meaning |",
            "|---|---|---|---|---|---|---|",
        ]
        for f in message.fields:
            if f.choices:
                allowed = ", ".join(f.choices)
            elif f.pattern:
                allowed = f"`{f.pattern}`"
            elif f.min is not None or f.max is not None:
                allowed = f"{'' if f.min is None else f'{f.min:g}'}..{'' if f.max is None else f'{f.max:g}'}"
            else:
                allowed = ""
            cells = [
                f"`{f.json_key}`",
                f.type.value,
                f"tag `{f.name}`" if f.tag else f"field `{f.name}`",
                "yes" if f.required else "no",
                allowed,
                f.unit,
                f.description,
            ]
            out.append("| " + " | ".join(cells) + " |")
        c = message.confirm
        if c is not None:
            only = "; ".join(f"`{k}` in {', '.join(map(str, v))}" for k, v in c.only_if.items())
            out += [
                "",
                f"Confirmation: `{c.confirmed_field}` is true when `{c.score}` >= {c.instant:g} on one hit, "
                "or "
                f">= {c.confirm:g} on {c.hits} hits within {c.window_s:g} s; an episode continues while "
                f"hits stay >= {c.keep:g} and ends {c.exit_s:g} s after the last"
                + (f"; only when {only}" if only else "")
                + f". `{c.count_field}` is 1 on the hit that starts an episode, else 0.",
            ]
    return out
