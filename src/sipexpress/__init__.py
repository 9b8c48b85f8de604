"""sipexpress — a SIP proxy, registrar and application server re-creating SER."""

from sipexpress import _build

__version__ = "0.1.0"
NAME = "sipexpress"
SERVER_SIGNATURE = f"Sip EXpress router (sipexpress {__version__})"

#: "compiled" (the hot modules built with mypyc) or "pure"; see _build.py
BUILD = _build.select()
