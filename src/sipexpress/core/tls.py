"""TLS for SIP (RFC 3261 §26, ``sips:``): settings, contexts and the
per-connection TLS state, without I/O.

* :class:`TlsSettings` — SER 0.9's ``tls_*`` core options (also accepted as
  ``modparam("tls", ...)`` by the ``tls`` module, Kamailio's names).
* :func:`server_context` / :func:`client_context` — the ``ssl.SSLContext``
  for accepted and for opened connections.  Opened connections check the
  server's certificate by default (chain to ``tls_ca_list`` or the system
  CAs, and the host name or IP the request was sent to, RFC 5922 §7.2);
  ``tls_verify=no`` turns that off.
* :class:`TlsSession` — one connection's TLS state: an ``ssl.SSLObject``
  over two memory BIOs, bytes in, bytes out (as h11 or aioquic: the asyncio
  layer in :mod:`sipexpress.core.transport` only moves bytes).  Doing the
  record layer here rather than with ``loop.create_server(ssl=...)`` gives
  every handshake failure (a certificate that is expired, signed by an
  unknown CA or for another host, plain SIP on a TLS port, garbage) one
  clear log line with the peer's address: asyncio's own SSL protocol logs
  server-side handshake failures only in debug mode.

Settings (ser.cfg core options; defaults in brackets):

``tls_certificate`` [none]
    PEM file with our certificate (chain); needed for ``listen=tls:``.
``tls_private_key`` [the certificate file]
    PEM file with its private key.
``tls_ca_list`` [the system's CAs]
    PEM file of CAs that peers' certificates must chain to.
``tls_verify`` [yes]
    Check the peer's certificate: as a client the server's (chain and
    host name), as a server a client certificate when one is presented.
``tls_require_certificate`` [no]
    As a server, refuse clients that present no certificate.
``tls_method`` [TLSv1.2+]
    Protocol versions: ``SSLv23`` (any the library allows), ``TLSv1``,
    ``TLSv1.1``, ``TLSv1.2``, ``TLSv1.3`` (exactly that one), or one of
    those with ``+`` (that one or newer).
``tls_handshake_timeout`` [10]
    Seconds a handshake may take.
"""

from __future__ import annotations

import contextlib
import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from sipexpress.sip.locate import is_numeric

#: ser.cfg option names (SER 0.9) -> :class:`TlsSettings` fields
OPTION_NAMES: Final = (
    "tls_certificate",
    "tls_private_key",
    "tls_ca_list",
    "tls_verify",
    "tls_require_certificate",
    "tls_method",
    "tls_handshake_timeout",
)

_VERSIONS: Final = {
    "TLSV1": ssl.TLSVersion.TLSv1,
    "TLSV1.0": ssl.TLSVersion.TLSv1,
    "TLSV1_0": ssl.TLSVersion.TLSv1,
    "TLSV1.1": ssl.TLSVersion.TLSv1_1,
    "TLSV1_1": ssl.TLSVersion.TLSv1_1,
    "TLSV1.2": ssl.TLSVersion.TLSv1_2,
    "TLSV1_2": ssl.TLSVersion.TLSv1_2,
    "TLSV1.3": ssl.TLSVersion.TLSv1_3,
    "TLSV1_3": ssl.TLSVersion.TLSv1_3,
}
#: the first byte of a TLS record carrying a handshake (RFC 8446 §5.1)
HANDSHAKE_RECORD: Final = 0x16


class TlsError(Exception):
    """A TLS connection cannot go on: the reason, fit for a log line."""


def parse_method(text: str) -> tuple[ssl.TLSVersion, ssl.TLSVersion]:
    """``tls_method`` -> (minimum, maximum) protocol version."""
    word = text.strip().upper()
    if word in ("SSLV23", "ANY", ""):
        return ssl.TLSVersion.MINIMUM_SUPPORTED, ssl.TLSVersion.MAXIMUM_SUPPORTED
    plus = word.endswith("+")
    version = _VERSIONS.get(word.rstrip("+"))
    if version is None:
        raise ValueError(
            f"tls_method: unknown method {text!r} (SSLv23, TLSv1, TLSv1.1, TLSv1.2, TLSv1.3, optionally with '+')"
        )
    return version, ssl.TLSVersion.MAXIMUM_SUPPORTED if plus else version


