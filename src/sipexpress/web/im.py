"""Instant messages sent in the background: the IM page starts a
``t_uac_dlg`` MESSAGE and answers at once; the browser then follows the
job (``/im/jobs/<id>``) until ser reports the final reply, which may take
tm's whole ``fr_timer`` when nobody answers."""

from __future__ import annotations

import asyncio
import secrets
import time
from dataclasses import dataclass
from typing import Any

from sipexpress.uac import flows
from sipexpress.web.serclient import SerClient

MAX_JOBS = 200  # finished jobs are forgotten first, oldest first
MAX_PENDING_PER_USER = 3
KEEP_FINISHED = 600.0  # seconds a finished job can still be looked at


class TooManyMessages(Exception):
    pass


@dataclass(slots=True)
class ImJob:
    owner: tuple[str, str]
    to: str
    started: float
    task: asyncio.Future[flows.Completion]
    finished: float = 0.0

    def state(self, now: float) -> dict[str, Any]:
        """What the page shows: ``pending`` (with the seconds waited), then
        ``delivered`` or ``failed`` with ser's final reply."""
        if not self.task.done():
            secs = int(now - self.started)
            return {
                "state": "pending",
                "elapsed": secs,
                "message": f"Sending to {self.to}: ser sent the MESSAGE and waits for the reply ({secs} s).",
            }
        elapsed = round((self.finished or now) - self.started, 1)
        exc = self.task.exception()
        if exc is not None:
            return {"state": "failed", "elapsed": elapsed, "status": "", "message": f"Sending failed: {exc}."}
        res = self.task.result()
        if res.code == 503 and not res.headers:
            msg = "The SIP server is not reachable right now; please try again in a moment."
            return {"state": "failed", "elapsed": elapsed, "status": res.status, "message": msg}
        if res.ok:
            msg = f"Message delivered to {self.to} ({res.status})."
            return {"state": "delivered", "elapsed": elapsed, "status": res.status, "message": msg}
        msg = f"The message was not delivered: {res.status}."
        return {"state": "failed", "elapsed": elapsed, "status": res.status, "message": msg}


class ImJobs:
    """The messages in flight and recently finished, per web process."""

    def __init__(self, ser: SerClient, outbound: str | None) -> None:
        self.ser = ser
        self.outbound = outbound
        self.jobs: dict[str, ImJob] = {}

    def start(self, owner: tuple[str, str], to: str, text: str) -> str:
        """Start sending; the job's id at once.  Raises
        :class:`TooManyMessages` while the user has too many in flight."""
        pending = sum(1 for j in self.jobs.values() if j.owner == owner and not j.task.done())
        if pending >= MAX_PENDING_PER_USER:
            raise TooManyMessages
        self._forget_old()
        lines = flows.message_lines(to, text, f"<sip:{owner[0]}@{owner[1]}>")
        fut = asyncio.ensure_future(self._send(lines))
        job = ImJob(owner, to, time.monotonic(), fut)
        fut.add_done_callback(lambda _: setattr(job, "finished", time.monotonic()))
        job_id = secrets.token_urlsafe(12)
        self.jobs[job_id] = job
        return job_id

    async def _send(self, lines: list[str]) -> flows.Completion:
        return flows.parse_completion(await self.ser.t_uac_dlg(lines, self.outbound))

    def get(self, job_id: str, owner: tuple[str, str]) -> ImJob | None:
        job = self.jobs.get(job_id)
        return job if job is not None and job.owner == owner else None

    def _forget_old(self) -> None:
        now = time.monotonic()
        for k in [k for k, j in self.jobs.items() if j.finished and now - j.finished > KEEP_FINISHED]:
            del self.jobs[k]
        done = [k for k, j in self.jobs.items() if j.finished]
        while len(self.jobs) >= MAX_JOBS and done:
            del self.jobs[done.pop(0)]
