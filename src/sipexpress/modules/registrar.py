"""registrar — REGISTER processing and location lookup (SER's ``registrar``).

Script functions: ``save(table)``, ``save_noreply(table)``,
``save_memory(table)``, ``lookup(table)``, ``registered(table)``.
Storage is usrloc's (:class:`~sipexpress.modules.usrloc.Udomain`); this
module only speaks SIP.

Theory of operation (RFC 3261 §10.3, SER 0.9 ``save.c``/``lookup.c``):
the REGISTER is reduced to a :class:`RegisterRequest` (AOR, Contacts with
their raw expires/q, Call-ID, CSeq ...), then :func:`plan_register` — pure,
time as an argument — compares it with the AOR's current bindings and
returns a :class:`RegisterPlan`: bindings to write and delete, the bindings
the AOR will have afterwards (for the 200's Contact), or an error.  The
plan is applied through usrloc, and the reply is sent statelessly with
``core.send_reply`` (counted in ``sl_stats``).

Hot path: when the table needs no ``await`` (db_mode 0, or 2 once loaded:
``Udomain.sync_writes()``) ``save`` runs fetch, plan and apply without
suspending (``_save_now``); modes 1 and 3 keep the per-AOR lock and the
awaited store.  A REGISTER with one Contact that adds or refreshes a
binding is planned by ``_plan_one`` (same steps and results as the general
planner; ``tests/unit/usrloc/test_fast_path.py`` compares them).

An ``expires`` below ``min_expires`` is raised to it and answered 200, as
SER 0.9 and Kamailio do (phones and sipsak's ``-U``, which asks for 15 s,
give up on a 423); ``min_expires_mode`` 1 answers ``423 Interval Too
Brief`` with ``Min-Expires`` instead (RFC 3261 §10.3 step 7).  Deviation
from SER 0.9, from the RFC: a request whose Call-ID matches a binding but
whose CSeq is not higher changes nothing (RFC §10.3 step 7; SER answered
200 without checking).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from sipexpress.core.context import Branch, Proto
from sipexpress.core.registry import ConfigError, FixupEnv, Module, Param, RouteType, ScriptFunction
from sipexpress.db.engine import DbError
from sipexpress.modules.usrloc import (
    FL_MEM,
    FL_NAT,
    Q_UNSPECIFIED,
    Ucontact,
    Udomain,
    Urecord,
    UsrlocModule,
    q2str,
    str2q,
)
from sipexpress.modules.usrloc.records import CState
from sipexpress.sip.errors import SipParseError
from sipexpress.sip.headers import NameAddr, split_values, unquote
from sipexpress.sip.uri import SipUri, unescape

if TYPE_CHECKING:
    from sipexpress.core.api import CoreAPI
    from sipexpress.core.context import RequestContext
    from sipexpress.sip.headers import Contact
    from sipexpress.sip.message import SipMessage

log = logging.getLogger("sipexpress.registrar")

# P-Registrar-Error texts (reply.c) and their status codes
R_TO_USER = (400, "No username in To URI")
R_AOR_PARSE = (400, "Error while parsing AOR")
R_INV_EXP = (400, "Invalid expires param in contact")
R_INV_Q = (400, "Invalid q param in contact")
R_PARSE = (400, "Message parse error")
R_TO_MISS = (400, "To header not found")
R_CID_MISS = (400, "Call-ID header not found")
R_CS_MISS = (400, "CSeq header not found")
R_INV_CSEQ = (400, "Invalid CSeq number")
R_PARSE_EXP = (400, "Expires parse error")
R_PARSE_CONT = (400, "Contact parse error")
R_STAR_EXP = (400, "* used in contact and expires is not zero")
R_STAR_CONT = (400, "* used in contact and more than 1 contact")
R_UNESCAPE = (400, "Error while unescaping username")
R_AOR_LEN = (500, "Address Of Record too long")
R_UL_GET_R = (500, "usrloc_record_get failed")
R_UL_INS_C = (500, "usrloc_contact_insert failed")
R_TOO_MANY = (503, "Too many registered contacts")
R_OOO = (200, "Out of order request")
R_RETRANS = (200, "Retransmission")
R_TOO_BRIEF = (423, "Interval Too Brief")
R_PATH_UNSUP = (420, "Path header not supported")
R_OB_UNSUP_EDGE = (439, "No support for Outbound on edge proxy")
R_OB_REQD = (421, "Outbound support required")

REASONS = {
    200: "OK",
    400: "Bad Request",
    420: "Bad Extension",
    421: "Extension Required",
    423: "Interval Too Brief",
    439: "First Hop Lacks Outbound Support",
    500: "Server Internal Error",
    503: "Service Unavailable",
}

MAX_BRANCHES = 11  # besides the request URI (SER's MAX_BRANCHES 12)


class RegistrarError(Exception):
    def __init__(self, err: tuple[int, str]) -> None:
        super().__init__(err[1])
        self.code, self.text = err


@dataclass(frozen=True, slots=True)
class RegisterConfig:
    default_expires: int = 3600
    default_q: int = Q_UNSPECIFIED
    min_expires: int = 60
    max_expires: int = 0
    max_contacts: int = 0
    min_expires_mode: int = 0
    desc_time_order: bool = False


@dataclass(slots=True)
class ContactSpec:
    """One Contact of the REGISTER: URI and raw parameters."""

    uri: str
    expires: str | None = None  # the expires param as written
    q: str | None = None
    received: str | None = None
    instance: str | None = None  # RFC 5626 +sip.instance, with reg_id
    reg_id: int = 0


@dataclass(slots=True)
class RegisterRequest:
    aor: str
    callid: str
    cseq: int
    star: bool = False
    contacts: list[ContactSpec] = field(default_factory=list)
    expires_hdr: int | None = None
    user_agent: str = ""
    received: str | None = None  # e.g. set by a NAT helper (received_avp)
    flags: int = 0  # FL_NAT, FL_MEM
    socket: str | None = None
    path: str | None = None
    source: tuple[str, int] | None = None  # the REGISTER's source address (the web console shows it)
    reply_headers: list[str] = field(default_factory=list)  # Path echo, Require: outbound


@dataclass(slots=True)
class RegisterPlan:
    upserts: list[Ucontact] = field(default_factory=list)
    deletes: list[str] = field(default_factory=list)
    result: list[Ucontact] = field(default_factory=list)  # bindings afterwards, in order
    error: tuple[int, str] | None = None
    min_expires: int = 0  # for 423

    @property
    def changes(self) -> bool:
        return bool(self.upserts or self.deletes)


def contact_expires(spec: ContactSpec, expires_hdr: int | None, cfg: RegisterConfig) -> int:
    """Contact param, else Expires header, else default; an unparsable
    param counts as 3600 (SER ``sip_msg.c``)."""
    if spec.expires is not None:
        v = unquote(spec.expires).strip()
        # SER's str2int: anything but a 32-bit unsigned number counts as 3600
        return int(v) if v.isdigit() and len(v) <= 10 and int(v) <= 0xFFFFFFFF else 3600
    if expires_hdr is not None:
        return expires_hdr
    return cfg.default_expires


def plan_register(rec: Urecord | None, req: RegisterRequest, now: float, cfg: RegisterConfig) -> RegisterPlan:
    """Decide what a REGISTER does to the AOR's bindings (RFC 3261 §10.3
    steps 6-8).  Pure: ``rec`` is not modified."""
    if not req.star and len(req.contacts) == 1:
        plan1 = _plan_one(rec, req, now, cfg)
        if plan1 is not None:
            return plan1
    return _plan_general(rec, req, now, cfg)


def _plan_general(rec: Urecord | None, req: RegisterRequest, now: float, cfg: RegisterConfig) -> RegisterPlan:
    """:func:`plan_register` for any REGISTER (``*``, several Contacts,
    removals); tests compare :func:`_plan_one` with it."""
    plan = RegisterPlan()
    current = list(rec.contacts) if rec is not None else []
    valid_now = [c for c in current if c.valid(now)]
    if req.star:
        if req.expires_hdr != 0:
            plan.error = R_STAR_EXP
            return plan
        if req.contacts:
            plan.error = R_STAR_CONT
            return plan
        for c in current:
            if c.callid == req.callid and req.cseq <= c.cseq:
                plan.error = R_RETRANS if req.cseq == c.cseq else R_OOO
                plan.result = valid_now
                return plan
        plan.deletes = [c.uri for c in current]
        return plan
    if not req.contacts:
        plan.result = valid_now
        return plan

    by_uri = {c.uri: c for c in current}
    int_now = int(now)
    new: dict[str, Ucontact] = {}
    dels: list[str] = []
    for spec in req.contacts:
        e = contact_expires(spec, req.expires_hdr, cfg)
        if e != 0:
            if e < cfg.min_expires:
                if cfg.min_expires_mode:
                    plan.error = R_TOO_BRIEF
                    plan.min_expires = cfg.min_expires
                    return plan
                e = cfg.min_expires
            if cfg.max_expires and e > cfg.max_expires:
                e = cfg.max_expires
        if spec.q is not None:
            try:
                q = str2q(spec.q)
            except ValueError:
                plan.error = R_INV_Q
                return plan
        else:
            q = cfg.default_q
        old = by_uri.get(spec.uri)
        if old is not None and old.callid == req.callid and req.cseq <= old.cseq:
            # RFC 3261 §10.3 step 7: the update is aborted
            plan.error = R_RETRANS if req.cseq == old.cseq else R_OOO
            plan.result = valid_now
            return plan
        if e == 0:
            new.pop(spec.uri, None)
            if old is not None:
                dels.append(spec.uri)
            continue
        if spec.uri in dels:
            dels.remove(spec.uri)
        if spec.reg_id:
            # RFC 5626 §6 step 3: the same instance and reg-id is the same
            # binding, whatever its contact URI now says
            for c in current:
                if c.instance == spec.instance and c.reg_id == spec.reg_id and c.uri != spec.uri:
                    if c.uri not in dels:
                        dels.append(c.uri)
                    new.pop(c.uri, None)
        new[spec.uri] = Ucontact(
            aor=req.aor,
            uri=spec.uri,
            expires=int_now + e,
            q=q,
            callid=req.callid,
            cseq=req.cseq,
            flags=req.flags,
            user_agent=req.user_agent,
            received=spec.received or req.received,
            socket=req.socket,
            path=req.path,
            source=req.source,
            instance=spec.instance,
            reg_id=spec.reg_id,
        )
    touched = set(new) | set(dels)
    kept = [c for c in valid_now if c.uri not in touched]
    result = Urecord(req.aor, kept)
    for c in new.values():
        result.place(c, cfg.desc_time_order)
    if cfg.max_contacts and len(result.contacts) > cfg.max_contacts:
        plan.error = R_TOO_MANY
        plan.result = valid_now
        return plan
    plan.upserts = list(new.values())
    plan.deletes = dels
    plan.result = result.contacts
    return plan


def _plan_one(
    rec: Urecord | None, req: RegisterRequest, now: float, cfg: RegisterConfig
) -> RegisterPlan | None:
    """:func:`plan_register` for the everyday REGISTER, one Contact that
    adds or refreshes a binding (same steps, same order, fewer objects);
    ``None`` for anything else (removal), left to the general code."""
    spec = req.contacts[0]
    if spec.reg_id:
        return None  # an Outbound binding may replace another: the general code
    e = contact_expires(spec, req.expires_hdr, cfg)
    if e == 0:
        return None
    if e < cfg.min_expires:
        if cfg.min_expires_mode:
            return RegisterPlan(error=R_TOO_BRIEF, min_expires=cfg.min_expires)
        e = cfg.min_expires
    if cfg.max_expires and e > cfg.max_expires:
        e = cfg.max_expires
    if spec.q is not None:
        try:
            q = str2q(spec.q)
        except ValueError:
            return RegisterPlan(error=R_INV_Q)
    else:
        q = cfg.default_q
    uri = spec.uri
    current = rec.contacts if rec is not None else None
    old = None
    if current:
        for c in current:
            if c.uri == uri:
                old = c
        if old is not None and old.callid == req.callid and req.cseq <= old.cseq:
            # RFC 3261 §10.3 step 7: the update is aborted
            return RegisterPlan(
                error=R_RETRANS if req.cseq == old.cseq else R_OOO,
                result=[c for c in current if c.valid(now)],
            )
    new = Ucontact(
        req.aor,
        uri,
        int(now) + e,
        q,
        req.callid,
        req.cseq,
        req.flags,
        0,
        req.user_agent,
        spec.received or req.received,
        req.socket,
        req.path,
        CState.CS_NEW,
        req.source,
    )
    if not current or (len(current) == 1 and old is not None):
        result = [new]
    else:
        rec2 = Urecord(req.aor, [c for c in current if c.uri != uri and c.valid(now)])
        rec2.place(new, cfg.desc_time_order)
        result = rec2.contacts
    if cfg.max_contacts and len(result) > cfg.max_contacts:
        return RegisterPlan(error=R_TOO_MANY, result=[c for c in current or () if c.valid(now)])
    return RegisterPlan([new], [], result)


def contact_header(contacts: Sequence[Ucontact], now: float, received_param: str = "received") -> str | None:
    """The 200's ``Contact:`` line listing every binding (SER ``build_contact``)."""
    if not contacts:
        return None
    n = int(now)
    if len(contacts) == 1:
        return f"Contact: {_contact_value(contacts[0], n, received_param)}\r\n"
    return "Contact: " + ", ".join([_contact_value(c, n, received_param) for c in contacts]) + "\r\n"


