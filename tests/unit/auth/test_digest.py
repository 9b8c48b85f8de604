"""sipexpress.sip.digest: RFC 2617 vectors, SER 0.9 nonces, nonce counts,
the whole verification order."""

from __future__ import annotations

import contextlib
import hashlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sipexpress.sip.digest import (
    NONCE_LEN,
    NONCE_LEN_QOP,
    Credentials,
    DigestResult,
    NonceCounts,
    Nonces,
    NonceStatus,
    build_challenge,
    calc_ha1,
    calc_response,
    check_nc,
    parse_credentials,
    precheck,
    verify,
)
from sipexpress.sip.errors import SipParseError

NOW = 1_700_000_000.0


# -- RFC vectors -------------------------------------------------------------


def test_rfc2617_section_3_5_example() -> None:
    ha1 = calc_ha1("Mufasa", "testrealm@host.com", "Circle Of Life")
    assert ha1 == "939e7578ed9e3c518a452acee763bce9"
    resp = calc_response(
        ha1, "dcd98b7102dd2f0e8b11d0f600bfb0c093", "GET", "/dir/index.html", "auth", "00000001", "0a4f113b"
    )
    assert resp == "6629fae49393a05397450978507c4ef1"


def test_rfc7616_md5_example() -> None:
    ha1 = calc_ha1("Mufasa", "http-auth@example.org", "Circle of Life")
    resp = calc_response(
        ha1,
        "7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v",
        "GET",
        "/dir/index.html",
        "auth",
        "00000001",
        "f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ",
    )
    assert resp == "8ca523f5e9506fed4657c9700eebdbec"


def test_response_without_qop_is_rfc2069_form() -> None:
    ha1 = calc_ha1("Mufasa", "testrealm@host.com", "Circle Of Life")
    ha2 = hashlib.md5(b"GET:/dir/index.html").hexdigest()
    expected = hashlib.md5(f"{ha1}:abc:{ha2}".encode()).hexdigest()
    assert calc_response(ha1, "abc", "GET", "/dir/index.html") == expected


def test_auth_int_hashes_the_body() -> None:
    ha1 = "0" * 32
    a = calc_response(ha1, "n", "INVITE", "sip:a@b", "auth-int", "00000001", "c", b"v=0\r\n")
    b = calc_response(ha1, "n", "INVITE", "sip:a@b", "auth-int", "00000001", "c", b"v=1\r\n")
    assert a != b


def test_ha1b_is_ha1_of_user_at_domain() -> None:
    # ser_mysql.sh: ha1b = md5("user@domain:domain:password")
    assert (
        calc_ha1("jiri@iptel.org", "iptel.org", "heslo")
        == hashlib.md5(b"jiri@iptel.org:iptel.org:heslo").hexdigest()
    )


def test_md5_sess() -> None:
    base = calc_ha1("u", "r", "p")
    sess = calc_ha1("u", "r", "p", "MD5-sess", "n", "c")
    assert sess == hashlib.md5(f"{base}:n:c".encode()).hexdigest()


# -- challenge and credentials ---------------------------------------------------


def test_challenge_format_is_sers() -> None:
    assert build_challenge("iptel.org", "N") == 'Digest realm="iptel.org", nonce="N", algorithm=MD5'
    assert (
        build_challenge("iptel.org", "N", qop=True, stale=True)
        == 'Digest realm="iptel.org", nonce="N", qop="auth", stale=true, algorithm=MD5'
    )
    assert build_challenge('a"b', "N").startswith('Digest realm="a\\"b"')


