"""rtpengine's ng control protocol, sans-I/O.

Theory of operation.  A command is one UDP datagram ``COOKIE SP
bencode-dict`` and its reply ``COOKIE SP bencode-dict`` with the same
cookie (``{"result": "ok", ...}``, ``"error"`` with ``error-reason``, or
``"pong"``).  Over UDP the client retransmits: :class:`Exchange` sends the
datagram, waits ``timeout`` seconds, sends it again, ``retries`` times in
all per instance; an instance that never answered is disabled for
``disable_timeout`` seconds (:class:`NodeSet`) and the exchange moves on
to the next enabled instance, until one answers or none is left (Kamailio's
``send_rtpp_command`` / ``select_rtpp_node``).  The same call goes to the
same instance as long as it lives: the choice is remembered per Call-ID
and otherwise made by a stable hash of the Call-ID over the weights.

Time is an argument (``now``); the asyncio adapter in ``module.py`` sends
what :meth:`Exchange.datagrams` returns, re-arms one timer at
:meth:`Exchange.timer` and feeds replies to :meth:`Exchange.receive`.

:func:`build_command` turns Kamailio's flag strings
(``"replace-origin ICE=remove RTP/AVP direction=internal"``) into the ng
dictionary the way Kamailio's ``parse_flags`` does.
"""

from __future__ import annotations

import enum
import zlib
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Final

from sipexpress.modules.rtpengine.bencode import BencodeError, Encodable, Value, decode, encode


class NgError(ValueError):
    """A configuration or reply the ng client cannot use."""


# ---------------------------------------------------------------------------
# instances: modparam("rtpengine", "rtpengine_sock", "udp:host:port=weight ...")
# ---------------------------------------------------------------------------


@dataclass(slots=True)
class Node:
    """One rtpengine instance."""

    url: str
    host: str
    port: int
    weight: int = 1
    #: loop time until which it is skipped after not answering (0: enabled)
    disabled_until: float = 0.0
    #: set by ``rtpengine.enable URL 0``: skipped until enabled again
    disabled_by_admin: bool = False

    def enabled(self, now: float) -> bool:
        return not self.disabled_by_admin and now >= self.disabled_until


def parse_sockets(text: str) -> list[Node]:
    """``udp:127.0.0.1:2223 udp:127.0.0.1:2224=2 udp6:[::1]:2225`` (spaces
    or ``;`` between instances; ``=weight`` optional, 1 by default; a bare
    ``host:port`` means UDP).  Kamailio's set prefix ``1 == udp:...`` is
    accepted for set 0 or 1 alone (one set: ``set_rtpengine_set`` is not
    offered).  Raises :class:`NgError` on a bad entry."""
    nodes: list[Node] = []
    if "==" in text:
        sets = {part.split()[-1] for part in text.split("==")[:-1] if part.split()}
        if len(sets) > 1 or not sets <= {"0", "1"}:
            raise NgError(f"rtpengine_sock: only one set of instances is supported: {text!r}")
        text = text.split("==", 1)[1]
        if "==" in text:
            raise NgError(f"rtpengine_sock: only one set of instances is supported: {text!r}")
    for item in text.replace(";", " ").split():
        url, _, w = item.partition("=")
        try:
            weight = int(w) if w else 1
        except ValueError:
            raise NgError(f"rtpengine_sock: bad weight in {item!r}") from None
        if weight < 0:
            raise NgError(f"rtpengine_sock: bad weight in {item!r}")
        rest = url
        for scheme in ("udp6:", "udp:"):
            if rest.startswith(scheme):
                rest = rest[len(scheme) :]
                break
        else:
            if ":" in rest and rest.split(":", 1)[0].isalpha() and not rest.startswith("["):
                raise NgError(f"rtpengine_sock: only udp instances are supported: {item!r}")
        host, sep, port_text = rest.rpartition(":")
        if not sep or not host:
            raise NgError(f"rtpengine_sock: {item!r} has no port")
        host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
        try:
            port = int(port_text)
        except ValueError:
            raise NgError(f"rtpengine_sock: bad port in {item!r}") from None
        if not 0 < port < 65536:
            raise NgError(f"rtpengine_sock: bad port in {item!r}")
        nodes.append(Node(url, host, port, weight))
    return nodes