def _flag(name: str, value: Any) -> bool:
    if isinstance(value, str):
        word = value.strip().lower()
        if word in ("yes", "true", "on", "enable", "1"):
            return True
        if word in ("no", "false", "off", "disable", "0"):
            return False
        raise ValueError(f"{name}: yes or no expected, got {value!r}")
    return bool(value)


@dataclass(frozen=True, slots=True)
class TlsSettings:
    """The TLS options of one server (see the module docstring)."""

    certificate: str | None = None
    private_key: str | None = None
    ca_list: str | None = None
    verify: bool = True
    require_certificate: bool = False
    method: str = "TLSv1.2+"
    handshake_timeout: float = 10.0

    @classmethod
    def from_options(cls, options: Mapping[str, Any]) -> TlsSettings:
        """From the core options (``tls_certificate`` ...); unset ones keep
        their defaults.  Raises ValueError for a value that cannot be used."""
        d = cls()

        def get(name: str) -> Any:
            v = options.get(name)
            return None if v in (None, "") else v

        method = str(get("tls_method") or d.method)
        parse_method(method)
        verify, require = get("tls_verify"), get("tls_require_certificate")
        timeout = get("tls_handshake_timeout")
        return cls(
            certificate=get("tls_certificate"),
            private_key=get("tls_private_key"),
            ca_list=get("tls_ca_list"),
            verify=d.verify if verify is None else _flag("tls_verify", verify),
            require_certificate=d.require_certificate
            if require is None
            else _flag("tls_require_certificate", require),
            method=method,
            handshake_timeout=d.handshake_timeout if timeout is None else float(timeout),
        )

    @property
    def can_serve(self) -> bool:
        """A certificate is configured: TLS listeners (and HTTPS) can be opened."""
        return bool(self.certificate)


def _base_context(settings: TlsSettings, purpose: ssl.Purpose) -> ssl.SSLContext:
    ctx = ssl.create_default_context(purpose)
    low, high = parse_method(settings.method)
    if low is not ssl.TLSVersion.MINIMUM_SUPPORTED:
        ctx.minimum_version = low
    if high is not ssl.TLSVersion.MAXIMUM_SUPPORTED:
        ctx.maximum_version = high
    if low in (ssl.TLSVersion.TLSv1, ssl.TLSVersion.TLSv1_1):
        ctx.set_ciphers("DEFAULT:@SECLEVEL=0")  # OpenSSL 3 refuses TLS < 1.2 at level 1
    if settings.certificate:
        try:
            ctx.load_cert_chain(settings.certificate, settings.private_key or None)
        except (OSError, ssl.SSLError) as e:
            raise TlsError(f"cannot load tls_certificate {settings.certificate}: {e}") from None
    if settings.ca_list:
        try:
            ctx.load_verify_locations(cafile=settings.ca_list)
        except (OSError, ssl.SSLError) as e:
            raise TlsError(f"cannot load tls_ca_list {settings.ca_list}: {e}") from None
    return ctx


def server_context(settings: TlsSettings) -> ssl.SSLContext:
    """The context of accepted connections: our certificate; a client
    certificate checked when presented (``tls_verify``), required with
    ``tls_require_certificate``."""
    if not settings.certificate:
        raise TlsError("TLS needs a certificate: set tls_certificate (and tls_private_key)")
    ctx = _base_context(settings, ssl.Purpose.CLIENT_AUTH)
    if settings.require_certificate:
        ctx.verify_mode = ssl.CERT_REQUIRED
    elif settings.verify:
        ctx.verify_mode = ssl.CERT_OPTIONAL
    else:
        ctx.verify_mode = ssl.CERT_NONE
    return ctx


def client_context(settings: TlsSettings) -> ssl.SSLContext:
    """The context of connections we open: the server's certificate and
    name checked unless ``tls_verify=no``; our certificate, if any, is
    offered as the client's."""
    ctx = _base_context(settings, ssl.Purpose.SERVER_AUTH)
    if not settings.verify:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    return ctx


def https_context(certificate: str, private_key: str | None = None) -> ssl.SSLContext:
    """A server context for HTTPS (JSON-RPC, the web interface): our
    certificate, no client certificates asked for."""
    return server_context(TlsSettings(certificate, private_key, verify=False, method="TLSv1.2+"))


def trust_context(ca_list: str | None = None) -> ssl.SSLContext:
    """A client context trusting the system's CAs and ``ca_list``, names
    checked (the web interface calling JSON-RPC over HTTPS)."""
    return client_context(TlsSettings(ca_list=ca_list))


