"""What recognising the broker's second copy of a QoS 1 message costs, per message.

After a crash between a commit and its PUBACK the broker sends the message again; the
agent recognises it by the packet id and a digest of its line, both kept in the same commit
as the line. This measures that bookkeeping in-process, against the rest of the handling:
the same batches of camera heartbeats go through the MQTT connector and the durable buffer
at QoS 0 (nothing kept) and at QoS 1 (packet id and CRC kept), CPU time only, in rounds
that alternate the two, and the medians are compared.

    .venv/bin/python benchmarks/qos1_once.py --messages 200000
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
import timeit
from pathlib import Path

from linli.edge.buffer import DurableBuffer, SyncMode
from linli.edge.config import EdgeConfig
from linli.edge.mqtt import MqttConnector

BATCH = 400  # messages per 20 ms commit at 20,000 messages/s
CAMERAS = 200


def connector(buffer: DurableBuffer) -> MqttConnector:
    config = EdgeConfig.model_validate(
        {
            "agent": {"name": "bench"},
            "writer": {"kind": "influxdb1", "url": "http://127.0.0.1:9", "database": "x"},
            "mqtt": {},
            "sites": [
                {"id": "s", "devices": [{"id": f"cam-{i}", "profile": "camera"} for i in range(CAMERAS)]}
            ],
        }
    )

    def emit(lines: list[str], _done: object, delivered: bytes) -> None:
        buffer.append(lines, delivered=delivered)

    return MqttConnector(config, emit)


def one_round(qos: int, messages: int, start_ms: int, folder: Path) -> float:
    """CPU seconds per message for `messages` heartbeats through the connector and the buffer."""
    buffer = DurableBuffer(folder / f"b{qos}-{start_ms}.sqlite", max_bytes=10**10, sync=SyncMode.NORMAL)
    mqtt = connector(buffer)
    packets = []
    for k in range(messages):
        body = {"ts": start_ms + k, "uptime_s": k, "detections_today": 0, "interceptions_today": 0}
        body["door_holds_today"] = 0
        topic = f"elevators/s/cam-{k % CAMERAS}/heartbeat".encode()
        packets.append((topic, json.dumps(body).encode(), qos, False, k % 65535 + 1))
    started = time.process_time()
    for i in range(0, messages, BATCH):
        mqtt._on_publishes(packets[i : i + BATCH])
        mqtt._drain_inbox()
    took = time.process_time() - started
    buffer.close()
    return took / messages


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--messages", type=int, default=200_000, help="messages per round (default 200,000)")
    parser.add_argument("--rounds", type=int, default=5, help="rounds of each QoS, alternating (default 5)")
    args = parser.parse_args()
    per: dict[int, list[float]] = {0: [], 1: []}
    now_ms = int(time.time() * 1000)
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            for qos in (0, 1):
                per[qos].append(one_round(qos, args.messages, now_ms + r * args.messages, Path(tmp)))
    q0, q1 = statistics.median(per[0]) * 1e6, statistics.median(per[1]) * 1e6
    print(f"QoS 0: {q0:.2f} us/message (rounds: {', '.join(f'{x * 1e6:.2f}' for x in per[0])})")
    print(f"QoS 1: {q1:.2f} us/message (rounds: {', '.join(f'{x * 1e6:.2f}' for x in per[1])})")
    share = 100 * (q1 - q0) / q0
    print(
        f"QoS 1 handling (acknowledgements and bookkeeping) costs {q1 - q0:.2f} us/message more, {share:.0f}%"
    )
    # The bookkeeping alone: a line's CRC and its packet id, on a connector fresh from a restart.
    with tempfile.TemporaryDirectory() as tmp:
        buffer = DurableBuffer(Path(tmp) / "b.sqlite", max_bytes=10**9)
        mqtt = connector(buffer)
        line = "camera,device=cam-17,site=s uptime_s=12345i,detections_today=0i 1796044108175"
        out = bytearray()
        n = 1_000_000
        took = timeit.timeit(lambda: mqtt._once(5, line, out), number=n) / n
        buffer.close()
    print(f"of which the bookkeeping of redeliveries: {took * 1e6:.2f} us/message")


if __name__ == "__main__":
    main()
