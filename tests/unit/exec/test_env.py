"""SIP_* environment (exec.md §2) built from a real parsed request."""

from __future__ import annotations

import hashlib

from sipexpress.modules.exec import hf_var_name, sip_environment, transaction_id
from tests.unit.exec.conftest import MakeCtx, request
from tests.unit.exec.seed import SEED_TID, seed_environment


def test_seed_request_environment_is_exactly_what_the_spec_says(make_ctx: MakeCtx) -> None:
    ctx = make_ctx()
    assert sip_environment(ctx) == seed_environment()


def test_seed_tid_matches_the_seed_listing(make_ctx: MakeCtx) -> None:
    assert transaction_id(make_ctx().msg) == SEED_TID


def test_header_names() -> None:
    assert hf_var_name("Max-Forwards") == "SIP_HF_MAX_FORWARDS"
    assert hf_var_name("CSeq") == "SIP_HF_CSEQ"
    assert hf_var_name("User-Agent") == "SIP_HF_USER_AGENT"
    assert hf_var_name("p_header") == "SIP_HF_P_HEADER"
    assert hf_var_name("X.a!b~c*d'e(f)g[h]i/j?k:l+m$n%o") == "SIP_HF_X_A_B_C_D_E_F_G_H_I_J_K_L_M_N_O"
    # compact forms known to SER 0.9's parser: canonical names
    for compact, long_, var in [
        ("v", "Via", "VIA"),
        ("f", "From", "FROM"),
        ("t", "To", "TO"),
        ("i", "Call-ID", "CALLID"),
        ("m", "Contact", "CONTACT"),
        ("l", "Content-Length", "CONTENT_LENGTH"),
        ("c", "Content-Type", "CONTENT_TYPE"),
        ("k", "Supported", "SUPPORTED"),
        ("o", "Event", "EVENT"),
    ]:
        assert hf_var_name(compact) == hf_var_name(compact.upper()) == "SIP_HF_" + var
        assert hf_var_name(long_) == hf_var_name(long_.lower()) == "SIP_HF_" + var
    # compact forms the 0.9 parser did not know stay as written
    assert hf_var_name("s") == "SIP_HF_S"
    assert hf_var_name("e") == "SIP_HF_E"
    assert hf_var_name("r") == "SIP_HF_R"


def test_compact_forms_in_a_message(make_ctx: MakeCtx) -> None:
    raw = request(
        "sip:bob@example.com",
        [
            "v: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bKcompact",
            "f: <sip:alice@example.com>;tag=abc",
            "t: <sip:bob@example.com>",
            "i: compact-call-id",
            "CSeq: 7 MESSAGE",
            "s: hello there",
            "c: text/plain",
            "l: 2",
        ],
        b"hi",
        method="MESSAGE",
    )
    env = sip_environment(make_ctx(raw))
    assert env["SIP_HF_VIA"] == "SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bKcompact"
    assert env["SIP_HF_FROM"] == "<sip:alice@example.com>;tag=abc"
    assert env["SIP_HF_TO"] == "<sip:bob@example.com>"
    assert env["SIP_HF_CALLID"] == "compact-call-id"
    assert env["SIP_HF_CONTENT_TYPE"] == "text/plain"
    assert env["SIP_HF_CONTENT_LENGTH"] == "2"
    assert env["SIP_HF_S"] == "hello there"
    assert "SIP_HF_SUBJECT" not in env and "SIP_HF_V" not in env


def test_repeated_headers_first_then_reversed(make_ctx: MakeCtx) -> None:
    raw = request(
        "sip:bob@example.com",
        [
            "Via: SIP/2.0/UDP v1.example.com;branch=z9hG4bK1",
            "v: SIP/2.0/UDP v2.example.com;branch=z9hG4bK2",
            "Via: SIP/2.0/UDP v3.example.com;branch=z9hG4bK3",
            "From: <sip:alice@example.com>;tag=abc",
            "To: <sip:bob@example.com>",
            "Call-ID: rep",
            "CSeq: 1 INVITE",
            "X-Two: first",
            "x-two: second",
            "Record-Route: <sip:p1.example.com;lr>, <sip:p2.example.com;lr>",
        ],
    )
    env = sip_environment(make_ctx(raw))
    assert env["SIP_HF_VIA"] == (
        "SIP/2.0/UDP v1.example.com;branch=z9hG4bK1,"
        "SIP/2.0/UDP v3.example.com;branch=z9hG4bK3,"
        "SIP/2.0/UDP v2.example.com;branch=z9hG4bK2"
    )
    assert env["SIP_HF_X_TWO"] == "first,second"
    # one header field line with two values is one value (no re-joining)
    assert env["SIP_HF_RECORD_ROUTE"] == "<sip:p1.example.com;lr>, <sip:p2.example.com;lr>"


def test_rewritten_uri_and_original(make_ctx: MakeCtx) -> None:
    ctx = make_ctx()
    ctx.set_ruri("sip:jiri@192.0.2.7:5062;transport=udp")
    env = sip_environment(ctx)
    assert env["SIP_RURI"] == "sip:jiri@192.0.2.7:5062;transport=udp"
    assert env["SIP_USER"] == "jiri"
    assert env["SIP_ORUI"] == env["SIP_ORURI"] == "sip:jiri@iptel.org"
    assert env["SIP_OUSER"] == "jiri"
    ctx.set_ruri("sip:voicemail@192.0.2.9")
    env = sip_environment(ctx)
    assert env["SIP_USER"] == "voicemail" and env["SIP_OUSER"] == "jiri"


def test_uri_without_user(make_ctx: MakeCtx) -> None:
    env = sip_environment(make_ctx(request("sip:iptel.org")))
    assert env["SIP_RURI"] == "sip:iptel.org"
    assert env["SIP_USER"] == "" and env["SIP_OUSER"] == ""


def test_did_is_the_to_tag_and_tid_includes_branch(make_ctx: MakeCtx) -> None:
    raw = request(
        "sip:jiri@192.0.2.7",
        [
            "Via: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bKnashds8",
            "From: Alice <sip:alice@iptel.org>;tag=1928301774",
            "To: Jiri <sip:jiri@iptel.org>;tag=a6c85cf",
            "Call-ID: a84b4c76e66710@pc33.atlanta.com",
            "CSeq: 314160 BYE",
            "Max-Forwards: 70",
        ],
        method="BYE",
    )
    ctx = make_ctx(raw)
    env = sip_environment(ctx)
    assert env["SIP_DID"] == "a6c85cf"
    expected = hashlib.md5(
        b"Alice <sip:alice@iptel.org>;tag=1928301774"
        b"Jiri <sip:jiri@iptel.org>;tag=a6c85cf"
        b"a84b4c76e66710@pc33.atlanta.com"
        b"sip:jiri@192.0.2.7"
        b"314160"
        b"10.0.0.1"
        b"5060"
        b"z9hG4bKnashds8"
    ).hexdigest()
    assert env["SIP_TID"] == expected


def test_tid_ignores_method_so_cancel_shares_the_invite_tid(make_ctx: MakeCtx) -> None:
    invite = make_ctx(request(method="INVITE"))
    cancel = make_ctx(request(method="CANCEL"))
    assert transaction_id(invite.msg) == transaction_id(cancel.msg) != ""


def test_received_headers_only(make_ctx: MakeCtx) -> None:
    """Script changes (append_hf) are invisible: the received fields count."""
    ctx = make_ctx()
    ctx.msg.append_header_raw("P-hint: usrloc applied\r\n")
    env = sip_environment(ctx)
    assert "SIP_HF_P_HINT" not in env
    assert env == seed_environment()
