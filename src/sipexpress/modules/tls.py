"""tls — the TLS settings as module parameters (Kamailio's ``tls`` module).

SER 0.9 set TLS up with core options (``tls_certificate`` ...); SER 2 and
Kamailio moved them into a ``tls`` module.  Both spellings work here:
``loadmodule "tls.so"`` with ``modparam("tls", "certificate", ...)`` sets
the core option of the same meaning, which :mod:`sipexpress.core.tls`
reads when the listeners open.  The transport itself is in the core
(:mod:`sipexpress.core.tls_transport`).
"""

from __future__ import annotations

from typing import Any, Final

from sipexpress.core.registry import Module, Param

#: modparam name -> core option
OPTION_OF: Final = {
    "certificate": "tls_certificate",
    "private_key": "tls_private_key",
    "ca_list": "tls_ca_list",
    "verify_certificate": "tls_verify",
    "require_certificate": "tls_require_certificate",
    "tls_method": "tls_method",
    "method": "tls_method",
    "handshake_timeout": "tls_handshake_timeout",
}


class TlsModule(Module):
    name = "tls"
    params = (
        Param("certificate", str, "", "PEM file with our certificate (core option tls_certificate)"),
        Param("private_key", str, "", "PEM file with its key (tls_private_key)"),
        Param("ca_list", str, "", "PEM file of trusted CAs (tls_ca_list)"),
        Param("verify_certificate", int, 1, "check the peer's certificate (tls_verify)"),
        Param("require_certificate", int, 0, "clients must present a certificate (tls_require_certificate)"),
        Param("tls_method", str, "TLSv1.2+", "protocol versions (tls_method)"),
        Param("method", str, "TLSv1.2+", "the same as tls_method"),
        Param("handshake_timeout", int, 10, "seconds a handshake may take (tls_handshake_timeout)"),
    )

    def set_param(self, name: str, value: Any) -> None:
        super().set_param(name, value)
        option = OPTION_OF[name]
        if option in ("tls_verify", "tls_require_certificate"):
            value = bool(self.values[name])
        self.core.options[option] = self.values[name]