def _contact_value(c: Ucontact, now: int, received_param: str) -> str:
    if c.q == Q_UNSPECIFIED:
        v = f"<{c.uri}>;expires={int(c.expires - now)}"
    else:
        v = f"<{c.uri}>;q={q2str(c.q)};expires={int(c.expires - now)}"
    if c.received:
        return f'{v};{received_param}="{c.received}"'
    return v


class RegistrarModule(Module):
    name = "registrar"
    depends: ClassVar[tuple[str, ...]] = ("usrloc",)
    params: ClassVar[tuple[Param, ...]] = (
        Param("default_expires", int, 3600),
        Param("default_q", int, Q_UNSPECIFIED, "thousandths; -1 unspecified"),
        Param("append_branches", int, 1),
        Param("case_sensitive", int, 0),
        Param("desc_time_order", int, 0),
        Param("nat_flag", int, 4),
        Param("min_expires", int, 60),
        Param("max_expires", int, 0),
        Param("max_contacts", int, 0),
        Param("retry_after", int, 0),
        Param("use_domain", int, 0),
        Param("realm_prefix", str, ""),
        Param("received_param", str, "received"),
        Param("received_avp", int, 42),
        Param(
            "min_expires_mode", int, 0, "0: raise to min_expires (SER, Kamailio); 1: 423 Interval Too Brief"
        ),
        Param("use_path", int, 0, "store the REGISTER's Path (RFC 3327); lookup routes through it"),
        Param(
            "path_mode",
            int,
            2,
            "0 store Path, never echo it; 1 echo it when the UA supports path; 2 refuse with 420 when it does not",
        ),
        Param("path_use_received", int, 0, "lookup sends to the received= of the first Path URI"),
        Param("outbound_mode", int, 0, "RFC 5626: 0 ignore reg-id; 1 support Outbound; 2 require it"),
    )
    counters = (
        ("accepted_registrations", "REGISTERs saved (or queried) with a 200"),
        ("rejected_registrations", "REGISTERs refused (4xx/5xx)"),
    )

    def __init__(self, core: CoreAPI) -> None:
        super().__init__(core)
        self._cfg: RegisterConfig | None = None
        self._ul: UsrlocModule | None = None
        # parameters read per REGISTER, set with _cfg
        self._nat_mask = 0
        self._received_param = "received"
        self._lower_user = True
        self._use_domain = False
        self._use_path = False
        self._outbound = 0
        self.accepted_registrations = 0
        self.rejected_registrations = 0

    # -- set-up ------------------------------------------------------------------
    @property
    def cfg(self) -> RegisterConfig:
        if self._cfg is None:
            v = self.values
            self._cfg = RegisterConfig(
                default_expires=int(v["default_expires"]),
                default_q=int(v["default_q"]),
                min_expires=int(v["min_expires"]),
                max_expires=int(v["max_expires"]),
                max_contacts=int(v["max_contacts"]),
                min_expires_mode=int(v["min_expires_mode"]),
                desc_time_order=bool(v["desc_time_order"] or self.usrloc.values["desc_time_order"]),
            )
            self._nat_mask = 1 << int(v["nat_flag"])
            self._received_param = str(v["received_param"])
            self._lower_user = not v["case_sensitive"]
            self._use_domain = bool(v["use_domain"])
            self._use_path = bool(v["use_path"])
            self._outbound = int(v["outbound_mode"])
        return self._cfg

    def set_param(self, name: str, value: Any) -> None:
        super().set_param(name, value)
        self._cfg = None

    @property
    def usrloc(self) -> UsrlocModule:
        if self._ul is None:
            ul = self.core.module("usrloc")
            if not isinstance(ul, UsrlocModule):
                raise ConfigError('registrar needs the usrloc module (loadmodule "usrloc")')
            self._ul = ul
        return self._ul

    def _fixup_table(self, args: Sequence[Any], env: FixupEnv) -> Sequence[Any]:
        if not args or not isinstance(args[0], str) or not args[0]:
            raise ConfigError('a usrloc table name is expected, e.g. save("location")')
        return (self.usrloc.register_domain(args[0]),)

    def _domain(self, table: Udomain | str) -> Udomain:
        if isinstance(table, Udomain):
            return table
        return self.usrloc.register_domain(table)

    def functions(self) -> Sequence[ScriptFunction]:
        fx = self._fixup_table
        rf = RouteType.REQUEST | RouteType.FAILURE
        return (
            ScriptFunction("save", self.save, (1,), fx, RouteType.REQUEST, True, "process a REGISTER, reply"),
            ScriptFunction(
                "save_noreply", self.save_noreply, (1,), fx, RouteType.REQUEST, True, "save, no reply"
            ),
            ScriptFunction(
                "save_memory", self.save_memory, (1,), fx, RouteType.REQUEST, True, "save to memory only"
            ),
            ScriptFunction("lookup", self.lookup, (1,), fx, rf, True, "RURI := registered contact(s)"),
            ScriptFunction(
                "registered", self.registered, (1,), fx, rf, True, "is the RURI's AOR registered?"
            ),
        )

    # -- AOR -----------------------------------------------------------------------
    def aor_from_uri(self, uri: SipUri) -> str:
        if uri.user is None or uri.user == "":
            raise RegistrarError(R_TO_USER)
        try:
            user = unescape(uri.user)
        except Exception:
            raise RegistrarError(R_UNESCAPE) from None
        if self._cfg is None:
            self.cfg  # noqa: B018  (sets _lower_user and _use_domain)
        if self._lower_user:
            user = user.lower()
        if self._use_domain:
            host = uri.host.lower()
            prefix = self.values["realm_prefix"]
            if prefix and host.startswith(prefix):
                host = host[len(prefix) :]
            return f"{user}@{host}"
        return user

    # -- REGISTER --------------------------------------------------------------------
    def parse_register(self, ctx: RequestContext, flags: int) -> RegisterRequest:
        msg = ctx.msg
        try:
            to = msg.to
        except SipParseError:
            raise RegistrarError(R_TO_MISS if not msg.has_header("to") else R_PARSE) from None
        try:
            aor = self.aor_from_uri(SipUri.parse(to.uri))
        except SipParseError:
            raise RegistrarError(R_AOR_PARSE) from None
        try:
            callid = msg.call_id
        except SipParseError:
            raise RegistrarError(R_CID_MISS) from None
        try:
            cseq = msg.cseq.num
        except SipParseError:
            raise RegistrarError(R_CS_MISS if not msg.has_header("cseq") else R_INV_CSEQ) from None
        try:
            expires_hdr = msg.expires
        except SipParseError:
            raise RegistrarError(R_PARSE_EXP) from None
        try:
            clist = msg.contacts
        except SipParseError:
            items = [x for v in msg.header_all("contact") for x in split_values(v, keep_empty=True)]
            raise RegistrarError(R_STAR_CONT if "*" in items else R_PARSE_CONT) from None
        if self._cfg is None:
            self.cfg  # noqa: B018  (sets _received_param and _nat_mask)
        rp = self._received_param
        if len(clist) == 1:
            params = clist[0].params
            rv = params.get(rp)
            specs = [
                ContactSpec(clist[0].uri, params.get("expires"), params.get("q"), unquote(rv) if rv else None)
            ]
        else:
            specs = [
                ContactSpec(c.uri, c.params.get("expires"), c.params.get("q"), _unq(c.params.get(rp)))
                for c in clist
            ]
        if ctx.flags & self._nat_mask:
            flags |= FL_NAT
        rcv = ctx.rcv
        path = None
        extra: list[str] = []
        if self._use_path or self._outbound:
            path, extra = self._extensions(msg, specs, clist)
        received = ctx.data.get("received")
        if received is None and rcv.proto in _WS_PROTOS:
            # RFC 7118 §5: the client is reached over its connection only
            received = _flow_uri(rcv.proto, rcv.src_ip, rcv.src_port)
        return RegisterRequest(
            aor,
            callid,
            cseq,
            clist.star,
            specs,
            expires_hdr,
            msg.header("user-agent") or "Unknown",
            received,
            flags,
            f"{_PROTO_NAMES[rcv.proto]}:{rcv.dst_ip}:{rcv.dst_port}",
            ", ".join(path) if path else None,
            (rcv.src_ip, rcv.src_port),
            extra,
        )

    def _extensions(
        self, msg: SipMessage, specs: list[ContactSpec], clist: Sequence[Contact]
    ) -> tuple[list[str] | None, list[str]]:
        """Path (RFC 3327 §5.3) and Outbound (RFC 5626 §6) of a REGISTER:
        the Path values to store, the reply's extra headers; fills the
        specs' instance and reg-id.  Raises RegistrarError."""
        supported = {t.strip().lower() for v in msg.header_all("supported") for t in v.split(",")}
        extra: list[str] = []
        path = msg.header_all("path") if self._use_path and msg.has_header("path") else None
        if path:
            mode = int(self.values["path_mode"])
            if "path" not in supported:
                if mode == 2:
                    raise RegistrarError(R_PATH_UNSUP)
            elif mode:
                extra.append(f"Path: {', '.join(path)}\r\n")
        if self._outbound:
            with_reg_id = False
            for spec, c in zip(specs, clist, strict=True):
                rid = c.params.get("reg-id")
                inst = c.params.get("+sip.instance")
                if rid is None or inst is None:
                    continue
                try:
                    reg_id = int(rid)
                except ValueError:
                    raise RegistrarError(R_PARSE_CONT) from None
                if path and not _first_path_has_ob(path):
                    raise RegistrarError(R_OB_UNSUP_EDGE)  # RFC 5626 §6 step 2
                spec.instance, spec.reg_id = unquote(inst), reg_id
                with_reg_id = True
            if with_reg_id:
                extra.append("Require: outbound\r\n")
            elif self._outbound == 2 and "outbound" not in supported:
                raise RegistrarError(R_OB_REQD)
        return path, extra

    def _save_now(self, ctx: RequestContext, d: Udomain, flags: int, reply: bool) -> int:
        """:meth:`_save` for a table whose read-modify-write needs no
        ``await`` (``d.sync_writes()``: db_mode 0, or 2 once loaded)."""
        now = self.usrloc.clock()
        try:
            req = self.parse_register(ctx, flags)
            rec = d.get(req.aor)
            if d.db_mode:
                self._check_db_sizes(req)
            cfg = self._cfg if self._cfg is not None else self.cfg
            plan = plan_register(rec, req, now, cfg)
            if plan.error is not None and plan.error[0] != 200:
                if plan.error == R_TOO_BRIEF:
                    hdr = [f"Min-Expires: {plan.min_expires}\r\n"]
                    return self._reply(ctx, 423, hdr, reply, error=True)
                raise RegistrarError(plan.error)
            if plan.upserts or plan.deletes:
                d.apply_now(req.aor, plan.upserts, plan.deletes)
        except RegistrarError as e:
            return self._reply_error(ctx, e, reply)
        contact = contact_header(plan.result, now, self._received_param)
        hdrs = [contact] if contact else []
        if req.reply_headers:
            hdrs += req.reply_headers
        return self._reply(ctx, 200, hdrs, reply)

    def _reply_error(self, ctx: RequestContext, e: RegistrarError, reply: bool) -> int:
        hdrs = [f"P-Registrar-Error: {e.text}\r\n"]
        if e.code == 420:
            hdrs.append("Unsupported: path\r\n")
        elif e.code == 421:
            hdrs.append("Require: outbound\r\n")
        if e.code >= 500 and self.values["retry_after"]:
            hdrs.append(f"Retry-After: {self.values['retry_after']}\r\n")
        return self._reply(ctx, e.code, hdrs, reply, error=True)

    async def _save(self, ctx: RequestContext, table: Udomain | str, flags: int, reply: bool) -> int:
        d = self._domain(table)
        if d.sync_writes():
            return self._save_now(ctx, d, flags, reply)
        now = self.usrloc.clock()
        try:
            req = self.parse_register(ctx, flags)
            # db_mode 1/3: one save of an AOR at a time, so a retransmission
            # is answered only once the first copy's binding is stored
            async with d.lock(req.aor):
                try:
                    rec = await d.fetch(req.aor)
                except DbError as e:
                    log.error("registrar: %s", e)
                    raise RegistrarError(R_UL_GET_R) from None
                if d.db_mode:
                    self._check_db_sizes(req)
                plan = plan_register(rec, req, now, self.cfg)
                if plan.error is not None and plan.error[0] != 200:
                    if plan.error == R_TOO_BRIEF:
                        hdr = [f"Min-Expires: {plan.min_expires}\r\n"]
                        return self._reply(ctx, 423, hdr, reply, error=True)
                    raise RegistrarError(plan.error)
                if plan.changes:
                    try:
                        await d.apply(req.aor, plan.upserts, plan.deletes)
                    except DbError as e:
                        log.error("registrar: %s", e)
                        raise RegistrarError(R_UL_INS_C) from None
        except RegistrarError as e:
            return self._reply_error(ctx, e, reply)
        contact = contact_header(plan.result, now, self.values["received_param"])
        hdrs = [contact] if contact else []
        if req.reply_headers:
            hdrs += req.reply_headers
        return self._reply(ctx, 200, hdrs, reply)

    @staticmethod
    def _check_db_sizes(req: RegisterRequest) -> None:
        """The location table's column sizes (username 64, domain 128,
        contact and received 255): refuse what the database would reject."""
        user, _, dom = req.aor.partition("@")
        if len(user) > 64 or len(dom) > 128:
            raise RegistrarError(R_AOR_LEN)
        if any(len(c.uri) > 255 or len(c.received or "") > 255 for c in req.contacts):
            raise RegistrarError(R_PARSE_CONT)

    def _reply(
        self, ctx: RequestContext, code: int, hdrs: list[str], reply: bool, error: bool = False
    ) -> int:
        if error:
            self.rejected_registrations += 1
        else:
            self.accepted_registrations += 1
        if not reply:
            return 0 if error else 1
        if ctx.core.send_reply(ctx, code, REASONS.get(code, "OK"), hdrs) < 0:
            return -1
        return 0 if error else 1

    async def save(self, ctx: RequestContext, table: Udomain | str) -> int:
        d = table if isinstance(table, Udomain) else self._domain(table)
        if d.sync_writes():
            return self._save_now(ctx, d, 0, True)
        return await self._save(ctx, d, 0, True)

    async def save_noreply(self, ctx: RequestContext, table: Udomain | str) -> int:
        return await self._save(ctx, table, 0, False)

    async def save_memory(self, ctx: RequestContext, table: Udomain | str) -> int:
        return await self._save(ctx, table, FL_MEM, True)

    # -- lookup ------------------------------------------------------------------------
    async def lookup(self, ctx: RequestContext, table: Udomain | str) -> int:
        """RURI := best contact; the others become branches.  1; -1 bad
        URI; -2 storage error; -3 not found; -5 no valid contact."""
        d = self._domain(table)
        try:
            aor = self.aor_from_uri(ctx.parsed_ruri)
        except (SipParseError, RegistrarError):
            return -1
        try:
            rec = await d.fetch(aor)
        except DbError as e:
            log.error("lookup: %s", e)
            return -2
        if rec is None:
            return -3
        now = self.usrloc.clock()
        first: Ucontact | None = None
        nat = False
        append = bool(self.values["append_branches"])
        core = ctx.core
        check_flow = bool(core.streams)
        contacts = rec.contacts
        if self._outbound:
            contacts = _one_flow_per_instance(contacts, now)
        for c in contacts:
            if not c.valid(now):
                continue
            if check_flow and c.received and not _flow_open(core, c.received):
                continue  # registered over a WebSocket that is closed now
            if first is None:
                first = c
                ctx.set_ruri(c.uri)
                if c.path:
                    ctx.dst_uri = self._path_hop(c)
                    ctx.data[PATH_KEY] = c.path
                else:
                    ctx.dst_uri = _dst(c)
                nat = bool(c.flags & FL_NAT)
                if not append:
                    break
                continue
            if len(ctx.branches) >= MAX_BRANCHES:
                break
            if c.path:
                ctx.branches.append(Branch(c.uri, c.q, self._path_hop(c), path=c.path))
            else:
                ctx.branches.append(Branch(c.uri, c.q, _dst(c)))
            nat = nat or bool(c.flags & FL_NAT)
        if first is None:
            return -5
        if nat:
            ctx.setflag(int(self.values["nat_flag"]))
        return 1

    def _path_hop(self, c: Ucontact) -> str | None:
        """The next hop towards a binding registered through Path: the
        first Path URI (RFC 3327 §5.3), or its ``received`` parameter with
        ``path_use_received``."""
        hop = path_first_uri(c.path or "")
        if hop is None:
            return _dst(c)
        if self.values["path_use_received"]:
            try:
                rcv = SipUri.parse(hop).params.get("received")
            except SipParseError:
                rcv = None
            if rcv:
                return unquote(_unescape_param(rcv))
        return hop

    async def registered(self, ctx: RequestContext, table: Udomain | str) -> int:
        d = self._domain(table)
        try:
            aor = self.aor_from_uri(ctx.parsed_ruri)
            rec = await d.fetch(aor)
        except (SipParseError, RegistrarError, DbError):
            return -1
        return 1 if rec is not None and rec.contacts else -1


