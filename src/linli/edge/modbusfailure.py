"""Why a Modbus TCP request got no usable answer, told from the bytes on the wire.

pymodbus reports nearly every bad answer as "no response received" once its timeout
ran out. A technician needs to know more: whether the device said nothing (`timeout`),
hung up (`closed`), or answered with something that is not a Modbus TCP frame for this
request (`malformed`), for another unit id than the one asked (`wrong_unit`: two devices
share an id, or the config names the wrong one), or with a frame cut short
(`short_response`). The endpoint records
what it sent and received for each request; `classify` reads the reason from that.
"""

from __future__ import annotations

import logging
import struct

MBAP = struct.Struct(">HHHB")  # transaction id, protocol id, length, unit id
# The longest PDU Modbus allows (253 bytes) plus the unit id.
MAX_LENGTH = 254


def classify(sent: bytes, received: bytes, *, closed: bool) -> tuple[str, str]:  # noqa: PLR0911 (a return per kind of bad answer)
    """(reason, detail) for a request that got no usable answer."""
    if not received:
        if closed:
            return "closed", "the device closed the connection without answering"
        return "timeout", "no answer"
    if len(received) < MBAP.size + 1:
        return "short_response", f"{len(received)} bytes, less than a Modbus TCP header"
    tid, protocol, length, unit = MBAP.unpack_from(received)
    if protocol != 0:
        return "malformed", f"protocol id {protocol}, not 0 (not Modbus TCP): {received[:16].hex(' ')}"
    if not 2 <= length <= MAX_LENGTH:
        return "malformed", f"length field {length}, outside 2-{MAX_LENGTH}"
    if len(sent) >= 2 and tid != struct.unpack_from(">H", sent)[0]:
        return "malformed", f"transaction id {tid}, the request's was {struct.unpack_from('>H', sent)[0]}"
    if len(sent) >= MBAP.size and unit != sent[MBAP.size - 1]:
        # pymodbus drops an answer from another unit and waits on until its timeout.
        return "wrong_unit", f"unit id {unit} answered, the request was for unit {sent[MBAP.size - 1]}"
    body = received[6 : 6 + length]
    if len(body) < length:
        return "short_response", f"the header announces {length} bytes, {len(body)} came"
    pdu = body[1:]
    if len(pdu) >= 2 and not pdu[0] & 0x80 and pdu[1] != len(pdu) - 2:
        return "malformed", f"byte count {pdu[1]}, but {len(pdu) - 2} data bytes"
    return "malformed", f"an answer pymodbus could not decode: {received[:16].hex(' ')}"


class PymodbusNoise(logging.Filter):
    """Keeps pymodbus's protocol tracebacks out of the agent's log: linli reports each
    failure itself, with its reason, once per device and episode."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "pymodbus" not in record.getMessage()
