"""The statistics registry (selectors, labels, reset, histograms, the
Prometheus families) and the log context of the receive path."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import re
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from sipexpress.core.context import RequestContext
from sipexpress.core.logging import JsonLines, MessageContext
from sipexpress.core.registry import Module, Statistic, StatKind
from sipexpress.core.server import Core
from sipexpress.core.stats import Histogram, StatsRegistry, UnknownStatistic
from sipexpress.mgmt import Manager
from sipexpress.mgmt.metrics import exposition
from tests.unit.core.test_receive_path import make, request


class Counting(Module):
    name = "counting"

    def __init__(self) -> None:
        super().__init__(None)  # type: ignore[arg-type]
        self.hits = 0
        self.by_class = {"2xx": 0, "4xx": 0}
        self.level = 3
        self.latency = Histogram((0.1, 1.0))

    def statistics(self) -> tuple[Statistic, ...]:
        return (
            Statistic("hits", lambda: self.hits, "hits seen"),
            Statistic("replies", lambda: dict(self.by_class), "replies", StatKind.COUNTER, "class"),
            Statistic("level", lambda: self.level, "a level", StatKind.GAUGE),
            Statistic("latency_seconds", lambda: self.latency, "latency", StatKind.HISTOGRAM),
        )


def registry() -> tuple[StatsRegistry, Counting]:
    mod = Counting()
    reg = StatsRegistry(lambda: [mod])
    reg.add_group("core", (Statistic("hits", lambda: 100, "core hits"),))
    return reg, mod


def test_selectors_and_kamailio_lines() -> None:
    reg, mod = registry()
    mod.hits, mod.by_class["4xx"] = 5, 2
    mod.latency.observe(0.05)
    mod.latency.observe(0.5)
    assert reg.lines("counting:") == [
        "counting:hits = 5",
        "counting:replies = 2",
        "counting:replies_2xx = 0",
        "counting:replies_4xx = 2",
        "counting:level = 3",
        "counting:latency_seconds_count = 2",
        "counting:latency_seconds_sum = 0.550000",
    ]
    assert reg.lines("hits") == ["core:hits = 100", "counting:hits = 5"]  # a name in every group
    assert reg.lines("counting:level") == ["counting:level = 3"]
    # a label's line by its own name, with or without the group
    assert reg.lines("counting:replies_4xx") == reg.lines("replies_4xx") == ["counting:replies_4xx = 2"]
    assert len(reg.lines("all")) == 8
    for bad in ("nosuch", "nosuch:", "counting:nosuch"):
        with pytest.raises(UnknownStatistic):
            reg.lines(bad)


def test_reset_counts_again_from_zero_but_leaves_levels() -> None:
    reg, mod = registry()
    mod.hits, mod.by_class["2xx"] = 7, 4
    mod.latency.observe(0.5)
    assert reg.reset("counting:") == 3  # hits, replies, latency: not the gauge
    assert reg.module_value(mod, "hits") == 0
    mod.hits += 2
    mod.by_class["4xx"] += 1
    assert reg.module_value(mod, "hits") == 2
    assert reg.module_value(mod, "replies") == {"2xx": 0, "4xx": 1}
    assert reg.module_value(mod, "level") == 3
    assert reg.module_value(mod, "latency_seconds").count == 0
    assert reg.lines("core:hits") == ["core:hits = 100"]  # other groups untouched


def test_prometheus_families_from_the_snapshot() -> None:
    reg, mod = registry()
    mod.hits, mod.by_class["2xx"] = 5, 3
    for v in (0.05, 0.5, 5.0):
        mod.latency.observe(v)
    families = {f.name: f for f in text_string_to_metric_families(exposition(reg.snapshot()).decode())}
    assert families["sipexpress_counting_hits"].type == "counter"
    assert [(s.name, s.value) for s in families["sipexpress_counting_hits"].samples] == [
        ("sipexpress_counting_hits_total", 5.0)
    ]
    replies = {s.labels["class"]: s.value for s in families["sipexpress_counting_replies"].samples}
    assert replies == {"2xx": 3.0, "4xx": 0.0}
    assert families["sipexpress_counting_level"].type == "gauge"
    hist = families["sipexpress_counting_latency_seconds"]
    assert hist.type == "histogram"
    buckets = {s.labels["le"]: s.value for s in hist.samples if s.name.endswith("_bucket")}
    assert buckets == {"0.1": 1.0, "1.0": 2.0, "+Inf": 3.0}
    assert json.loads(json.dumps(reg.snapshot())) == reg.snapshot()  # what stats.snapshot sends


def capture_log() -> tuple[logging.Logger, io.StringIO]:
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(JsonLines())
    handler.addFilter(MessageContext())
    logger = logging.getLogger("sipexpress.test_statistics")
    logger.handlers = [handler]
    logger.propagate = False
    logger.setLevel(logging.INFO)
    return logger, out


async def test_log_lines_name_the_message_also_after_the_route_waited() -> None:
    logger, out = capture_log()

    async def route(ctx: RequestContext) -> int:
        logger.info("before")
        await asyncio.sleep(0.01)  # handed to a task
        logger.info("after")
        return ctx.core.send_reply(ctx, 200, "OK")

    core, cap, rcv = make(route)
    core.loop = asyncio.get_running_loop()
    core.receive(request(), rcv)
    logger.info("between")  # the core is not handling a message now
    await asyncio.sleep(0.05)
    assert len(cap.sent) == 1
    lines: list[dict[str, Any]] = [json.loads(x) for x in out.getvalue().splitlines()]
    assert [(x["message"], x.get("call_id")) for x in lines] == [
        ("before", "c1"),
        ("between", None),
        ("after", "c1"),
    ]
    assert core.statistics.lines("core:received_requests_options") == ["core:received_requests_options = 1"]
    assert core.statistics.lines("core:request_processing_seconds_options_count")[0].endswith(" = 1")


def test_the_grafana_dashboard_uses_only_exported_metrics() -> None:
    core = Core()
    for name in ("sl", "tm", "usrloc", "registrar", "auth"):
        core.load_module(name)
    Manager({}, core.module_list, statistics=core.statistics)  # adds the mgmt group
    families = {
        f.name: f.type
        for f in text_string_to_metric_families(exposition(core.statistics.snapshot()).decode())
    }
    dashboard = (Path(__file__).parents[3] / "examples" / "monitoring" / "grafana-dashboard.json").read_text()
    used = set(re.findall(r"sipexpress_[a-z_]+", dashboard))
    assert len(used) > 15
    for metric in used:
        family = re.sub(r"_(total|bucket)$", "", metric)
        assert family in families, metric
        assert metric.endswith("_total") == (families[family] == "counter"), metric
        assert metric.endswith("_bucket") == (families[family] == "histogram"), metric


def test_a_request_the_script_drops_is_counted() -> None:
    from sipexpress.script.core_actions import drop

    async def route(ctx: RequestContext) -> int:
        return drop(ctx)

    core, cap, rcv = make(route)
    core.receive(request(), rcv)
    assert cap.sent == []
    assert core.statistics.lines("core:dropped_requests") == ["core:dropped_requests = 1"]
