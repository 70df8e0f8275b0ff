"""`/metrics` for the central services: their counters in Prometheus's text format.

Each service describes what it counts as metric families at scrape time; the process's own
CPU and memory come with them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping

from fastapi import FastAPI, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, ProcessCollector, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

Families = Callable[[], Iterable[Metric]]


def counter(name: str, doc: str, value: int | Mapping[str, int], label: str = "") -> Metric:
    """A counter, or one per label value when `value` is a mapping."""
    return _family(CounterMetricFamily, name, doc, value, label)


def gauge(name: str, doc: str, value: float | Mapping[str, float], label: str = "") -> Metric:
    """A gauge, or one per label value when `value` is a mapping."""
    return _family(GaugeMetricFamily, name, doc, value, label)


def _family(
    kind: type[CounterMetricFamily | GaugeMetricFamily],
    name: str,
    doc: str,
    value: float | Mapping[str, float] | Mapping[str, int],
    label: str,
) -> Metric:
    if not isinstance(value, Mapping):
        return kind(name, doc, value=value)
    family = kind(name, doc, labels=[label])
    for key, n in sorted(value.items()):
        family.add_metric([key], n)
    return family


class _Collector(Collector):
    def __init__(self, families: Families) -> None:
        self.families = families

    def collect(self) -> Iterator[Metric]:
        yield from self.families()


def add_metrics(api: FastAPI, families: Families) -> None:
    """GET /metrics on `api` (a `read` token is enough, as for every GET)."""
    registry = CollectorRegistry()
    registry.register(_Collector(families))
    registry.register(ProcessCollector(registry=None))

    @api.get(
        "/metrics",
        response_class=Response,
        responses={200: {"content": {"text/plain": {}}, "description": "Prometheus text format"}},
    )
    def metrics() -> Response:
        """The service's counters and the process's CPU and memory, for Prometheus."""
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)
