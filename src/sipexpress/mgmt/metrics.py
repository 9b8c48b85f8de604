"""Prometheus exposition of the statistics registry (``GET /metrics``).

A custom collector turns a registry snapshot (:meth:`StatsRegistry.snapshot`,
or the same list fetched over JSON-RPC with ``stats.snapshot`` by a separate
serweb) into metric families at scrape time, so nothing on the SIP hot path
touches prometheus-client.  Names: ``sipexpress_<group>_<name>``, counters
end in ``_total`` (prometheus-client adds it), histograms give
``_bucket``/``_sum``/``_count``; a labelled statistic becomes one series per
label value (``sipexpress_core_received_requests_total{method="OPTIONS"}``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Any

from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector, CollectorRegistry

__all__ = ["CONTENT_TYPE", "PREFIX", "SnapshotCollector", "exposition", "registry_for"]

PREFIX = "sipexpress"
CONTENT_TYPE = CONTENT_TYPE_LATEST

Snapshot = list[dict[str, Any]]


def _buckets(hist: Mapping[str, Any]) -> list[tuple[str, float]]:
    """Cumulative ``le`` buckets of a snapshot histogram (per-bucket counts)."""
    out = []
    total = 0
    for bound, n in zip([*map(repr, map(float, hist["bounds"])), "+Inf"], hist["counts"], strict=True):
        total += n
        out.append((bound, float(total)))
    return out


def family(stat: Mapping[str, Any]) -> Metric:
    name = f"{PREFIX}_{stat['group']}_{stat['name']}"
    doc = stat.get("doc") or name
    label = stat.get("label") or ""
    labels = [label] if label else []
    value = stat["value"]
    items: list[tuple[list[str], Any]] = [([str(k)], v) for k, v in value.items()] if label else [([], value)]
    kind = stat["kind"]
    if kind == "histogram":
        hf = HistogramMetricFamily(name, doc, labels=labels)
        for lv, hist in items:
            if not label or any(hist["counts"]):  # methods never seen give no series
                hf.add_metric(lv, _buckets(hist), float(hist["sum"]))
        return hf
    f: CounterMetricFamily | GaugeMetricFamily
    f = (
        CounterMetricFamily(name, doc, labels=labels)
        if kind == "counter"
        else GaugeMetricFamily(name, doc, labels=labels)
    )
    for lv, v in items:
        f.add_metric(lv, float(v))
    return f


class SnapshotCollector(Collector):
    """Metric families built from ``snapshot()`` at each collection."""

    def __init__(self, snapshot: Callable[[], Snapshot]) -> None:
        self.snapshot = snapshot

    def collect(self) -> Iterator[Metric]:
        for stat in self.snapshot():
            yield family(stat)


def registry_for(snapshot: Callable[[], Snapshot]) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(SnapshotCollector(snapshot))
    return registry


def exposition(snapshot: Snapshot) -> bytes:
    """The text format of one snapshot (serweb's ``/metrics``)."""
    return generate_latest(registry_for(lambda: snapshot))
