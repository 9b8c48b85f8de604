"""Kamailio's statistics commands over every management transport.

``stats.get_statistics all|group:|name ...`` returns ``group:name = value``
lines (as Kamailio's ``kamcmd stats.get_statistics`` does; a labelled
statistic adds one line per label value, ``core:received_requests_invite``);
``stats.reset_statistics`` with the same selectors starts counters and
histograms again from zero; ``stats.snapshot`` is the whole registry with
kinds, labels and histogram buckets (what serweb turns into ``/metrics``
and its charts).
"""

from __future__ import annotations

from sipexpress.core.registry import MgmtCommand, MgmtError, MgmtReply
from sipexpress.core.stats import StatsRegistry, UnknownStatistic

SELECTORS = "all | group: | name | group:name (several allowed; none = all)"


def _specs(params: list[str]) -> list[str]:
    return [p.strip() for p in params if p.strip()] or ["all"]


def statistics_commands(registry: StatsRegistry) -> tuple[MgmtCommand, ...]:
    async def get_statistics(params: list[str]) -> MgmtReply:
        lines: list[str] = []
        try:
            for spec in _specs(params):
                lines += [line for line in registry.lines(spec) if line not in lines]
        except UnknownStatistic as e:
            raise MgmtError(404, f"statistic '{e.args[0]}' not found") from None
        return MgmtReply(200, "ok", lines, "".join(line + "\n" for line in lines))

    async def reset_statistics(params: list[str]) -> MgmtReply:
        n = 0
        try:
            for spec in _specs(params):
                n += registry.reset(spec)
        except UnknownStatistic as e:
            raise MgmtError(404, f"statistic '{e.args[0]}' not found") from None
        return MgmtReply(200, "ok", {"reset": n}, "")

    async def snapshot(params: list[str]) -> MgmtReply:
        data = registry.snapshot()
        return MgmtReply(200, "ok", data, "".join(f"{s['group']}:{s['name']} = {s['value']}\n" for s in data))

    return (
        MgmtCommand("stats.get_statistics", get_statistics, "statistics as group:name = value", SELECTORS),
        MgmtCommand("stats.reset_statistics", reset_statistics, "start counters again from zero", SELECTORS),
        MgmtCommand("stats.snapshot", snapshot, "every statistic with its kind, label and buckets"),
    )
