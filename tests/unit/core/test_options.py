from __future__ import annotations

import pytest

from sipexpress.core.context import Proto
from sipexpress.core.logging import ALERT, NOTICE, std_level, threshold_for_debug
from sipexpress.core.options import (
    DEFAULTS,
    OptionError,
    SocketSpec,
    normalize_options,
    parse_socket_list,
    parse_socket_spec,
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("127.0.0.1", SocketSpec(None, "127.0.0.1", 0)),
        ("udp:127.0.0.1:5070", SocketSpec(Proto.UDP, "127.0.0.1", 5070)),
        ("TCP:10.0.0.1", SocketSpec(Proto.TCP, "10.0.0.1", 0)),
        ("*:1.2.3.4:*", SocketSpec(None, "1.2.3.4", 0)),
        ("[::1]:5080", SocketSpec(None, "::1", 5080)),
        ("tcp:[::1]", SocketSpec(Proto.TCP, "::1", 0)),
        ("::1", SocketSpec(None, "::1", 0)),
        ("Example.COM:5060", SocketSpec(None, "example.com", 5060)),
    ],
)
def test_parse_socket_spec(text: str, expected: SocketSpec) -> None:
    assert parse_socket_spec(text) == expected


@pytest.mark.parametrize("text", ["", "udp:1.2.3.4:port", "[::1", "1.2.3.4:70000", "[zz::1]:5"])
def test_parse_socket_spec_errors(text: str) -> None:
    with pytest.raises(OptionError):
        parse_socket_spec(text)


def test_socket_list_forms() -> None:
    assert parse_socket_list("udp:1.2.3.4 tcp:5.6.7.8:9") == [
        SocketSpec(Proto.UDP, "1.2.3.4", 0),
        SocketSpec(Proto.TCP, "5.6.7.8", 9),
    ]
    assert parse_socket_list(("udp", "[::1]", 5)) == [SocketSpec(Proto.UDP, "::1", 5)]
    assert str(SocketSpec(Proto.TCP, "::1", 5060)) == "tcp:[::1]:5060"


def test_normalize_defaults_synonyms_and_types() -> None:
    o = normalize_options({"sock_mode": "0600", "log_stderror": "yes", "port": "5070", "listen": "1.2.3.4"})
    assert o["fifo_mode"] == 0o600
    assert o["log_stderror"] is True
    assert o["port"] == 5070
    assert o["listen"] == [SocketSpec(None, "1.2.3.4", 0)]
    assert o["sip_warning"] is DEFAULTS["sip_warning"] is False  # Kamailio: off unless asked for
    # listen accumulates like repeated listen= lines
    o2 = normalize_options({"listen": "5.6.7.8"}, o)
    assert [s.host for s in o2["listen"]] == ["1.2.3.4", "5.6.7.8"]
    with pytest.raises(OptionError):
        normalize_options({"check_via": "maybe"})
    with pytest.raises(OptionError):
        normalize_options({"children": "many"})


def test_ser_debug_levels() -> None:
    assert std_level(4) == 10 and std_level(9) == 10
    assert std_level(2) == NOTICE and std_level(-3) == ALERT
    assert threshold_for_debug(2) == NOTICE
    assert threshold_for_debug(0) == 40  # only ERR and worse
    assert threshold_for_debug(4) == 10