def test_parse_credentials() -> None:
    c = parse_credentials(
        'Digest username="jiri@iptel.org", realm="iptel.org", nonce="abc", uri="sip:iptel.org",'
        ' response="0123456789abcdef0123456789abcdef", algorithm=MD5, cnonce="x y", qop=auth,'
        " nc=00000001"
    )
    assert c.is_digest
    assert (c.username, c.user, c.domain, c.realm) == ("jiri@iptel.org", "jiri", "iptel.org", "iptel.org")
    assert (c.qop, c.nc, c.cnonce, c.algorithm) == ("auth", "00000001", "x y", "MD5")
    assert c.problems() == []


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ('Digest realm="r", nonce="n", uri="u", response="x"', "username"),
        ('Digest username="a", nonce="n", uri="u", response="x"', "realm"),
        ('Digest username="a", realm="r", uri="u", response="x"', "nonce"),
        ('Digest username="a", realm="r", nonce="n", response="x"', "uri"),
        ('Digest username="a", realm="r", nonce="n", uri="u"', "response"),
        ('Digest username="a", realm="r", nonce="n", uri="u", response="x", qop=auth, nc=00000001', "cnonce"),
        ('Digest username="a", realm="r", nonce="n", uri="u", response="x", qop=auth, cnonce="c"', "nc"),
        ('Digest username="a@other", realm="r", nonce="n", uri="u", response="x"', "realm"),
    ],
)
def test_incomplete_credentials_are_reported(value: str, problem: str) -> None:
    probs = parse_credentials(value).problems()
    assert probs and any(problem in p for p in probs)


@pytest.mark.parametrize("value", ["", '"Digest"', 'Digest username="unterminated', "Digest a b c"])
def test_garbage_credentials_raise_parse_error(value: str) -> None:
    with pytest.raises(SipParseError):
        parse_credentials(value)


@given(st.text(max_size=200))
def test_parse_credentials_raises_only_sip_parse_error(value: str) -> None:
    with contextlib.suppress(SipParseError):
        parse_credentials(value)


# -- nonces --------------------------------------------------------------------------


def test_nonce_carries_its_issue_time() -> None:
    n = Nonces(b"secret", 300)
    nonce = n.generate(NOW)
    issued = f"{int(NOW):08x}"
    assert len(nonce) == NONCE_LEN
    assert nonce == issued + hashlib.md5(issued.encode() + b"secret").hexdigest()


def test_bound_nonce_is_foreign_elsewhere() -> None:
    n = Nonces(b"secret", 300)
    nonce = n.generate(NOW, binding="192.0.2.1")
    assert n.check(nonce, NOW, "192.0.2.1") is NonceStatus.VALID
    assert n.check(nonce, NOW, "192.0.2.66") is NonceStatus.FOREIGN
    assert n.check(nonce, NOW) is NonceStatus.FOREIGN


def test_one_time_nonce_without_qop_serves_one_request() -> None:
    n = Nonces(b"secret", 300)
    nonce = n.generate(NOW, one_time=True)
    assert len(nonce) == NONCE_LEN_QOP and not Nonces.offered_qop(nonce)
    creds = make_creds(n, qop=False, nonce=nonce)
    assert verify(creds, HA1, "REGISTER", n, NOW, txn_key="first") is DigestResult.OK
    assert verify(creds, HA1, "REGISTER", n, NOW + 1, txn_key="first") is DigestResult.OK  # retransmission
    assert verify(creds, HA1, "REGISTER", n, NOW + 1, txn_key="another") is DigestResult.STALE


def test_qop_nonce_carries_a_tracked_index() -> None:
    n = Nonces(b"secret", 300)
    nonce = n.generate(NOW, qop=True)
    assert len(nonce) == NONCE_LEN_QOP
    idx = Nonces.index_of(nonce)
    assert idx and n.counts.known(idx)
    assert n.check(nonce, NOW) is NonceStatus.VALID


def test_nonce_expiry_is_stale_not_invalid() -> None:
    n = Nonces(b"s", 300)
    nonce = n.generate(NOW)
    assert n.check(nonce, NOW + 300) is NonceStatus.VALID
    assert n.check(nonce, NOW + 301) is NonceStatus.STALE


