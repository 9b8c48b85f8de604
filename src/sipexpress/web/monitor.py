"""Server monitoring: what serweb's cron job collected from ``t_stats`` and
``ul_stats``, sampled in the app's loop and kept for one hour, drawn as a
small server-side SVG chart."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from collections import deque
from dataclasses import dataclass

from sipexpress.web.serclient import SerClient, SerError

log = logging.getLogger("sipexpress.web.monitor")
HOUR = 3600.0


@dataclass(frozen=True, slots=True)
class Sample:
    t: float
    transactions: int  # t_stats total (cumulative)
    registered: int  # ul_stats users (all tables)


class Monitor:
    def __init__(self, ser: SerClient, interval: float) -> None:
        self.ser = ser
        self.interval = max(0.2, interval)
        self.samples: deque[Sample] = deque()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def sample(self) -> None:
        t = await self.ser.call("t_stats")
        ul = await self.ser.call("ul_stats")
        users = sum(int(d.get("users", 0)) for d in ul) if isinstance(ul, list) else 0
        total = int(t.get("total", 0)) if isinstance(t, dict) else 0
        now = time.time()
        self.samples.append(Sample(now, total, users))
        while self.samples and self.samples[0].t < now - HOUR:
            self.samples.popleft()

    async def _run(self) -> None:
        while True:
            try:
                await self.sample()
            except SerError as e:
                log.debug("monitor: %s", e)
            except Exception:
                log.exception("monitor sample failed")
            await asyncio.sleep(self.interval)

    def series(self) -> dict[str, list[tuple[float, float]]]:
        """Transactions per minute and registered contacts over the hour."""
        s = list(self.samples)
        rate: list[tuple[float, float]] = []
        for a, b in itertools.pairwise(s):
            dt = b.t - a.t
            if dt > 0:
                rate.append((b.t, max(0, b.transactions - a.transactions) * 60.0 / dt))
        return {"rate": rate, "registered": [(x.t, float(x.registered)) for x in s]}


def _label(seconds: float) -> str:
    return f"-{seconds / 60:.0f} min" if seconds >= 120 else f"-{seconds:.0f} s"


def svg_chart(series: dict[str, list[tuple[float, float]]], now: float | None = None) -> str:
    """Two polylines on a time axis of the last hour (or less, while the
    samples do not reach back that far); plain SVG, no scripts."""
    now = now or time.time()
    first = min((pts[0][0] for pts in series.values() if pts), default=now)
    span = min(HOUR, max(60.0, now - first))
    w, h, pad = 600, 180, 30
    t0 = now - span
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {w} {h}" role="img" '
        'aria-labelledby="chart-title" class="chart">',
        '<title id="chart-title">Transactions per minute and registered contacts, '
        f"last {span / 60:.0f} min</title>",
        f'<rect x="0" y="0" width="{w}" height="{h}" fill="#fff"/>',
        f'<line x1="{pad}" y1="{h - pad}" x2="{w - 5}" y2="{h - pad}" stroke="#888"/>',
        f'<line x1="{pad}" y1="5" x2="{pad}" y2="{h - pad}" stroke="#888"/>',
    ]
    for i in range(5):
        x = pad + i * (w - pad - 5) / 4
        label = "now" if i == 4 else _label(span * (4 - i) / 4)
        parts.append(
            f'<text x="{x:.0f}" y="{h - 10}" font-size="11" text-anchor="middle" fill="#444">{label}</text>'
        )
    colors = {"rate": "#c0392b", "registered": "#2471a3"}
    names = {"rate": "transactions/min", "registered": "registered contacts"}
    for n, (key, pts) in enumerate(series.items()):
        peak = max((v for _, v in pts), default=0.0) or 1.0
        coords = " ".join(
            f"{pad + (t - t0) / span * (w - pad - 5):.1f},{h - pad - v / peak * (h - pad - 25):.1f}"
            for t, v in pts
            if t >= t0
        )
        if coords:
            parts.append(f'<polyline fill="none" stroke="{colors[key]}" stroke-width="2" points="{coords}"/>')
        last = pts[-1][1] if pts else 0.0
        parts.append(
            f'<text x="{pad + 8 + n * 260}" y="16" font-size="12" fill="{colors[key]}">'
            f"{names[key]}: {last:.0f} (max {peak if pts else 0:.0f})</text>"
        )
    parts.append("</svg>")
    return "".join(parts)
