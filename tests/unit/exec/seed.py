"""The seed's example request ("Using exec: Step 2") and the environment SER
produced for it, as exec.md settles it.

The seed prints the INVITE with its addresses snipped; the environment
listing of the same section gives them back (Via 195.37.77.100:5040,
Call-ID host 213.20.128.35, Contact 123.20.128.35:9315, CSeq 2 INVITE,
Content-Length 451).  With exactly these header fields and no Via branch,
SER's SIP_TID formula yields the listing's 3b6b8295db0835815847b1f35f3b29b8,
which confirms the reconstruction.  The body is a realistic 451-byte SDP.
"""

from __future__ import annotations

SEED_SRC_IP = "195.37.77.100"
SEED_SRC_PORT = 5040
SEED_TID = "3b6b8295db0835815847b1f35f3b29b8"

SEED_SDP = (
    b"v=0\r\n"
    b"o=alice 1046090316 1046090316 IN IP4 213.20.128.35\r\n"
    b"s=session call\r\n"
    b"c=IN IP4 213.20.128.35\r\n"
    b"b=CT:1000\r\n"
    b"t=0 0\r\n"
    b"m=audio 54742 RTP/AVP 97 111 112 6 0 8 4 3 101\r\n"
    b"a=rtpmap:97 red/8000\r\n"
    b"a=rtpmap:111 SIREN/16000\r\n"
    b"a=fmtp:111 bitrate=16000\r\n"
    b"a=rtpmap:112 G7221/16000\r\n"
    b"a=fmtp:112 bitrate=24000\r\n"
    b"a=rtpmap:6 DVI4/16000\r\n"
    b"a=rtpmap:0 PCMU/8000\r\n"
    b"a=rtpmap:8 PCMA/8000\r\n"
    b"a=rtpmap:4 G723/8000\r\n"
    b"a=rtpmap:3 GSM/8000\r\n"
    b"a=rtpmap:101 telephone-event/8000\r\n"
    b"a=fmtp:101 0-16\r\n"
)
assert len(SEED_SDP) == 451

SEED_HEADERS = (
    b"INVITE sip:jiri@iptel.org SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP 195.37.77.100:5040\r\n"
    b"Max-Forwards: 10\r\n"
    b'From: "alice" <sip:alice@iptel.org>;tag=76ff7a07-c091-4192-84a0-d56e91fe104f\r\n'
    b"To: <sip:jiri@iptel.org>\r\n"
    b"Call-ID: d10815e0-bf17-4afa-8412-d9130a793d96@213.20.128.35\r\n"
    b"CSeq: 2 INVITE\r\n"
    b"Contact: <sip:123.20.128.35:9315>\r\n"
    b"Content-Type: application/sdp\r\n"
    b"Content-Length: 451\r\n"
    b"\r\n"
)

SEED_REQUEST = SEED_HEADERS + SEED_SDP


def seed_environment(src_ip: str = SEED_SRC_IP) -> dict[str, str]:
    """Every SIP_* variable SER 0.9 exported for the seed request, with the
    spec's verdicts: SIP_RURI is the full URI, SIP_USER is present, and
    SIP_ORURI is exported besides SER's real name SIP_ORUI."""
    return {
        "SIP_HF_VIA": "SIP/2.0/UDP 195.37.77.100:5040",
        "SIP_HF_MAX_FORWARDS": "10",
        "SIP_HF_FROM": '"alice" <sip:alice@iptel.org>;tag=76ff7a07-c091-4192-84a0-d56e91fe104f',
        "SIP_HF_TO": "<sip:jiri@iptel.org>",
        "SIP_HF_CALLID": "d10815e0-bf17-4afa-8412-d9130a793d96@213.20.128.35",
        "SIP_HF_CSEQ": "2 INVITE",
        "SIP_HF_CONTACT": "<sip:123.20.128.35:9315>",
        "SIP_HF_CONTENT_TYPE": "application/sdp",
        "SIP_HF_CONTENT_LENGTH": "451",
        "SIP_SRCIP": src_ip,
        "SIP_RURI": "sip:jiri@iptel.org",
        "SIP_USER": "jiri",
        "SIP_ORUI": "sip:jiri@iptel.org",
        "SIP_ORURI": "sip:jiri@iptel.org",
        "SIP_OUSER": "jiri",
        "SIP_TID": SEED_TID,
        "SIP_DID": "",
    }