def test_nonce_of_another_secret_or_tampered_is_foreign() -> None:
    a, b = Nonces(b"one", 300), Nonces(b"two", 300)
    nonce = a.generate(NOW)
    assert b.check(nonce, NOW) is NonceStatus.FOREIGN
    # moving the expiry forward breaks the MAC
    forged = f"{int(NOW) + 99999:08x}" + nonce[8:]
    assert a.check(forged, NOW) is NonceStatus.FOREIGN
    for bad in ["", "xyz", nonce[:-1], nonce + "0", "g" * 40, " " * 40, "+" + nonce[1:]]:
        assert a.check(bad, NOW) is NonceStatus.INVALID


def test_random_secret_per_instance() -> None:
    a, b = Nonces(None, 300), Nonces("", 300)
    assert a.secret != b.secret and len(a.secret) >= 16
    assert b.check(a.generate(NOW), NOW) is NonceStatus.FOREIGN


def test_nonce_counts_reject_replay_and_accept_reordering() -> None:
    c = NonceCounts(8)
    idx = c.allocate()
    assert c.use(idx, 1)
    assert not c.use(idx, 1)  # replay
    assert c.use(idx, 3)
    assert c.use(idx, 2)  # late, but unseen
    assert not c.use(idx, 2)
    assert c.use(idx, 100)
    assert not c.use(idx, 100 - NonceCounts.WINDOW)  # fell out of the window
    assert c.use(idx, 100 - NonceCounts.WINDOW + 1)
    assert not c.use(idx, 0)


def test_retransmission_is_not_a_replay() -> None:
    c = NonceCounts(8)
    idx = c.allocate()
    assert c.use(idx, 1, "branch1", 100.0)
    assert c.use(idx, 1, "branch1", 101.0)  # the same request again
    assert not c.use(idx, 1, "branch2", 101.0)  # another request, same nc
    assert not c.use(idx, 1, None, 101.0)
    assert not c.use(idx, 1, "branch1", 100.0 + NonceCounts.RETRANSMIT_WINDOW + 1)
    assert c.use(idx, 2, "branch3", 102.0)
    assert not c.use(idx, 1, "branch1", 102.0)  # only the latest one


def test_nonce_count_slot_reuse_forgets_the_old_nonce() -> None:
    c = NonceCounts(2)
    first = c.allocate()
    c.allocate()
    c.allocate()  # takes first's slot
    assert not c.known(first)
    assert not c.use(first, 1)


def test_check_nc() -> None:
    assert check_nc("00000001") == 1
    assert check_nc("0000000a") == 10
    for bad in ["1", "000000001", "0000000g", "", " 0000001", "0x000001"]:
        assert check_nc(bad) is None, bad


# -- verification ----------------------------------------------------------------------


def make_creds(
    nonces: Nonces,
    password: str = "secret",
    qop: bool = True,
    nc: str = "00000001",
    nonce: str | None = None,
    method: str = "REGISTER",
    uri: str = "sip:iptel.org",
    username: str = "jiri",
    realm: str = "iptel.org",
) -> Credentials:
    nonce = nonce or nonces.generate(NOW, qop)
    ha1 = calc_ha1(username, realm, password)
    params = {"username": username, "realm": realm, "nonce": nonce, "uri": uri}
    if qop:
        params.update(qop="auth", nc=nc, cnonce="c0ffee")
        params["response"] = calc_response(ha1, nonce, method, uri, "auth", nc, "c0ffee")
    else:
        params["response"] = calc_response(ha1, nonce, method, uri)
    return Credentials("Digest", params)


HA1 = calc_ha1("jiri", "iptel.org", "secret")


def test_verify_ok_then_replay_is_stale() -> None:
    n = Nonces(b"k", 300)
    c = make_creds(n)
    assert verify(c, HA1, "REGISTER", n, NOW) is DigestResult.OK
    assert verify(c, HA1, "REGISTER", n, NOW) is DigestResult.STALE


