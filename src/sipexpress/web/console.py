"""The admin console's pages beside serweb's: server-wide call history
from ``acc`` (with CSV export), domains, aliases and groups, removing a
registration from the Online page, the server's recent log lines — and
the IM page that follows its message in the background.

Like the rest of the web app it reaches ser only over JSON-RPC
(``ul_dump``, ``ul_add``, ``ul_rm_contact``, ``domain_reload``,
``log_tail``, ``t_uac_dlg``) and the database (:mod:`console_store`).
"""

from __future__ import annotations

import csv
import io
import time
from collections.abc import Callable
from datetime import date
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute

from sipexpress.db import provisioning
from sipexpress.web import console_store as cs
from sipexpress.web import security as sec
from sipexpress.web.im import ImJobs, TooManyMessages
from sipexpress.web.serclient import SerDown, SerError
from sipexpress.web.store import Page

if TYPE_CHECKING:
    from sipexpress.web.app import Handler, WebApp

FL_PERMANENT = 128  # usrloc's permanent contact flag
ALIAS_TABLE = "aliases"
LOG_LEVELS = ("", "dbg", "info", "notice", "warn", "err")
LOG_LINES = (50, 100, 200, 500, 1000)


class Console:
    def __init__(self, web: WebApp) -> None:
        self.web = web
        self.ims = ImJobs(web.ser, web.cfg.outbound)

    def routes(self, r: Callable[[str, Handler, list[str] | None], BaseRoute]) -> list[BaseRoute]:
        post = ["POST"]
        get = ["GET"]
        return [
            r("/im", self.im, ["GET", "POST"]),
            r("/im/jobs/{job}", self.im_job, get),
            r("/admin/calls", self.calls, get),
            r("/admin/calls.csv", self.calls_csv, get),
            r("/admin/domains", self.domains, get),
            r("/admin/domains/change", self.domains_change, post),
            r("/admin/aliases", self.aliases, get),
            r("/admin/aliases/change", self.aliases_change, post),
            r("/admin/groups", self.groups, get),
            r("/admin/groups/change", self.groups_change, post),
            r("/admin/online", self.online, get),
            r("/admin/online/remove", self.online_remove, post),
            r("/admin/log", self.log, get),
            r("/admin/log.json", self.log_json, get),
        ]

    # -- instant messages ------------------------------------------------------------
    async def im(self, request: Request) -> Response:
        web = self.web
        me = web.user(request)
        values = {"to": request.query_params.get("to", "")[:128], "text": ""}
        if request.method == "GET":
            job_id = request.query_params.get("job", "")
            job = self.ims.get(job_id, me) if job_id else None
            if job_id and job is None:
                raise HTTPException(404, "This message is unknown (it may be older than ten minutes).")
            state = job.state(time.monotonic()) if job else None
            if job is not None:
                values["to"] = job.to  # ready for the next message to the same person
            return web.render(request, "im.html", form=values, job=job_id, job_state=state)
        form = await web.form(request)
        values = {"to": web.field(form, "to"), "text": web.field(form, "text")}
        errors = [
            e
            for e in (
                sec.check_uri(values["to"]),
                sec.check_text(values["text"], "a message", web.cfg.im_length, required=True),
            )
            if e
        ]
        if errors:
            return web.render(request, "im.html", 400, errors=errors, form=values)
        # a line holding just "." would end the body in t_uac_dlg's line format
        text = "\n".join(" ." if line == "." else line for line in values["text"].splitlines())
        try:
            job_id = self.ims.start(me, values["to"], text)
        except TooManyMessages:
            msg = "Three of your messages are still on their way; please wait for one of them."
            return web.render(request, "im.html", 429, errors=[msg], form=values)
        return web.redirect("/im?" + urlencode({"job": job_id}))

    async def im_job(self, request: Request) -> Response:
        job = self.ims.get(request.path_params["job"], self.web.user(request))
        if job is None:
            return JSONResponse({"state": "unknown", "message": "This message is unknown."}, 404)
        return JSONResponse(job.state(time.monotonic()))

    # -- call history ------------------------------------------------------------------
    def _call_filter(self, request: Request) -> tuple[cs.CallFilter, list[str], dict[str, str]]:
        qp = request.query_params
        raw = {k: qp.get(k, "").strip()[:128] for k in ("q", "user", "since", "until", "status", "method")}
        if "method" not in qp:
            raw["method"] = "INVITE"
        errors: list[str] = []
        dates: dict[str, date | None] = {}
        for k, label in (("since", "From"), ("until", "To")):
            try:
                dates[k] = date.fromisoformat(raw[k]) if raw[k] else None
            except ValueError:
                errors.append(f"{label} date: write it as YYYY-MM-DD.")
                dates[k] = None
        status = raw["status"]
        if status and not (
            status in cs.STATUS_CLASSES or (len(status) == 3 and status.isdigit() and status[0] != "0")
        ):
            errors.append("Status: a class (1-6) or a three-digit code such as 486.")
            status = ""
        user = raw["user"]
        if user:
            name, _, dom = user.partition("@")
            err = sec.check_username(name) or (sec.check_domain(dom) if dom else None)
            if err:
                errors.append("User: " + err)
                user = ""
        method = raw["method"].upper()
        if method and not sec.GROUP_RE.fullmatch(method):
            errors.append("Method: letters only, e.g. INVITE.")
            method = ""
        f = cs.CallFilter(raw["q"], user, dates["since"], dates["until"], status, method)
        return f, errors, raw

    async def calls(self, request: Request) -> Response:
        web = self.web
        await web.admin(request)
        f, errors, raw = self._call_filter(request)
        page = page_number(request)
        data = await cs.search_calls(web.cfg.db_url, f, page, web.cfg.page_size)
        query = urlencode(raw)
        return web.render(
            request,
            "admin_calls.html",
            400 if errors else 200,
            data=data,
            errors=errors,
            form=raw,
            query=query,
            classes=cs.STATUS_CLASSES,
        )

    async def calls_csv(self, request: Request) -> Response:
        web = self.web
        await web.admin(request)
        f, errors, _ = self._call_filter(request)
        if errors:
            raise HTTPException(400, " ".join(errors))
        rows = await cs.export_calls(web.cfg.db_url, f)
        buf = io.StringIO()
        csv.writer(buf, lineterminator="\r\n").writerows(cs.csv_rows(rows))
        name = f"calls-{date.today().isoformat()}.csv"
        return Response(
            buf.getvalue(),
            media_type="text/csv; charset=utf-8",
            headers={"content-disposition": f'attachment; filename="{name}"'},
        )

    # -- domains -----------------------------------------------------------------------
    async def domains(self, request: Request) -> Response:
        web = self.web
        await web.admin(request)
        rows = await cs.domains(web.cfg.db_url)
        return web.render(request, "admin_domains.html", rows=rows)

    async def domains_change(self, request: Request) -> Response:
        web = self.web
        await web.admin(request)
        form = await web.form(request)
        name, action = web.field(form, "domain").lower(), web.field(form, "action")
        err = sec.check_domain(name) if action in ("add", "remove") else "Unknown action."
        if err:
            web.flash(request, err, "error")
            return web.redirect("/admin/domains")
        present = name in {d["domain"] for d in await cs.domains(web.cfg.db_url)}
        if action == "add":
            done = not present
            if done:
                await provisioning.add_domain(web.cfg.db_url, name)
            msg = f"Domain {name} added." if done else f"Domain {name} is there already."
        else:
            done = present
            if done:
                await provisioning.remove_domain(web.cfg.db_url, name)
            msg = f"Domain {name} removed." if done else f"There is no domain {name}."
        if done:
            msg += " " + await self._domain_reload()
        web.flash(request, msg, "ok" if done else "error")
        return web.redirect("/admin/domains")

    async def _domain_reload(self) -> str:
        """The domain module caches the table (db_mode 1): reload it."""
        try:
            await self.web.ser.call("domain_reload")
        except SerDown:
            return "ser was not reachable: reload it later (serctl fifo domain_reload)."
        except SerError:
            return "(ser has no domain cache to reload.)"
        return "ser reloaded its domain list."

    # -- aliases -----------------------------------------------------------------------
    async def aliases(self, request: Request) -> Response:
        web = self.web
        await web.admin(request)
        res = await web.ser.call("ul_dump")
        rows: list[dict[str, Any]] | None = None
        for dom in res if isinstance(res, list) else []:
            if dom.get("domain") == ALIAS_TABLE:
                rows = [
                    {"alias": rec.get("aor"), "target": c.get("contact")}
                    for rec in dom.get("records", [])
                    for c in rec.get("contacts", [])
                ]
                rows.sort(key=lambda r: str(r["alias"]))
        return web.render(request, "admin_aliases.html", rows=rows, form={"domain": web.cfg.domain})

    async def aliases_change(self, request: Request) -> Response:
        web = self.web
        await web.admin(request)
        form = await web.form(request)
        alias, action = web.field(form, "alias"), web.field(form, "action")
        user, _, dom = web.field(form, "user").partition("@")
        err = sec.check_username(user) or sec.check_domain(dom)
        if err is None and await web.store.user(user, dom) is None:
            err = f"There is no user {user}@{dom}."
        if err:
            web.flash(request, err, "error")
        else:
            self._flash_alias(request, await self.change_alias(user, dom, alias, action))
        return web.redirect("/admin/aliases")

    def _flash_alias(self, request: Request, outcome: tuple[bool, str]) -> None:
        self.web.flash(request, outcome[1], "ok" if outcome[0] else "error")

    async def change_alias(self, user: str, dom: str, alias: str, action: str) -> tuple[bool, str]:
        """Add or remove ``alias@dom`` -> ``sip:user@dom`` in usrloc's
        ``aliases`` table (serweb's numeric aliases); (done, message)."""
        err = sec.check_username(alias) if action in ("add", "remove") else "Unknown action."
        err = err.replace("user name", "alias") if err else None
        if err is None and action == "add" and await self.web.store.name_taken(alias, dom):
            err = f"{alias}@{dom} is a user name already."
        if err:
            return False, err
        aor, contact = f"{alias}@{dom}", f"sip:{user}@{dom}"
        try:
            if action == "add":
                await self.web.ser.call(
                    "ul_add", [ALIAS_TABLE, aor, contact, "0", "1.00", "0", str(FL_PERMANENT)]
                )
            else:
                await self.web.ser.call("ul_rm_contact", [ALIAS_TABLE, aor, contact])
        except SerError as e:
            if isinstance(e, SerDown):
                raise
            return False, f"The alias was not changed: {e.code} {e.reason}"
        return True, f"Alias {aor} {'added' if action == 'add' else 'removed'}."

    # -- groups ------------------------------------------------------------------------
    async def groups(self, request: Request) -> Response:
        web = self.web
        await web.admin(request)
        group = request.query_params.get("group", "").strip()[:50]
        if group and not sec.GROUP_RE.fullmatch(group):
            group = ""
        names = await cs.group_names(web.cfg.db_url)
        data = await cs.group_members(web.cfg.db_url, group, page_number(request), web.cfg.page_size)
        return web.render(
            request,
            "admin_groups.html",
            names=names,
            group=group,
            data=data,
            form={"user": "", "group": group},
        )

    async def groups_change(self, request: Request) -> Response:
        web = self.web
        await web.admin(request)
        form = await web.form(request)
        group, action = web.field(form, "group"), web.field(form, "action")
        user, _, dom = web.field(form, "user").partition("@")
        back = "/admin/groups?" + urlencode({"group": web.field(form, "back")})
        err = None if action in ("grant", "revoke") else "Unknown action."
        if err is None and not sec.GROUP_RE.fullmatch(group):
            err = "A group name is 1-50 letters, digits, '_', '.' or '-'."
        err = err or sec.check_username(user) or sec.check_domain(dom)
        if err is None and action == "grant" and await web.store.user(user, dom) is None:
            err = f"There is no user {user}@{dom}."
        if err:
            web.flash(request, err, "error")
            return web.redirect(back)
        await web.store.set_group(user, dom, group, action == "grant")
        verb = "added to" if action == "grant" else "removed from"
        web.flash(request, f"{user}@{dom} {verb} group {group}.")
        return web.redirect(back)

    # -- online: every binding in usrloc, searchable, removable -----------------------
    async def online(self, request: Request) -> Response:
        web = self.web
        await web.admin(request)
        q = request.query_params.get("q", "").strip()[:128]
        res = await web.ser.call("ul_dump")
        rows = []
        for dom in res if isinstance(res, list) else []:
            for rec in dom.get("records", []):
                for c in rec.get("contacts", []):
                    permanent = bool(int(c.get("flags") or 0) & FL_PERMANENT)
                    if int(c.get("expires") or 0) > 0 or permanent:
                        rows.append(
                            {"table": dom.get("domain"), "aor": rec.get("aor"), "permanent": permanent, **c}
                        )
        if q:
            ql = q.lower()
            keys = ("aor", "contact", "source", "received", "user_agent")
            rows = [r for r in rows if any(ql in str(r.get(k) or "").lower() for k in keys)]
        rows.sort(key=lambda r: (str(r["aor"]), str(r["contact"])))
        page, size = page_number(request), web.cfg.page_size
        data = Page(rows[(page - 1) * size : page * size], len(rows), page, size)
        return web.render(request, "admin_online.html", data=data, q=q)

    # -- online: remove a registration -----------------------------------------------
    async def online_remove(self, request: Request) -> Response:
        web = self.web
        await web.admin(request)
        form = await web.form(request)
        table, aor, contact = (web.field(form, k) for k in ("table", "aor", "contact"))
        if not sec.GROUP_RE.fullmatch(table) or not aor or not contact or len(contact) > 255:
            web.flash(request, "No contact was chosen.", "error")
            return web.redirect("/admin/online")
        try:
            await web.ser.call("ul_rm_contact", [table, aor, contact])
        except SerError as e:
            if isinstance(e, SerDown) or e.code != 404:
                raise
            web.flash(request, f"Contact {contact} of {aor} was not found (it may have expired).", "error")
            return web.redirect("/admin/online")
        web.flash(request, f"Contact {contact} of {aor} removed.")
        return web.redirect("/admin/online")

    # -- log viewer --------------------------------------------------------------------
    def _log_query(self, request: Request) -> tuple[str, str, int, int]:
        qp = request.query_params
        level = qp.get("level", "")
        level = level if level in LOG_LEVELS else ""
        q = qp.get("q", "").strip()[:100]
        try:
            lines = int(qp.get("lines", "200"))
            after = max(0, int(qp.get("after", "0")))
        except ValueError:
            lines, after = 200, 0
        return level, q, lines if lines in LOG_LINES else 200, after

    async def _log_lines(self, level: str, q: str, lines: int, after: int) -> list[dict[str, Any]]:
        res = await self.web.ser.call("log_tail", [str(1000 if q else lines), level, str(after)])
        rows = [r for r in res if isinstance(r, dict)] if isinstance(res, list) else []
        if q:
            ql = q.lower()
            rows = [r for r in rows if ql in str(r.get("message", "")).lower()][-lines:]
        for r in rows:
            r["clock"] = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(float(r.get("time") or 0)))
        rows.reverse()  # newest first
        return rows

    async def log(self, request: Request) -> Response:
        web = self.web
        await web.admin(request)
        level, q, lines, _ = self._log_query(request)
        rows = await self._log_lines(level, q, lines, 0)
        return web.render(
            request,
            "admin_log.html",
            rows=rows,
            form={"level": level, "q": q, "lines": lines},
            levels=LOG_LEVELS,
            line_choices=LOG_LINES,
            last=max((int(r["seq"]) for r in rows), default=0),
        )

    async def log_json(self, request: Request) -> Response:
        await self.web.admin(request)
        try:
            rows = await self._log_lines(*self._log_query(request))
        except SerError as e:
            return JSONResponse({"error": f"{e.code} {e.reason}"}, status_code=503)
        return JSONResponse({"lines": rows})


def page_number(request: Request) -> int:
    try:
        return max(1, min(100000, int(request.query_params.get("page", "1"))))
    except ValueError:
        return 1