def describe(exc: BaseException) -> str:
    """A handshake failure as a log line says it: the certificate check's
    own words (expired, unknown CA, host name mismatch) where there are any."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"certificate refused: {exc.verify_message or exc.reason}"
    if isinstance(exc, ssl.SSLError):
        reason = str(exc.reason or exc.strerror or exc).replace("_", " ").lower()
        if "alert" in reason:  # the peer gave up, e.g. it refused our certificate
            return f"TLS handshake refused by the peer: {reason}"
        return f"TLS error: {reason}"
    return str(exc) or type(exc).__name__


class TlsSession:
    """One connection's TLS layer, sans-I/O.

    Feed what the socket read to :meth:`receive`, which returns the
    application bytes it decrypted and the bytes to write back (handshake
    messages, alerts); :meth:`send` turns application bytes into records
    (held until the handshake is done).  Any failure raises
    :class:`TlsError` with a reason for the log; :attr:`outgoing` then
    still holds an alert to send before closing.
    """

    __slots__ = ("_held", "_in", "_out", "_seen", "established", "obj", "server_side")

    def __init__(
        self, context: ssl.SSLContext, server_side: bool, server_hostname: str | None = None
    ) -> None:
        self._in = ssl.MemoryBIO()
        self._out = ssl.MemoryBIO()
        self.server_side = server_side
        # an IP is checked against the certificate's IP addresses (no SNI is sent)
        self.obj = context.wrap_bio(self._in, self._out, server_side, server_hostname)
        self.established = False
        self._held: list[bytes] = []
        self._seen = False  # any byte received yet

    def start(self) -> bytes:
        """Begin the handshake: the client's first flight (b'' for a server)."""
        if not self.server_side:
            self._handshake()
        return self._out.read()

    @property
    def outgoing(self) -> bytes:
        """Bytes produced and not yet collected (an alert after a failure)."""
        return self._out.read()

    def _handshake(self) -> bool:
        try:
            self.obj.do_handshake()
        except ssl.SSLWantReadError:
            return False
        except (ssl.SSLError, ssl.CertificateError) as e:
            raise TlsError(describe(e)) from e
        self.established = True
        return True

    def receive(self, data: bytes) -> tuple[bytes, bytes]:
        """Bytes from the socket -> (application data, bytes to write)."""
        if not self._seen and data:
            self._seen = True
            if self.server_side and data[0] != HANDSHAKE_RECORD:
                head = data[:12].decode("ascii", "replace")
                what = "plain SIP" if head[:1].isalpha() else "not TLS"
                raise TlsError(f"no TLS handshake ({what}: {head!r}) on a TLS port")
        self._in.write(data)
        out: list[bytes] = []
        if not self.established:
            if not self._handshake():
                return b"", self._out.read()
            for chunk in self._held:
                self.obj.write(chunk)
            self._held.clear()
        while True:
            try:
                chunk = self.obj.read(65536)
            except ssl.SSLWantReadError:
                break
            except ssl.SSLZeroReturnError:
                break  # close_notify: the transport's EOF follows
            except ssl.SSLError as e:
                raise TlsError(describe(e)) from e
            if not chunk:
                break
            out.append(chunk)
        return b"".join(out), self._out.read()

    def send(self, data: bytes) -> bytes:
        """Application bytes -> records to write (b'' while handshaking)."""
        if not self.established:
            self._held.append(data)
            return b""
        try:
            self.obj.write(data)
        except ssl.SSLError as e:
            raise TlsError(describe(e)) from e
        return self._out.read()

    def close(self) -> bytes:
        """A close_notify alert to send (b'' if none can be made)."""
        with contextlib.suppress(ssl.SSLError, ValueError):
            self.obj.unwrap()
        return self._out.read()

    def peer_name(self) -> str:
        """The subject CN of the peer's certificate ('' when none)."""
        cert: Any = self.obj.getpeercert() if self.established else None
        for rdn in (cert or {}).get("subject", ()):
            for pair in rdn:
                if pair[0] == "commonName":
                    return str(pair[1])
        return ""


def server_hostname(name: str | None, ip: str) -> str:
    """What a connection to ``ip`` checks the certificate against (and sends
    as SNI): the host name the request was sent to, else the IP."""
    if name and not is_numeric(name):
        return name.lower()
    return ip.strip("[]")