def test_verify_wrong_password() -> None:
    n = Nonces(b"k", 300)
    c = make_creds(n, password="wrong")
    assert verify(c, HA1, "REGISTER", n, NOW) is DigestResult.WRONG_RESPONSE
    # a wrong answer does not burn the nonce count
    good = make_creds(n, nonce=c.nonce)
    assert verify(good, HA1, "REGISTER", n, NOW) is DigestResult.OK


def test_verify_stale_only_with_right_password() -> None:
    n = Nonces(b"k", 300)
    c = make_creds(n, qop=False)
    assert verify(c, HA1, "REGISTER", n, NOW + 1000) is DigestResult.STALE
    bad = make_creds(n, qop=False, password="x")
    assert verify(bad, HA1, "REGISTER", n, NOW + 1000) is DigestResult.WRONG_RESPONSE


def test_verify_without_qop_keeps_ser_semantics() -> None:
    n = Nonces(b"k", 300)
    c = make_creds(n, qop=False)
    assert verify(c, HA1, "REGISTER", n, NOW) is DigestResult.OK
    assert verify(c, HA1, "REGISTER", n, NOW) is DigestResult.OK  # no nc: valid until expiry


def test_qop_downgrade_is_refused() -> None:
    n = Nonces(b"k", 300)
    qop_nonce = n.generate(NOW, qop=True)
    c = make_creds(n, qop=False, nonce=qop_nonce)
    assert precheck(c, n, NOW)[0] is DigestResult.QOP_REQUIRED
    assert verify(c, HA1, "REGISTER", n, NOW) is DigestResult.QOP_REQUIRED


def test_foreign_nonce_never_gets_in() -> None:
    other = Nonces(b"other", 300)
    n = Nonces(b"k", 300)
    # the right password: stale=true, the UA retries with one of our nonces
    assert verify(make_creds(other), HA1, "REGISTER", n, NOW) is DigestResult.STALE
    assert verify(make_creds(other, qop=False), HA1, "REGISTER", n, NOW) is DigestResult.STALE
    # a wrong one: refused as an invalid nonce
    bad = make_creds(other, password="x")
    assert verify(bad, HA1, "REGISTER", n, NOW) is DigestResult.INVALID_NONCE
    # a forged expiry on one of our nonces
    c = make_creds(n)
    forged_nonce = f"{int(NOW) + 99999:08x}" + (c.nonce or "")[8:]
    assert verify(make_creds(n, nonce=forged_nonce), HA1, "REGISTER", n, NOW) is DigestResult.STALE


def test_malformed_nonce_is_refused_before_the_password_is_checked() -> None:
    n = Nonces(b"k", 300)
    c = make_creds(n, nonce="not-a-nonce")
    assert precheck(c, n, NOW)[0] is DigestResult.INVALID_NONCE
    assert verify(c, HA1, "REGISTER", n, NOW) is DigestResult.INVALID_NONCE


def test_method_and_uri_are_bound_into_the_response() -> None:
    n = Nonces(b"k", 300)
    c = make_creds(n, method="REGISTER")
    assert verify(c, HA1, "INVITE", n, NOW) is DigestResult.WRONG_RESPONSE


def test_bad_algorithm_and_bad_nc() -> None:
    n = Nonces(b"k", 300)
    c = make_creds(n)
    c.params["algorithm"] = "SHA-256"
    assert verify(c, HA1, "REGISTER", n, NOW) is DigestResult.BAD_ALGORITHM
    c = make_creds(n, nc="1")
    assert verify(c, HA1, "REGISTER", n, NOW) is DigestResult.BAD_REQUEST


def test_uppercase_response_accepted() -> None:
    n = Nonces(b"k", 300)
    c = make_creds(n)
    c.params["response"] = (c.response or "").upper()
    assert verify(c, HA1, "REGISTER", n, NOW) is DigestResult.OK
