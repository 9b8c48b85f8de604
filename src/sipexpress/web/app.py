"""The serweb successor: user self-care and administration pages.

Like serweb it is an application *of* the server: real-time data and
actions go through ser's management commands (``ul_show_contact``,
``ul_add``, ``ul_rm_contact``, ``t_uac_dlg``, ``t_stats`` …, here over
JSON-RPC), stored data through the SER tables (subscriber, grp, acc,
missed_calls, phonebook, pending).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import jinja2
from itsdangerous import BadSignature, URLSafeTimedSerializer
from starlette.applications import Starlette
from starlette.datastructures import FormData
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.sessions import SessionMiddleware
from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates

from sipexpress import __version__
from sipexpress.db.engine import DbError, DbUnavailable
from sipexpress.db.provisioning import UserExists, add_user, set_password
from sipexpress.mgmt.metrics import CONTENT_TYPE as METRICS_TYPE
from sipexpress.mgmt.metrics import exposition
from sipexpress.sip.errors import SipError
from sipexpress.sip.uri import SipUri
from sipexpress.uac import flows
from sipexpress.web import security as sec
from sipexpress.web.config import WebConfig
from sipexpress.web.console import FL_PERMANENT, Console, page_number
from sipexpress.web.mail import send_mail
from sipexpress.web.monitor import Monitor
from sipexpress.web.serclient import SerClient, SerDown, SerError
from sipexpress.web.store import DISABLED_GROUP, SORTABLE, Store

log = logging.getLogger("sipexpress.web")
HERE = Path(__file__).resolve().parent
MAX_FORM = 16384
EXPIRY_CHOICES = {"permanent": 0, "3600": 3600, "86400": 86400, "604800": 604800}


class FormError(Exception):
    """A user-correctable problem with a submitted form."""


class CsrfError(Exception):
    pass


Handler = Callable[[Request], Awaitable[Response]]


class WebApp:
    def __init__(self, cfg: WebConfig, ser: SerClient | None = None) -> None:
        self.cfg = cfg
        self.ser = ser or SerClient(cfg.jsonrpc, cfg.jsonrpc_secret, ca_list=cfg.jsonrpc_ca)
        self.store = Store(cfg.db_url)
        # failed log-ins: per address and user name (a guesser elsewhere must
        # not lock the user out), and (more leniently: NAT) per address
        self.user_limiter = sec.RateLimiter(cfg.login_attempts, cfg.login_window)
        self.sessions = sec.Sessions()
        self.ip_limiter = sec.RateLimiter(cfg.login_attempts * 4, cfg.login_window)
        self.mail_limiter = sec.RateLimiter(3, 3600)
        self.resets = URLSafeTimedSerializer(cfg.secret, salt="serweb-password-reset")
        self.monitor = Monitor(self.ser, cfg.sample_interval)
        env = jinja2.Environment(
            loader=jinja2.FileSystemLoader(str(HERE / "templates")),
            autoescape=True,
        )
        env.filters["dt"] = _fmt_dt
        env.filters["duration"] = _fmt_duration
        self.templates = Jinja2Templates(env=env)
        self.console = Console(self)

    # -- plumbing ------------------------------------------------------------------
    def render(self, request: Request, name: str, status: int = 200, **ctx: Any) -> HTMLResponse:
        sess = request.session
        flash = sess.pop("flash", [])
        ctx.setdefault("errors", [])
        ctx.setdefault("form", {})
        base = {
            "csrf": sec.csrf_token(sess),
            "me": sess.get("user"),
            "is_admin": bool(sess.get("admin")),
            "flash": flash,
            "version": __version__,
            "signup": self.cfg.signup,
            "path": request.url.path,
            "cfg": self.cfg,
        }
        base.update(ctx)
        resp = self.templates.TemplateResponse(request, name, base, status_code=status)
        return resp  # type: ignore[return-value]

    @staticmethod
    def flash(request: Request, text: str, kind: str = "ok") -> None:
        request.session.setdefault("flash", []).append([kind, text])

    @staticmethod
    def redirect(url: str) -> RedirectResponse:
        return RedirectResponse(url, status_code=303)

    async def form(self, request: Request) -> FormData:
        """The POSTed form after the CSRF check (raises :class:`CsrfError`)."""
        length = request.headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > MAX_FORM:
            raise FormError("The form is too large.")
        form = await request.form(max_files=0, max_fields=50)
        if not sec.csrf_ok(request.session, form.get("csrf")):
            raise CsrfError
        return form

    @staticmethod
    def field(form: FormData, name: str) -> str:
        v = form.get(name)
        return v.strip() if isinstance(v, str) else ""

    def user(self, request: Request) -> tuple[str, str]:
        u = request.session.get("user")
        if not isinstance(u, list) or len(u) != 2:
            raise _LoginRequired
        if not self.sessions.valid(self.session_key(str(u[0]), str(u[1])), request.session.get("sid")):
            request.session.clear()  # ended by a log-out or password change elsewhere
            raise _LoginRequired
        return str(u[0]), str(u[1])

    @staticmethod
    def session_key(user: str, domain: str) -> str:
        return f"{user.lower()}@{domain.lower()}"

    def end_sessions(self, request: Request | None, user: str, domain: str) -> None:
        """End every session of the user; ``request``'s own one goes on
        under a new id (whoever changed the password knows the new one)."""
        key = self.session_key(user, domain)
        self.sessions.end_all(key)
        if request is not None:
            request.session["sid"] = self.sessions.start(key)

    async def admin(self, request: Request) -> tuple[str, str]:
        """The logged-in administrator; the right is checked again on every
        request, so revoking it (or deleting the account) takes effect at once."""
        me = self.user(request)
        if request.session.get("admin") and await self.is_admin(*me):
            return me
        request.session["admin"] = False
        raise HTTPException(403, "This page is for administrators.")

    async def is_admin(self, username: str, domain: str) -> bool:
        if self.aor(username, domain).lower() in self.cfg.admins:
            return True
        return await self.store.is_admin(username, domain)

    @staticmethod
    def aor(user: str, domain: str) -> str:
        return f"{user}@{domain}"

    # -- log-in ----------------------------------------------------------------------
    async def login(self, request: Request) -> Response:
        form_values = {
            "domain": self.cfg.domain,
            "username": "",
            "next": request.query_params.get("next", ""),
        }
        if request.method == "GET":
            if request.session.get("user"):
                return self.redirect("/account")
            return self.render(request, "login.html", form=form_values)
        form = await self.form(request)
        username, domain = self.field(form, "username"), self.field(form, "domain") or self.cfg.domain
        password = form.get("password")
        password = password if isinstance(password, str) else ""
        form_values.update(username=username, domain=domain, next=self.field(form, "next"))
        errors = [e for e in (sec.check_username(username), sec.check_domain(domain)) if e]
        if not password:
            errors.append("Please enter your password.")
        if errors:
            return self.render(request, "login.html", 400, errors=errors, form=form_values)
        ip = request.client.host if request.client else "?"
        user_key = f"{ip} {self.session_key(username, domain)}"
        wait = max(self.ip_limiter.blocked(ip), self.user_limiter.blocked(user_key))
        if wait:
            msg = f"Too many failed log-ins. Try again in {int(wait // 60) + 1} minute(s)."
            return self.render(request, "login.html", 429, errors=[msg], form=form_values)
        ok = await self.store.check_password(username, domain, password)
        if ok and DISABLED_GROUP in await self.store.groups(username, domain):
            return self.render(
                request, "login.html", 403, errors=["This account is disabled."], form=form_values
            )
        if not ok:
            self.ip_limiter.fail(ip)
            self.user_limiter.fail(user_key)
            return self.render(
                request, "login.html", 401, errors=["Wrong user name or password."], form=form_values
            )
        self.user_limiter.reset(user_key)
        is_admin = await self.is_admin(username, domain)
        request.session.clear()  # new session: no fixation
        sid = self.sessions.start(self.session_key(username, domain))
        request.session.update(user=[username, domain], admin=is_admin, t=int(time.time()), sid=sid)
        sec.csrf_token(request.session)
        nxt = form_values["next"]
        safe = nxt.startswith("/") and not nxt.startswith("//") and "\\" not in nxt and len(nxt) < 200
        return self.redirect(nxt if safe else "/account")

    async def logout(self, request: Request) -> Response:
        await self.form(request)
        u = request.session.get("user")
        if isinstance(u, list) and len(u) == 2:
            self.sessions.end_all(self.session_key(str(u[0]), str(u[1])))  # on every device
        request.session.clear()
        self.flash(request, "You are logged out.")
        return self.redirect("/login")

    # -- sign-up ---------------------------------------------------------------------
    async def signup(self, request: Request) -> Response:
        if not self.cfg.signup:
            raise HTTPException(404, "Sign-up is off on this server (option web_signup).")
        values = {"username": "", "domain": self.cfg.domain, "email": "", "first_name": "", "last_name": ""}
        if request.method == "GET":
            return self.render(request, "signup.html", form=values)
        form = await self.form(request)
        for k in values:
            values[k] = self.field(form, k)
        values["domain"] = values["domain"] or self.cfg.domain
        pw = form.get("password")
        pw2 = form.get("password2")
        pw = pw if isinstance(pw, str) else ""
        errors = [
            e
            for e in (
                sec.check_username(values["username"]),
                sec.check_domain(values["domain"]),
                sec.check_password(pw, pw2 if isinstance(pw2, str) else ""),
                sec.check_email(values["email"]),
                sec.check_text(values["first_name"], "the first name", 25),
                sec.check_text(values["last_name"], "the last name", 45),
            )
            if e
        ]
        if values["domain"] != self.cfg.domain:
            errors.append(f"Sign-up is open for the domain {self.cfg.domain} only.")
        if not errors and await self.store.name_taken(values["username"], values["domain"]):
            errors.append(f"The user name {values['username']} is already taken; please choose another.")
        if errors:
            return self.render(request, "signup.html", 400, errors=errors, form=values)
        code = await self.store.add_pending(
            values["username"],
            values["domain"],
            pw,
            values["email"],
            values["first_name"],
            values["last_name"],
        )
        base = self.cfg.base_url or str(request.base_url)
        link = base.rstrip("/") + "/confirm?" + urlencode({"nr": code})
        body = (
            f"We are reserving the following SIP address for you: "
            f"sip:{values['username']}@{values['domain']}\n\n"
            f"To confirm the registration, open the following URL within 24 hours:\n{link}\n"
        )
        try:
            await send_mail(self.cfg.smtp, self.cfg.mail_from, values["email"], "Your SIP account", body)
        except Exception as e:
            log.error("sign-up mail to %s failed: %s", values["email"], e)
            return self.render(
                request,
                "signup.html",
                502,
                errors=["The confirmation e-mail could not be sent; please try again later."],
                form=values,
            )
        return self.render(request, "signup_sent.html", email=values["email"])

    async def confirm(self, request: Request) -> Response:
        code = request.query_params.get("nr", "")
        if not code or len(code) > 64:
            return self.render(
                request,
                "message.html",
                400,
                title="Confirmation",
                error="The confirmation link is incomplete.",
            )
        try:
            done = await self.store.confirm(code)
        except UserExists:
            done = None
        if done is None:
            return self.render(
                request,
                "message.html",
                404,
                title="Confirmation",
                error="This confirmation link is unknown or has expired (links are valid for 24 hours).",
            )
        self.flash(request, f"Your account sip:{done[0]}@{done[1]} is ready. Please log in.")
        return self.redirect("/login")

    # -- forgotten password: a one-hour link, void once the password changed --------
    @staticmethod
    def _reset_mark(ha1: str) -> str:
        return hashlib.sha256(ha1.encode()).hexdigest()[:16]

    def _reset_token(self, u: str, d: str, ha1: str) -> str:
        return self.resets.dumps([u, d, self._reset_mark(ha1)])

    async def _reset_user(self, token: str) -> tuple[str, str] | None:
        """The account a reset link is for, if the link is genuine, younger
        than an hour and the password has not changed since it was sent."""
        try:
            u, d, mark = self.resets.loads(token, max_age=3600)
        except (BadSignature, ValueError, TypeError):
            return None
        info = await self.store.reset_info(str(u), str(d))
        if info is None or not hmac.compare_digest(str(mark), self._reset_mark(info[1])):
            return None
        return str(u), str(d)

    async def forgot(self, request: Request) -> Response:
        values = {"username": "", "domain": self.cfg.domain}
        if request.method == "GET":
            return self.render(request, "forgot.html", form=values)
        form = await self.form(request)
        values = {
            "username": self.field(form, "username"),
            "domain": self.field(form, "domain") or self.cfg.domain,
        }
        errors = [
            e for e in (sec.check_username(values["username"]), sec.check_domain(values["domain"])) if e
        ]
        if errors:
            return self.render(request, "forgot.html", 400, errors=errors, form=values)
        key = f"{values['username'].lower()}@{values['domain'].lower()}"
        if not self.mail_limiter.blocked(key):
            self.mail_limiter.fail(key)
            info = await self.store.reset_info(values["username"], values["domain"])
            if info is not None and info[0]:
                token = self._reset_token(values["username"], values["domain"], info[1])
                link = (
                    (self.cfg.base_url or str(request.base_url)).rstrip("/")
                    + "/reset?"
                    + urlencode({"t": token})
                )
                body = f"To set a new password for sip:{key}, open this link within one hour:\n{link}\n"
                try:
                    await send_mail(self.cfg.smtp, self.cfg.mail_from, info[0], "Your SIP password", body)
                except Exception as e:
                    log.error("password mail for %s failed: %s", key, e)
        # the same answer whether or not the account exists
        self.flash(
            request,
            "If that account exists and has an e-mail address, a link to set a new password is on its way.",
        )
        return self.redirect("/login")

    async def reset(self, request: Request) -> Response:
        if request.method == "GET":
            token = request.query_params.get("t", "")
            if await self._reset_user(token) is None:
                return self.render(
                    request,
                    "message.html",
                    400,
                    title="New password",
                    error="This link is invalid, used or older than one hour.",
                )
            return self.render(request, "reset.html", token=token)
        form = await self.form(request)
        token = self.field(form, "t")
        who = await self._reset_user(token)
        if who is None:
            return self.render(
                request,
                "message.html",
                400,
                title="New password",
                error="This link is invalid, used or older than one hour.",
            )
        new, new2 = form.get("new"), form.get("new2")
        err = sec.check_password(new if isinstance(new, str) else "", new2 if isinstance(new2, str) else "")
        if err:
            return self.render(request, "reset.html", 400, token=token, errors=[err])
        await set_password(self.cfg.db_url, who[0], who[1], str(new))
        self.end_sessions(None, who[0], who[1])
        self.flash(request, "Your password was changed. Please log in.")
        return self.redirect("/login")

    # -- my account ------------------------------------------------------------------
    async def account(self, request: Request) -> Response:
        u, d = self.user(request)
        info = await self.store.user(u, d)
        if info is None:
            request.session.clear()
            return self.redirect("/login")
        groups = await self.store.groups(u, d)
        try:
            aliases = await self._aliases(u, d) or []
        except SerError:
            aliases = []
        return self.render(request, "account.html", info=info, groups=groups, aliases=aliases)

    async def account_profile(self, request: Request) -> Response:
        u, d = self.user(request)
        return await self._profile(request, u, d, "/account")

    async def _profile(self, request: Request, u: str, d: str, back: str) -> Response:
        form = await self.form(request)
        vals = {k: self.field(form, k) for k in ("first_name", "last_name", "email_address")}
        errors = [
            e
            for e in (
                sec.check_text(vals["first_name"], "the first name", 25),
                sec.check_text(vals["last_name"], "the last name", 45),
                sec.check_email(vals["email_address"], required=False),
            )
            if e
        ]
        if errors:
            for e in errors:
                self.flash(request, e, "error")
            return self.redirect(back)
        await self.store.update_profile(u, d, **vals)
        self.flash(request, "Your details were saved." if back == "/account" else "The details were saved.")
        return self.redirect(back)

    async def account_password(self, request: Request) -> Response:
        u, d = self.user(request)
        form = await self.form(request)
        old, new, new2 = (form.get(k) for k in ("old", "new", "new2"))
        old = old if isinstance(old, str) else ""
        err = None if old else "Please enter your current password."
        if err is None and not await self.store.check_password(u, d, old):
            err = "Your current password is wrong."
        err = err or sec.check_password(
            new if isinstance(new, str) else "", new2 if isinstance(new2, str) else ""
        )
        if err:
            self.flash(request, err, "error")
            return self.redirect("/account")
        await set_password(self.cfg.db_url, u, d, str(new))
        self.end_sessions(request, u, d)
        self.flash(request, "Your password was changed. Use the new one on your phones too.")
        return self.redirect("/account")

    # -- contacts (usrloc over management commands) -----------------------------------
    async def contacts(self, request: Request) -> Response:
        u, d = self.user(request)
        rows = await self._contacts(u, d)
        return self.render(request, "contacts.html", contacts=rows, choices=EXPIRY_CHOICES)

    async def _contacts(self, u: str, d: str) -> list[dict[str, Any]]:
        try:
            res = await self.ser.call("ul_show_contact", ["location", self.aor(u, d)])
        except SerError as e:
            if e.code == 404:
                return []
            raise
        rows = []
        for c in res if isinstance(res, list) else []:
            flags = int(c.get("flags") or 0)
            rows.append(
                {
                    "contact": c.get("contact", ""),
                    "q": c.get("q", ""),
                    "expires": int(c.get("expires") or 0),
                    "permanent": bool(flags & FL_PERMANENT),
                }
            )
        return rows

    async def contacts_add(self, request: Request) -> Response:
        u, d = self.user(request)
        form = await self.form(request)
        uri, exp = self.field(form, "contact"), self.field(form, "expires")
        err = sec.check_uri(uri, 255)
        if err is None and exp not in EXPIRY_CHOICES:
            err = "Please choose how long the contact stays."
        if err:
            self.flash(request, err, "error")
            return self.redirect("/contacts")
        seconds = EXPIRY_CHOICES[exp]
        params = ["location", self.aor(u, d), uri, str(seconds), "1.00", "0"]
        if seconds == 0:
            params.append(str(FL_PERMANENT))
        await self.ser.call("ul_add", params)
        self.flash(request, f"Contact {uri} added.")
        return self.redirect("/contacts")

    async def contacts_remove(self, request: Request) -> Response:
        u, d = self.user(request)
        form = await self.form(request)
        uri = self.field(form, "contact")
        if not uri or len(uri) > 255:
            self.flash(request, "No contact was chosen.", "error")
            return self.redirect("/contacts")
        try:
            await self.ser.call("ul_rm_contact", ["location", self.aor(u, d), uri])
        except SerError as e:
            if e.code != 404:
                raise
            self.flash(request, f"Contact {uri} was not found (it may have expired).", "error")
            return self.redirect("/contacts")
        self.flash(request, f"Contact {uri} removed.")
        return self.redirect("/contacts")

    # -- phonebook and click-to-dial ---------------------------------------------------
    async def phonebook(self, request: Request) -> Response:
        u, d = self.user(request)
        entries = await self.store.phonebook(u, d)
        await self._presence(entries[:100])
        return self.render(request, "phonebook.html", entries=entries)

    async def _presence(self, entries: list[dict[str, Any]]) -> None:
        """serweb's on-line status: ``ul_show_contact`` for entries in our
        domain (200 = on-line); others stay unknown."""

        async def one(e: dict[str, Any]) -> None:
            try:
                uri = SipUri.parse(e["sip_uri"])
            except SipError:
                return
            if uri.host.lower() != self.cfg.domain.lower() or not uri.user:
                return
            try:
                await self.ser.call("ul_show_contact", ["location", f"{uri.user}@{uri.host}"])
                e["online"] = True
            except SerDown:
                return
            except SerError:
                e["online"] = False

        await asyncio.gather(*(one(e) for e in entries))

    async def phonebook_add(self, request: Request) -> Response:
        u, d = self.user(request)
        form = await self.form(request)
        fname, lname, uri = self.field(form, "fname"), self.field(form, "lname"), self.field(form, "sip_uri")
        errors = [
            e
            for e in (
                sec.check_text(fname, "the first name", 32),
                sec.check_text(lname, "the last name", 32),
                sec.check_uri(uri),
            )
            if e
        ]
        if not fname and not lname and not errors:
            errors.append("Please enter a name.")
        if errors:
            entries = await self.store.phonebook(u, d)
            values = {"fname": fname, "lname": lname, "sip_uri": uri}
            return self.render(request, "phonebook.html", 400, entries=entries, errors=errors, form=values)
        await self.store.phonebook_add(u, d, fname, lname, uri)
        self.flash(request, f"{fname} {lname} added to the phonebook.")
        return self.redirect("/phonebook")

    def _entry_id(self, request: Request) -> int:
        try:
            return int(request.path_params["entry"])
        except ValueError:
            raise HTTPException(404) from None

    async def phonebook_delete(self, request: Request) -> Response:
        u, d = self.user(request)
        await self.form(request)
        await self.store.phonebook_delete(u, d, self._entry_id(request))
        self.flash(request, "Entry removed.")
        return self.redirect("/phonebook")

    async def phonebook_dial(self, request: Request) -> Response:
        u, d = self.user(request)
        await self.form(request)
        entry = await self.store.phonebook_entry(u, d, self._entry_id(request))
        if entry is None:
            raise HTTPException(404, "No such phonebook entry.")
        send = self.ser.t_uac_dlg_sender(self.cfg.outbound)
        res = await asyncio.to_thread(
            flows.click_to_dial, send, f"sip:{u}@{d}", entry["sip_uri"], flows.CONTROLLER, "."
        )
        if res.ok:
            self.flash(request, f"Your phone rings; answer it to call {entry['sip_uri']}.")
        else:
            steps = ", ".join(f"{n}: {s}" for n, _, s in res.steps)
            self.flash(request, f"Click-to-dial failed ({steps}). Is your phone registered?", "error")
        return self.redirect("/phonebook")

    # -- calls -----------------------------------------------------------------------
    async def calls(self, request: Request) -> Response:
        u, d = self.user(request)
        which = "acc" if request.query_params.get("list") == "history" else "missed_calls"
        page = page_number(request)
        data = await self.store.calls(which, u, d, page, self.cfg.page_size)
        return self.render(request, "calls.html", data=data, which=which)

    # -- administration --------------------------------------------------------------
    async def admin_users(self, request: Request) -> Response:
        await self.admin(request)
        qp = request.query_params
        q = qp.get("q", "").strip()[:64]
        sort = qp.get("sort", "username")
        sort = sort if sort in SORTABLE else "username"
        desc = qp.get("dir") == "desc"
        page = page_number(request)
        data = await self.store.search_users(q, page, self.cfg.page_size, sort, desc)
        return self.render(
            request,
            "admin_users.html",
            data=data,
            q=q,
            sort=sort,
            desc=desc,
            sortable=SORTABLE,
            form={"domain": self.cfg.domain},
        )

    async def admin_users_add(self, request: Request) -> Response:
        await self.admin(request)
        form = await self.form(request)
        u, d, email = self.field(form, "username"), self.field(form, "domain"), self.field(form, "email")
        pw = form.get("password")
        pw = pw if isinstance(pw, str) else ""
        errors = [
            e
            for e in (
                sec.check_username(u),
                sec.check_domain(d),
                sec.check_password(pw),
                sec.check_email(email, False),
            )
            if e
        ]
        if not errors:
            try:
                await add_user(self.cfg.db_url, u, d, pw, email)
            except UserExists:
                errors.append(f"The user {u}@{d} already exists.")
        if errors:
            data = await self.store.search_users("", 1, self.cfg.page_size)
            return self.render(
                request,
                "admin_users.html",
                400,
                data=data,
                q="",
                sort="username",
                desc=False,
                sortable=SORTABLE,
                errors=errors,
                form={"username": u, "domain": d, "email": email},
            )
        self.flash(request, f"User {u}@{d} added.")
        return self.redirect(_user_url(u, d))

    async def _target(self, request: Request) -> tuple[str, str, dict[str, Any]]:
        await self.admin(request)
        u, d = request.path_params["username"], request.path_params["domain"]
        info = await self.store.user(u, d)
        if info is None:
            raise HTTPException(404, f"There is no user {u}@{d}.")
        return u, d, info

    async def admin_user(self, request: Request) -> Response:
        u, d, info = await self._target(request)
        groups = await self.store.groups(u, d)
        aliases: list[str] | None = None
        try:
            contacts = await self._contacts(u, d)
            aliases = await self._aliases(u, d)
            ser_error = None
        except SerError as e:
            contacts, ser_error = [], _ser_message(e)
        return self.render(
            request,
            "admin_user.html",
            info=info,
            groups=groups,
            contacts=contacts,
            aliases=aliases,
            ser_error=ser_error,
        )

    async def admin_user_profile(self, request: Request) -> Response:
        u, d, _ = await self._target(request)
        return await self._profile(request, u, d, _user_url(u, d))

    async def admin_user_password(self, request: Request) -> Response:
        u, d, _ = await self._target(request)
        form = await self.form(request)
        pw = form.get("password")
        err = sec.check_password(pw if isinstance(pw, str) else "")
        if err:
            self.flash(request, err, "error")
        else:
            await set_password(self.cfg.db_url, u, d, str(pw))
            self.end_sessions(None, u, d)
            self.flash(request, f"Password of {u}@{d} changed.")
        return self.redirect(_user_url(u, d))

    async def admin_user_group(self, request: Request) -> Response:
        u, d, _ = await self._target(request)
        form = await self.form(request)
        group, action = self.field(form, "group"), self.field(form, "action")
        if not sec.GROUP_RE.fullmatch(group) or action not in ("grant", "revoke"):
            self.flash(request, "A group name is 1-50 letters, digits, '_', '.' or '-'.", "error")
        else:
            await self.store.set_group(u, d, group, action == "grant")
            verb = "added to" if action == "grant" else "removed from"
            self.flash(request, f"{u}@{d} {verb} group {group}.")
        return self.redirect(_user_url(u, d))

    async def _aliases(self, u: str, d: str) -> list[str] | None:
        """The user's aliases: AORs of usrloc table ``aliases`` whose contact
        is ``sip:user@domain`` (None: ser has no such table)."""
        res = await self.ser.call("ul_dump")
        target = f"sip:{u}@{d}".lower()
        for dom in res if isinstance(res, list) else []:
            if dom.get("domain") == "aliases":
                return sorted(
                    str(rec.get("aor"))
                    for rec in dom.get("records", [])
                    if any(str(c.get("contact", "")).lower() == target for c in rec.get("contacts", []))
                )
        return None

    async def admin_user_alias(self, request: Request) -> Response:
        u, d, _ = await self._target(request)
        form = await self.form(request)
        done, msg = await self.console.change_alias(
            u, d, self.field(form, "alias"), self.field(form, "action")
        )
        self.flash(request, msg, "ok" if done else "error")
        return self.redirect(_user_url(u, d))

    async def admin_user_delete(self, request: Request) -> Response:
        u, d, _ = await self._target(request)
        await self.form(request)
        with contextlib.suppress(SerError):  # no contacts, or ser down: the rows go anyway
            await self.ser.call("ul_rm", ["location", self.aor(u, d)])
        await self.store.delete_user(u, d)
        self.flash(request, f"User {u}@{d} deleted.")
        return self.redirect("/admin/users")

    async def _health_data(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for cmd in ("version", "uptime", "t_stats", "sl_stats", "ul_stats", "ps"):
            out[cmd] = await self.ser.call(cmd)
        return out

    async def admin_health(self, request: Request) -> Response:
        await self.admin(request)
        data = await self._health_data()
        return self.render(request, "admin_health.html", h=data)

    async def admin_health_json(self, request: Request) -> Response:
        await self.admin(request)
        try:
            data = await self._health_data()
        except SerError as e:
            return JSONResponse({"error": _ser_message(e)}, status_code=503)
        data["series"] = self.monitor.series()
        return JSONResponse(data)

    async def metrics(self, request: Request) -> Response:
        """Prometheus exposition of ser's statistics: no log-in (a scraper
        has none), a bearer token when ``web_metrics_token`` is set."""
        token = self.cfg.metrics_token
        if token and not hmac.compare_digest(
            request.headers.get("authorization", "").encode(), f"Bearer {token}".encode()
        ):
            return Response("unauthorized\n", 401, {"WWW-Authenticate": "Bearer"}, "text/plain")
        return Response(exposition(await self.ser.call("stats.snapshot")), media_type=METRICS_TYPE)

    async def admin_command(self, request: Request) -> Response:
        await self.admin(request)
        values = {"command": "", "params": ""}
        if request.method == "GET":
            try:
                names = await self.ser.call("which")
            except SerError:
                names = []
            return self.render(request, "admin_command.html", form=values, names=names, reply=None)
        form = await self.form(request)
        values = {"command": self.field(form, "command"), "params": str(form.get("params") or "")}
        errors = []
        if not values["command"]:
            errors.append("Please enter a command name.")
        elif not sec.GROUP_RE.fullmatch(values["command"]):
            errors.append("A command name is letters, digits, '_', '.' or '-'.")
        if len(values["params"]) > 8000:
            errors.append("The parameters may have at most 8000 characters.")
        reply: dict[str, Any] | None = None
        if not errors:
            params = values["params"].replace("\r\n", "\n").split("\n")
            while params and params[-1] == "":
                params.pop()
            try:
                result = await self.ser.call(values["command"], params)
                reply = {"ok": True, "status": "200", "body": _pretty(result)}
            except SerDown:
                raise
            except SerError as e:
                reply = {"ok": False, "status": f"{e.code} {e.reason}", "body": e.text}
        try:
            names = await self.ser.call("which")
        except SerError:
            names = []
        status = 400 if errors else 200
        return self.render(
            request, "admin_command.html", status, errors=errors, form=values, names=names, reply=reply
        )

    async def index(self, request: Request) -> Response:
        return self.redirect("/account" if request.session.get("user") else "/login")


class _LoginRequired(Exception):
    pass


def _user_url(u: str, d: str) -> str:
    from urllib.parse import quote

    return f"/admin/users/{quote(d, safe='')}/{quote(u, safe='')}"


def _pretty(result: Any) -> str:
    if isinstance(result, str):
        return result
    return json.dumps(result, indent=2, ensure_ascii=False, default=str)


def _fmt_dt(v: Any) -> str:
    if isinstance(v, datetime):
        return v.strftime("%Y-%m-%d %H:%M:%S")
    return str(v or "")


def _fmt_duration(v: Any) -> str:
    s = int(v or 0)
    if s >= 86400:
        return f"{s // 86400} d {s % 86400 // 3600} h"
    if s >= 3600:
        return f"{s // 3600} h {s % 3600 // 60} min"
    if s >= 60:
        return f"{s // 60} min {s % 60} s"
    return f"{s} s"


def _ser_message(e: SerError) -> str:
    if isinstance(e, SerDown):
        return "The SIP server is not reachable right now; please try again in a moment."
    return f"The SIP server answered: {e.code} {e.reason}"


def create_app(cfg: WebConfig, ser: SerClient | None = None) -> Starlette:
    web = WebApp(cfg, ser)

    def guard(fn: Handler) -> Handler:
        async def wrapped(request: Request) -> Response:
            try:
                return await fn(request)
            except _LoginRequired:
                if request.method == "GET":
                    return web.redirect("/login?" + urlencode({"next": request.url.path}))
                return web.redirect("/login")
            except CsrfError:
                return web.render(
                    request,
                    "message.html",
                    403,
                    title="Form rejected",
                    error="The form's security token is missing or wrong (the page may have expired). "
                    "Please reload the page and try again.",
                )
            except FormError as e:
                return web.render(request, "message.html", 400, title="Form rejected", error=str(e))
            except SerError as e:
                log.warning("web: %s %s: ser: %s %s", request.method, request.url.path, e, e.text[:200])
                return web.render(
                    request,
                    "message.html",
                    503 if isinstance(e, SerDown) else 502,
                    title="SIP server",
                    error=_ser_message(e),
                )
            except DbUnavailable as e:
                log.error("web: database: %s", e)
                return web.render(
                    request,
                    "message.html",
                    503,
                    title="Database",
                    error="The database is not reachable right now; please try again later.",
                )
            except DbError as e:
                log.error("web: database: %s", e)
                return web.render(
                    request,
                    "message.html",
                    400,
                    title="Database",
                    error="The database refused the data (too long or duplicate?).",
                )

        return wrapped

    def r(path: str, fn: Handler, methods: list[str] | None = None) -> Route:
        return Route(path, guard(fn), methods=methods or ["GET"])

    async def favicon(request: Request) -> Response:
        return FileResponse(HERE / "static" / "favicon.svg", media_type="image/svg+xml")

    post = ["POST"]
    routes = [
        r("/", web.index),
        r("/login", web.login, ["GET", "POST"]),
        r("/logout", web.logout, post),
        r("/signup", web.signup, ["GET", "POST"]),
        r("/confirm", web.confirm),
        r("/forgot", web.forgot, ["GET", "POST"]),
        r("/reset", web.reset, ["GET", "POST"]),
        r("/account", web.account),
        r("/account/profile", web.account_profile, post),
        r("/account/password", web.account_password, post),
        r("/contacts", web.contacts),
        r("/contacts/add", web.contacts_add, post),
        r("/contacts/remove", web.contacts_remove, post),
        r("/phonebook", web.phonebook),
        r("/phonebook/add", web.phonebook_add, post),
        r("/phonebook/{entry}/delete", web.phonebook_delete, post),
        r("/phonebook/{entry}/dial", web.phonebook_dial, post),
        r("/calls", web.calls),
        r("/admin/users", web.admin_users),
        r("/admin/users/add", web.admin_users_add, post),
        r("/admin/users/{domain}/{username}", web.admin_user),
        r("/admin/users/{domain}/{username}/profile", web.admin_user_profile, post),
        r("/admin/users/{domain}/{username}/password", web.admin_user_password, post),
        r("/admin/users/{domain}/{username}/group", web.admin_user_group, post),
        r("/admin/users/{domain}/{username}/alias", web.admin_user_alias, post),
        r("/admin/users/{domain}/{username}/delete", web.admin_user_delete, post),
        r("/admin/health", web.admin_health),
        r("/admin/health.json", web.admin_health_json),
        r("/admin/command", web.admin_command, ["GET", "POST"]),
        r("/metrics", web.metrics),
        *web.console.routes(r),
        Route("/favicon.ico", favicon),
        Mount("/static", StaticFiles(directory=str(HERE / "static")), name="static"),
    ]

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        title = {403: "Forbidden", 404: "Not found", 405: "Method not allowed"}.get(exc.status_code, "Error")
        detail = exc.detail if exc.detail and exc.status_code != 404 else "There is no such page."
        if exc.status_code == 404 and exc.detail and exc.detail != "Not Found":
            detail = exc.detail
        return web.render(request, "message.html", exc.status_code, title=title, error=detail)

    async def server_error(request: Request, exc: Exception) -> Response:
        log.exception("web: %s %s failed", request.method, request.url.path, exc_info=exc)
        return HTMLResponse(
            "<!doctype html><title>Error</title><p>Something went wrong on our side. "
            "The error was logged; please try again later.</p>",
            status_code=500,
        )

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        web.monitor.start()
        try:
            yield
        finally:
            await web.monitor.stop()
            await web.ser.close()

    app = Starlette(
        routes=routes,
        middleware=[
            Middleware(sec.SecurityHeaders),
            Middleware(
                SessionMiddleware,
                secret_key=cfg.secret,
                session_cookie="serweb_session",
                max_age=8 * 3600,
                same_site="strict",
                https_only=bool(cfg.base_url and cfg.base_url.startswith("https:")),
            ),
        ],
        exception_handlers={HTTPException: http_error, 500: server_error},
        lifespan=lifespan,
    )
    app.state.web = web
    return app