#: "udp" ... as the location table's socket column writes them (an enum's
#: ``.name`` is a slow property on the REGISTER path)
_PROTO_NAMES: dict[Proto, str] = {p: p.name.lower() for p in Proto}


_WS_PROTOS = frozenset((Proto.WS, Proto.WSS))


def _flow_uri(proto: Proto, ip: str, port: int) -> str:
    """Where a contact registered over a connection is reached: that
    connection's source address, with its transport."""
    host = f"[{ip}]" if ":" in ip else ip
    return f"sip:{host}:{port};transport={_PROTO_NAMES[proto]}"


def _flow_open(core: CoreAPI, received: str) -> bool:
    """False when ``received`` names a WebSocket connection that is gone."""
    if ";transport=ws" not in received.lower():
        return True
    try:
        uri = SipUri.parse(received)
    except SipParseError:
        return True
    proto = Proto.WSS if uri.transport == "wss" else Proto.WS
    return core.connected(proto, uri.host.strip("[]"), uri.port or 0)


def _dst(c: Ucontact) -> str | None:
    return c.received or None


def _unq(v: str | None) -> str | None:
    return unquote(v) if v else None


#: ctx.data key: the Path of the binding lookup() put in the request URI
#: (tm makes it the branch's Route set; other branches carry theirs)
PATH_KEY = "path"