class NodeSet:
    """The configured instances, which are up, and which call went where."""

    #: calls remembered at most (the oldest are forgotten first; a
    #: forgotten call is found again by the hash while its instance is up)
    MAX_CALLS: Final = 100_000

    def __init__(self, nodes: list[Node], disable_timeout: float) -> None:
        self.nodes = nodes
        self.disable_timeout = disable_timeout
        self._calls: OrderedDict[str, Node] = OrderedDict()

    def select(self, call_id: str, now: float, exclude: frozenset[str] = frozenset()) -> Node | None:
        """The instance for this call: the one it used before while that is
        up, else one picked by a stable hash of the Call-ID over the weights
        of the enabled instances not in ``exclude`` (urls)."""
        known = self._calls.get(call_id)
        if known is not None and known.url not in exclude and known.enabled(now):
            return known
        up = [n for n in self.nodes if n.url not in exclude and n.weight > 0 and n.enabled(now)]
        if not up:
            return None
        total = sum(n.weight for n in up)
        point = zlib.crc32(call_id.encode("utf-8", "surrogateescape")) % total
        for n in up:
            if point < n.weight:
                return n
            point -= n.weight
        return up[-1]  # not reached: the weights add up to total

    def remember(self, call_id: str, node: Node) -> None:
        self._calls[call_id] = node
        self._calls.move_to_end(call_id)
        if len(self._calls) > self.MAX_CALLS:
            self._calls.popitem(last=False)

    def forget(self, call_id: str) -> None:
        self._calls.pop(call_id, None)

    def failed(self, node: Node, now: float) -> None:
        """``node`` did not answer: skip it for ``disable_timeout``."""
        node.disabled_until = now + self.disable_timeout

    def find(self, url: str) -> Node | None:
        for n in self.nodes:
            if n.url == url:
                return n
        return None


# ---------------------------------------------------------------------------
# commands: Kamailio's flags -> the ng dictionary
# ---------------------------------------------------------------------------

#: rtpengine's transport protocols, given as bare flags
TRANSPORT_PROTOCOLS: Final = frozenset(
    {"RTP/AVP", "RTP/SAVP", "RTP/AVPF", "RTP/SAVPF", "UDP/TLS/RTP/SAVP", "UDP/TLS/RTP/SAVPF"}
)
#: ``PREFIX-VALUE`` flags collected into the list ``KEY`` (``replace-origin``
#: -> ``"replace": ["origin"]``), as Kamailio's parse_flags does
_LIST_PREFIXES: Final = (
    ("replace-", "replace"),
    ("rtcp-mux-", "rtcp-mux"),
    ("SDES-", "SDES"),
    ("OSRTP-", "OSRTP"),
)
#: ``codec-strip-PCMA`` -> ``"codec": {"strip": ["PCMA"]}``
_CODEC_VERBS: Final = ("strip", "offer", "transcode", "mask", "set", "consume", "accept", "except")
#: ``KEY=VALUE`` flags whose values collect into a list
_LIST_KEYS: Final = frozenset(
    {"direction", "replace", "rtcp-mux", "SDES", "OSRTP", "T38", "T.38", "sdp-attr"}
)
#: bare words that Kamailio's module reads itself and does not pass on
VIA_BRANCH_CHOICES: Final = frozenset({"1", "2", "auto", "extra", "next", "auto-next", "auto-extra"})


@dataclass(slots=True)
class Flags:
    """A parsed flag string: the ng dictionary entries, plus what the SIP
    side must fill in (the via-branch choice, overrides of the tags and
    Call-ID)."""

    entries: dict[str, Encodable] = field(default_factory=dict)
    flags: list[str] = field(default_factory=list)
    via_branch: str | None = None
    call_id: str | None = None
    from_tag: str | None = None
    to_tag: str | None = None
    trust_address: bool = False

    def ng(self) -> dict[str, Encodable]:
        """The dictionary entries the flags give (without command, SDP,
        Call-ID and tags)."""
        d = dict(self.entries)
        if self.flags:
            d["flags"] = list(self.flags)
        return d


def parse_flags(text: str) -> Flags:
    """Kamailio's rtpengine flag string (space separated).  Unknown bare
    words become entries of ``flags`` (rtpengine ignores what it does not
    know, as with Kamailio); ``KEY=VALUE`` becomes a dictionary entry."""
    f = Flags()
    lists: dict[str, list[Encodable]] = {}
    codec: dict[str, list[Encodable]] = {}
    for word in text.split():
        key, eq, value = word.partition("=")
        if eq:
            if key == "via-branch":
                if value not in VIA_BRANCH_CHOICES:
                    raise NgError(f"rtpengine: unknown via-branch value {value!r} (1, 2, auto, extra, next)")
                f.via_branch = value
            elif key == "call-id":
                f.call_id = value
            elif key == "from-tag":
                f.from_tag = value
            elif key == "to-tag":
                f.to_tag = value
            elif key in _LIST_KEYS:
                lists.setdefault(key, []).append(value)
            else:
                f.entries[key] = value
            continue
        if word in TRANSPORT_PROTOCOLS:
            f.entries["transport-protocol"] = word
            continue
        if word in ("internal", "external"):  # rtpproxy era: the interface direction
            lists.setdefault("direction", []).append(word)
            continue
        if word == "trust-address":
            f.trust_address = True
            f.flags.append(word)
            continue
        if word.startswith("codec-"):
            verb, _, name = word[6:].partition("-")
            if verb in _CODEC_VERBS and name:
                codec.setdefault(verb, []).append(name)
                continue
        for prefix, lkey in _LIST_PREFIXES:
            if word.startswith(prefix) and len(word) > len(prefix):
                lists.setdefault(lkey, []).append(word[len(prefix) :])
                break
        else:
            f.flags.append(word)
    for k, v in lists.items():
        f.entries[k] = v
    if codec:
        f.entries["codec"] = codec
    return f


