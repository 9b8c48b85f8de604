"""A browser phone on ser over secure WebSocket (issue 20, RFC 7118).

Debian's chromium, driven by Playwright, loads a page using SIP.js from the
npm registry (installed by the test into the user's cache directory,
outside the work tree;
SIP.js is plain ES modules, served to the page as they come by a loopback
HTTP server).  The page
registers over WSS with ser, calls a SIPp UAS through ser and hangs up, and
is called by a SIPp UAC through ser and answers; ACK and BYE travel along
the record-routed path (the browser's ``.invalid`` Contact reached over its
connection).  The server certificate comes from a test CA made here; the
browser trusts that CA's key through ``--ignore-certificate-errors-spki-list``
(chromium's flag for pinning a key, with the CA in the served chain), and
the page's Origin passes ser's ``ws_origin``.  Media need not flow: the page
gives SIP.js a session description handler with fixed SDP instead of
WebRTC's, so that the test can check that both SDP bodies pass ser intact.
"""

from __future__ import annotations

import base64
import hashlib
import http.server
import json
import os
import shutil
import socket
import subprocess
import threading
import urllib.parse
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support import IN_CI, SerProcess, SippPhone, free_port, wait_for
from tests.tls_support import Issued, TestCA
from tests.web.conftest import CHROMIUM, CHROMIUM_ARGS

pytestmark = pytest.mark.interop

SIPJS_VERSION = "0.21.2"
# outside the repository: the session guard in tests/conftest.py fails a run
# that writes into the work tree, ignored folders included
NPM_DIR = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "sipexpress-tests" / "npm"

StartSer = Callable[..., SerProcess]

CFG = """\
debug=3
fork=no
listen=udp:{host}:{port}
listen=wss:{host}:{wss_port}
tls_certificate="{cert}"
tls_private_key="{key}"
ws_origin="^http://127\\.0\\.0\\.1:{http_port}$"
loadmodule "sl"
loadmodule "tm"
loadmodule "rr"
loadmodule "maxfwd"
loadmodule "usrloc"
loadmodule "registrar"
modparam("usrloc", "db_mode", 0)
route {{
    if (!mf_process_maxfwd_header("10")) {{ sl_send_reply("483", "Too Many Hops"); break; }};
    if (method == "REGISTER") {{
        if (proto != wss) {{ sl_send_reply("403", "WSS only"); break; }};
        save("location");
        break;
    }};
    if (loose_route()) {{ t_relay(); break; }};
    if (method == "INVITE") {{ record_route(); }};
    if (uri == myself) {{
        if (!lookup("location")) {{ sl_send_reply("404", "Not Found"); break; }};
    }};
    t_relay();
}}
"""

BROWSER_SDP = (
    "v=0\r\no=browser 4242 1 IN IP4 127.0.0.1\r\ns=sipexpress-wss\r\nc=IN IP4 127.0.0.1\r\n"
    "t=0 0\r\nm=audio 40000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\na=x-marker:from-the-browser\r\n"
)

PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>sipexpress WSS phone</title></head><body>
<script type="module">
import { UserAgent, Registerer, RegistererState, Inviter, SessionState } from "/sip.js/lib/index.js";

const cfg = JSON.parse(new URLSearchParams(location.search).get("cfg"));
const events = (window.events = []);
const note = (what) => events.push(what);
window.remoteSdp = [];

// no WebRTC: fixed SDP out, whatever comes in is kept for the test
function handler() {
  return {
    close() {},
    getDescription() { return Promise.resolve({ body: cfg.sdp, contentType: "application/sdp" }); },
    hasDescription(type) { return type === "application/sdp"; },
    setDescription(sdp) { window.remoteSdp.push(sdp); return Promise.resolve(); },
    sendDtmf() { return false; },
    rollbackDescription() { return Promise.resolve(); },
  };
}

const ua = new UserAgent({
  uri: UserAgent.makeURI(`sip:alice@${cfg.domain}`),
  transportOptions: { server: cfg.server },
  sessionDescriptionHandlerFactory: handler,
  logLevel: "warn",
  delegate: {
    onInvite(invitation) {
      note("incoming");
      invitation.stateChange.addListener((s) => note(`callee:${s}`));
      invitation.accept().catch((e) => note(`accept failed: ${e}`));
    },
  },
});

window.call = async (target) => {
  const inviter = new Inviter(ua, UserAgent.makeURI(target));
  inviter.stateChange.addListener((s) => {
    note(`caller:${s}`);
    if (s === SessionState.Established) setTimeout(() => inviter.bye(), 100);
  });
  await inviter.invite();
};

