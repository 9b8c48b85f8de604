"""The SIP_* environment of an exec'd command (exec.md §2; SER's
``exec_hf.c``)."""

from __future__ import annotations

import hashlib
import logging
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from sipexpress.core.context import RequestContext
    from sipexpress.sip.message import SipMessage

log = logging.getLogger("sipexpress.modules.exec")

# Header types SER's 0.9 parser knows with a compact form: always exported
# under one canonical name, whichever spelling the message used.
_CANONICAL: dict[str, str] = {
    "via": "VIA",
    "v": "VIA",
    "content-type": "CONTENT_TYPE",
    "c": "CONTENT_TYPE",
    "from": "FROM",
    "f": "FROM",
    "call-id": "CALLID",
    "i": "CALLID",
    "supported": "SUPPORTED",
    "k": "SUPPORTED",
    "content-length": "CONTENT_LENGTH",
    "l": "CONTENT_LENGTH",
    "contact": "CONTACT",
    "m": "CONTACT",
    "to": "TO",
    "t": "TO",
    "event": "EVENT",
    "o": "EVENT",
}

# Characters SER's canonize_headername() turns into "_" silently
# (UNRESERVED_MARK, HNV_UNRESERVED, ESCAPE); anything else non-alphanumeric
# becomes "_" too, with an error log.
_LEGAL_SYMBOLS = frozenset("-_.!~*'()[]/?:+$%")
_NAME_CACHE_MAX = 512
_name_cache: dict[str, str] = {}


def hf_var_name(name: str) -> str:
    """The environment variable for a header field name (``Max-Forwards`` ->
    ``SIP_HF_MAX_FORWARDS``, ``i`` -> ``SIP_HF_CALLID``)."""
    key = name.lower()
    var = _name_cache.get(key)
    if var is not None:
        return var
    canon = _CANONICAL.get(key)
    if canon is None:
        out = []
        for c in name:
            if "a" <= c <= "z":
                out.append(chr(ord(c) - 32))
            elif "A" <= c <= "Z" or "0" <= c <= "9":
                out.append(c)
            else:
                if c not in _LEGAL_SYMBOLS:
                    log.error("exec: unexpected char %r in header field name %r", c, name)
                out.append("_")
        canon = "".join(out)
    var = "SIP_HF_" + canon
    if len(_name_cache) < _NAME_CACHE_MAX:
        _name_cache[key] = var
    return var


def uri_user(uri: str) -> str | None:
    """The user part of a SIP URI, or None when the URI does not parse."""
    try:
        from sipexpress.sip.uri import SipUri

        return SipUri.parse(uri).user or ""
    except Exception:  # the parser's error for a malformed URI
        return None


def transaction_id(msg: SipMessage) -> str:
    """``SIP_TID``: SER's ``char_msg_val`` — MD5 (32 lower-case hex digits)
    over From, To and Call-ID bodies, the original Request-URI, the CSeq
    number, the top Via's host, port (as written) and branch, each stripped,
    no separators.  Empty when one of those headers is missing or broken."""
    try:
        frm = msg.header("from")
        to = msg.header("to")
        callid = msg.header("call-id")
        cseq = msg.header("cseq")
        if frm is None or to is None or callid is None or cseq is None or not cseq.split():
            return ""
        via = msg.via1
        port = via.port
        parts = [
            frm,
            to,
            callid,
            msg.ruri.strip(),
            cseq.split()[0],
            via.host,
            "" if port is None else str(port),
        ]
        branch = via.params.get("branch")
        if branch is not None:
            parts.append(branch)
    except Exception:  # malformed Via: SER logs and exports an empty TID
        return ""
    return hashlib.md5("".join(p.strip() for p in parts).encode("utf-8", "surrogateescape")).hexdigest()


def dialog_id(msg: SipMessage) -> str:
    """``SIP_DID``: the To-tag (empty for dialog-creating requests)."""
    try:
        tag = msg.to.params.get("tag")
    except Exception:
        return ""
    return tag or ""


def sip_environment(ctx: RequestContext) -> dict[str, str]:
    """The ``SIP_*`` variables for ``ctx`` (exec.md §2), without the
    server's own environment.

    Header fields and the original Request-URI come from the request as
    received: SER parsed ``msg->buf``, so script changes (``append_hf``,
    a Request-URI written into the message) are invisible.  A modified
    message is parsed again from ``raw`` (microseconds, next to the
    milliseconds of starting a process)."""
    msg = ctx.msg
    if msg.serialize() is not msg.raw:  # modified by the script
        from sipexpress.sip.message import SipMessage

        msg = SipMessage.parse(msg.raw)
    groups: dict[str, list[str]] = {}
    for name, value in msg.iter_headers():
        var = hf_var_name(name)
        vals = groups.get(var)
        if vals is None:
            groups[var] = [value.strip()]
        else:
            vals.append(value.strip())
    env: dict[str, str] = {}
    for var, vals in groups.items():
        if len(vals) == 1:
            env[var] = vals[0]
        else:
            # SER's insert_hf() links each new occurrence right after the
            # first one: v1,v2,v3 -> v1,v3,v2.
            vals[1:] = vals[:0:-1]
            env[var] = ",".join(vals)
    env["SIP_SRCIP"] = ctx.rcv.src_ip
    ruri = ctx.ruri
    env["SIP_RURI"] = ruri
    user = uri_user(ruri)
    if user is not None:
        env["SIP_USER"] = user
    oruri = msg.ruri
    env["SIP_ORUI"] = oruri
    env["SIP_ORURI"] = oruri
    ouser = user if oruri == ruri else uri_user(oruri)
    if ouser is not None:
        env["SIP_OUSER"] = ouser
    env["SIP_TID"] = transaction_id(msg)
    env["SIP_DID"] = dialog_id(msg)
    return env


def strip_nul(env: dict[str, str]) -> dict[str, str]:
    """execve() cannot carry NUL bytes; SER's C strings ended there."""
    for k, v in env.items():
        if "\0" in v:
            env[k] = v.split("\0", 1)[0]
    return env


__all__ = ["dialog_id", "hf_var_name", "sip_environment", "strip_nul", "transaction_id", "uri_user"]
