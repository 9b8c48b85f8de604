"""sipexpress — a SIP proxy, registrar and application server re-creating SER."""

__version__ = "0.1.0"
NAME = "sipexpress"
SERVER_SIGNATURE = f"Sip EXpress router (sipexpress {__version__})"