try {
  await ua.start();
  const registerer = new Registerer(ua, { expires: 300 });
  registerer.stateChange.addListener((s) => { if (s === RegistererState.Registered) note("registered"); });
  await registerer.register();
} catch (e) {
  note(`failed: ${e}`);
}
</script></body></html>
"""


def sipjs_lib() -> Path:
    """SIP.js from the npm registry, installed once into the cache."""
    lib = NPM_DIR / "node_modules" / "sip.js" / "lib"
    installed = NPM_DIR / "node_modules" / "sip.js" / "package.json"
    if installed.exists() and json.loads(installed.read_text())["version"] == SIPJS_VERSION:
        return lib
    npm = shutil.which("npm")
    if npm is None:
        if IN_CI:
            pytest.fail("npm is required in CI")
        pytest.skip("npm not installed")
    NPM_DIR.mkdir(parents=True, exist_ok=True)
    p = subprocess.run(
        [
            npm,
            "install",
            "--prefix",
            str(NPM_DIR),
            "--no-audit",
            "--no-fund",
            "--silent",
            f"sip.js@{SIPJS_VERSION}",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    if p.returncode != 0 or not lib.is_dir():
        msg = f"npm install sip.js failed: {p.stderr[-2000:]}"
        if IN_CI:
            pytest.fail(msg)
        pytest.skip(msg)
    return lib


def lf(text: str) -> str:
    """Line ends as LF (SIPp's trace and the SDP bodies compared alike)."""
    return text.replace("\r\n", "\n")


def spki_hash(cert_pem: bytes) -> str:
    """base64(SHA-256(SubjectPublicKeyInfo)): chromium's key pin."""
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    key = x509.load_pem_x509_certificate(cert_pem).public_key()
    der = key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return base64.b64encode(hashlib.sha256(der).digest()).decode()


@pytest.fixture
def chromium(ca: TestCA) -> Iterator[tuple[Any, TestCA]]:
    """chromium trusting a fresh test CA's key; the CA."""
    if shutil.which(CHROMIUM) is None:
        if IN_CI:
            pytest.fail("chromium is required in CI")
        pytest.skip("chromium not installed")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        if IN_CI:
            raise
        pytest.skip("playwright not installed")
    args = [*CHROMIUM_ARGS, f"--ignore-certificate-errors-spki-list={spki_hash(ca.cert_path.read_bytes())}"]
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=args)
        try:
            yield browser, ca
        finally:
            browser.close()


@pytest.fixture
def web_root(tmp_path: Path) -> Iterator[tuple[Path, int]]:
    """A loopback HTTP server for the page (chromium's Local Network Access
    lets only pages of loopback origins open connections to 127.0.0.1)."""
    root = tmp_path / "www"
    root.mkdir()

    class Files(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, directory=str(root), **kwargs)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Files)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield root, int(httpd.server_address[1])
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_browser_registers_calls_and_answers_over_wss(
    ser_factory: StartSer,
    chromium: tuple[Any, TestCA],
    server_cert: Issued,
    web_root: tuple[Path, int],
    tmp_path: Path,
) -> None:
    browser, ca = chromium
    root, http_port = web_root
    (root / "phone.html").write_text(PAGE)
    (root / "sip.js").symlink_to(sipjs_lib().parent)
    chain = tmp_path / "ser-chain.pem"  # the server's certificate, then the CA's
    chain.write_bytes(server_cert.cert.read_bytes() + ca.cert_path.read_bytes())
    wss_port = free_port(socket.SOCK_STREAM)
    sp = ser_factory(CFG, wss_port=wss_port, cert=chain, key=server_cert.key, http_port=http_port)

    page = browser.new_page()
    cfg = {"server": f"wss://127.0.0.1:{wss_port}", "domain": sp.host, "sdp": BROWSER_SDP}
    page.goto(f"http://127.0.0.1:{http_port}/phone.html?cfg={urllib.parse.quote(json.dumps(cfg))}")

    def events() -> list[str]:
        return list(page.evaluate("window.events || []"))

    assert wait_for(lambda: "registered" in events() or any(e.startswith("failed") for e in events()), 10), (
        events(),
        sp.log(),
    )
    assert "registered" in events(), (events(), sp.log())

    # the browser calls a SIPp UAS through ser, and hangs up
    uas = SippPhone("uas_rr.xml", tmp_path / "uas")
    page.evaluate(f"window.call('sip:uas@127.0.0.1:{uas.port}')")
    assert uas.wait(15) == 0, (events(), sp.log(), uas.received())
    assert wait_for(lambda: "caller:Terminated" in events(), 5), events()
    assert "caller:Established" in events()
    trace = lf(uas.received())
    assert lf(BROWSER_SDP) in trace  # the browser's offer reached SIPp intact
    answer = page.evaluate("window.remoteSdp[0]")
    assert answer.startswith("v=0") and "o=user1 53655765 2353687637 IN IP4 127.0.0.1" in answer
    assert lf(answer) in trace  # and SIPp's answer the browser

    # a SIPp UAC calls alice through ser: the browser answers; ACK and BYE
    # come along the record-routed path to its .invalid Contact
    uac = SippPhone("uac_rr.xml", tmp_path / "uac", remote=f"{sp.host}:{sp.port}", extra=["-s", "alice"])
    assert uac.wait(15) == 0, (events(), sp.log(), uac.received())
    assert wait_for(lambda: "callee:Terminated" in events(), 5), events()
    assert "callee:Established" in events()  # the ACK reached the browser
    offer = page.evaluate("window.remoteSdp[1]")
    trace = lf(uac.received())
    assert offer.startswith("v=0") and "m=audio" in offer and lf(offer) in trace  # SIPp's offer, intact
    assert lf(BROWSER_SDP) in trace  # the browser's answer, intact
    assert trace.count("SIP/2.0 200 OK") >= 2  # the INVITE's and the BYE's
