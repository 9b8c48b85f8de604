"""SER's internal error codes (``error.h``) and ``err2reason_phrase``.

Actions that fail record the code in ``ctx.data["ser_error"]`` (SER's
global ``ser_error``); ``sl_reply_error()`` turns it into a reply such as
``478 Unresolvable destination (478/SL)``.
"""

from __future__ import annotations

E_UNSPEC = -1
E_OUT_OF_MEM = -2
E_BAD_RE = -3
E_BAD_ADDRESS = -478
E_BUG = -5
E_CFG = -6
E_NO_SOCKET = -7
E_BAD_VIA = -8
E_BAD_TUPEL = -9
E_SCRIPT = -10
E_EXEC = -11
E_TOO_MANY_BRANCHES = -12
E_BAD_TO = -13
E_INVALID_PARAMS = -14
E_Q_INV_CHAR = -15
E_Q_EMPTY = -16
E_Q_TOO_BIG = -17
E_Q_DEC_MISSING = -18
E_NO_DESTINATION = -19
E_SEND = -477
E_BAD_URI = -479
E_BAD_SERVER = -500
E_BAD_REQ = -400
E_UNEXPECTED_STATE = -501

SER_ERROR_KEY = "ser_error"

_PHRASES: dict[int, tuple[str, int]] = {
    E_SEND: ("Unfortunately error on sending to next hop occurred", 477),
    E_BAD_ADDRESS: ("Unresolvable destination", 478),
    E_BAD_REQ: ("Bad Request", 400),
    E_BAD_URI: ("Regretfully, we were not able to process the URI", 479),
    E_BAD_TUPEL: ("Transaction tupel incomplete", 400),
    E_EXEC: ("Error in external logic", 500),
    E_TOO_MANY_BRANCHES: ("Forking capacity exceeded", 500),
    E_Q_INV_CHAR: ("Invalid character in q", 400),
    E_Q_EMPTY: ("Empty q", 400),
    E_Q_TOO_BIG: ("q too big", 400),
    E_Q_DEC_MISSING: ("Decimal part missing in q", 400),
    E_NO_DESTINATION: ("No destination available", 500),
}


def err2reason_phrase(ser_error: int, signature: str = "SL") -> tuple[int, str]:
    """``(status, reason)`` for an internal error, as SER printed it:
    ``"<text> (<-ser_error>/<signature>)"``."""
    text, code = _PHRASES.get(ser_error, ("I'm terribly sorry, server error occurred", 500))
    return code, f"{text} ({-ser_error}/{signature})"