def path_first_uri(path: str) -> str | None:
    """The first URI of a stored Path value (``<sip:a;lr>, <sip:b;lr>``)."""
    items = split_values(path)
    if not items:
        return None
    try:
        return NameAddr.parse(items[0]).uri
    except SipParseError:
        return None


def _first_path_has_ob(path: Sequence[str]) -> bool:
    """RFC 5626 §6 step 2: the edge proxy (the first Path) supports
    Outbound when its URI has ``;ob``."""
    first = path_first_uri(path[0])
    if first is None:
        return False
    try:
        return "ob" in SipUri.parse(first).params
    except SipParseError:
        return False


def _unescape_param(v: str) -> str:
    try:
        return unescape(v)
    except Exception:
        return v


def _one_flow_per_instance(contacts: Sequence[Ucontact], now: float) -> list[Ucontact]:
    """RFC 5626 §7: at most one target per instance: the flow registered
    last (of those still valid), in the place of the instance's first."""
    best: dict[str, Ucontact] = {}
    for c in contacts:
        if c.instance and c.valid(now):
            b = best.get(c.instance)
            if b is None or c.expires > b.expires:
                best[c.instance] = c
    if not best:
        return list(contacts)
    out: list[Ucontact] = []
    placed: set[str] = set()
    for c in contacts:
        if not c.instance:
            out.append(c)
        elif c.instance not in placed:
            placed.add(c.instance)
            out.append(best[c.instance])
    return out


__all__ = [
    "ContactSpec",
    "RegisterConfig",
    "RegisterPlan",
    "RegisterRequest",
    "RegistrarModule",
    "contact_header",
    "plan_register",
]