def build_command(
    command: str,
    flags: Flags,
    *,
    call_id: str,
    from_tag: str | None,
    to_tag: str | None = None,
    sdp: bytes | None = None,
    via_branch: str | None = None,
    received_from: tuple[str, str] | None = None,
) -> dict[str, Encodable]:
    """The ng dictionary of one command.  The flag string's ``call-id=``,
    ``from-tag=`` and ``to-tag=`` override what the message says.
    ``received_from`` is ``("IP4" | "IP6", address)`` of the message's
    source: rtpengine uses it instead of a (private) SDP address unless the
    flags say ``trust-address``."""
    d = flags.ng()
    d["command"] = command
    d["call-id"] = flags.call_id or call_id
    ft = flags.from_tag or from_tag
    if ft:
        d["from-tag"] = ft
    tt = flags.to_tag or to_tag
    if tt:
        d["to-tag"] = tt
    if via_branch:
        d["via-branch"] = via_branch
    if sdp is not None:
        d["sdp"] = sdp
    if received_from is not None and not flags.trust_address and "received-from" not in d:
        d["received-from"] = list(received_from)
    return d


def encode_request(cookie: str, command: Mapping[str, Encodable]) -> bytes:
    return cookie.encode() + b" " + encode(command)


def decode_reply(data: bytes) -> tuple[str, dict[bytes, Value]]:
    """``(cookie, dictionary)`` of a reply datagram; :class:`NgError` when
    it is not one."""
    sp = data.find(b" ")
    if sp <= 0:
        raise NgError("ng reply without a cookie")
    try:
        value = decode(data[sp + 1 :])
    except BencodeError as e:
        raise NgError(f"ng reply is not bencode: {e}") from None
    if not isinstance(value, dict):
        raise NgError("ng reply is not a dictionary")
    return data[:sp].decode("ascii", "replace"), value


def text(d: Mapping[bytes, Value], key: str) -> str | None:
    """A string entry of a reply, decoded; None when absent or not a string."""
    v = d.get(key.encode())
    return v.decode("utf-8", "replace") if isinstance(v, bytes) else None


# ---------------------------------------------------------------------------
# one command with retransmissions and failover
# ---------------------------------------------------------------------------


class Outcome(enum.Enum):
    ANSWERED = "answered"  # a reply came (its result may still be "error")
    NO_INSTANCE = "no instance"  # none configured is up, or all stopped answering


@dataclass(frozen=True, slots=True)
class Send:
    """Send ``data`` to ``node``."""

    node: Node
    data: bytes


class Exchange:
    """One ng command until a reply, or until no instance is left.

    ``datagrams()`` gives what to send now; ``timer()`` when to call
    ``handle_timer``; ``receive()`` a reply for this cookie.  ``tried``
    lists the instances that did not answer, in order (for the log)."""

    def __init__(
        self,
        nodes: NodeSet,
        call_id: str,
        cookie: str,
        command: Mapping[str, Encodable],
        now: float,
        *,
        timeout: float,
        retries: int,
    ) -> None:
        self.nodes = nodes
        self.call_id = call_id
        self.cookie = cookie
        self.data = encode_request(cookie, command)
        self.timeout = timeout
        self.retries = max(1, retries)
        self.tried: list[Node] = []
        self.outcome: Outcome | None = None
        self.reply: dict[bytes, Value] | None = None
        self.node: Node | None = None
        self._sent = 0
        self._deadline = 0.0
        self._pending: list[Send] = []
        self._next_node(now)

    def _next_node(self, now: float) -> None:
        node = self.nodes.select(self.call_id, now, frozenset(n.url for n in self.tried))
        self.node = node
        if node is None:
            self.outcome = Outcome.NO_INSTANCE
            return
        self._sent = 0
        self._send(now)

    def _send(self, now: float) -> None:
        assert self.node is not None
        self._sent += 1
        self._deadline = now + self.timeout
        self._pending.append(Send(self.node, self.data))

    @property
    def done(self) -> bool:
        return self.outcome is not None

    def datagrams(self) -> list[Send]:
        out, self._pending = self._pending, []
        return out

    def timer(self) -> float | None:
        return None if self.done else self._deadline

    def handle_timer(self, now: float) -> None:
        if self.done or now < self._deadline:
            return
        if self._sent < self.retries:
            self._send(now)
            return
        assert self.node is not None
        self.nodes.failed(self.node, now)
        self.tried.append(self.node)
        self._next_node(now)

    def receive(self, node_addr: tuple[str, int], data: bytes) -> bool:
        """A datagram for our cookie; True when it completed the exchange.
        One from another address than the instance asked is ignored."""
        if self.done or self.node is None or node_addr[1] != self.node.port:
            return False
        try:
            cookie, reply = decode_reply(data)
        except NgError:
            return False
        if cookie != self.cookie:
            return False
        self.reply = reply
        self.outcome = Outcome.ANSWERED
        self.nodes.remember(self.call_id, self.node)
        return True
