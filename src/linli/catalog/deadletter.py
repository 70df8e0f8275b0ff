"""The envelope a refused message is republished in, on a dead-letter topic an operator watches.

The edge agents and the waste service both use it: `linli/deadletter/{agent}/{reason}`.
"""

from __future__ import annotations

import base64
import json

# How much of a rejected payload the dead-letter envelope carries.
DEAD_LETTER_EXCERPT = 4096


def dead_letter_envelope(
    *, reason: str, detail: str, topic: str, payload: bytes, agent: str, received_ms: int
) -> bytes:
    """The JSON an operator sees on the dead-letter topic: why, where from, and the payload."""
    excerpt = payload[:DEAD_LETTER_EXCERPT]
    body: dict[str, object] = {
        "reason": reason,
        "detail": detail,
        "topic": topic,
        "agent": agent,
        "received_ms": received_ms,
        "size": len(payload),
        "truncated": len(payload) > len(excerpt),
    }
    try:
        body["payload"] = excerpt.decode("utf-8")
    except UnicodeDecodeError:
        body["payload_base64"] = base64.b64encode(excerpt).decode("ascii")
    return json.dumps(body, ensure_ascii=False).encode("utf-8")
