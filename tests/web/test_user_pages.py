"""The user's pages in a real browser: sign-up with e-mail confirmation,
log-in, password change used by a SIPp phone, contacts, IM to a SIPp
phone, phonebook click-to-dial between two SIPp phones, missed calls, and
the rejection of bad input."""

from __future__ import annotations

import re
import socket
import time
from typing import Any

import pytest

from sipexpress.db import add_user
from sipexpress.mgmt.client import rpc_call
from tests.web.conftest import DOMAIN, HERE, WebServer, run_async, shot

pytestmark = [pytest.mark.interop, pytest.mark.timeout(180)]
SCEN = HERE / "scenarios"
SIPP_DATA = HERE.parents[1] / "tests" / "data" / "sipp"


def make_user(web: WebServer, user: str, password: str) -> None:
    run_async(lambda: add_user(web.db_url, user, DOMAIN, password, f"{user}@example.com"))


def login(page: Any, user: str, password: str, domain: str = DOMAIN) -> None:
    page.goto("/login")
    page.get_by_label("User name").fill(user)
    page.get_by_label("Domain").fill(domain)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Log in").click()


def follow(page: Any, target: Any) -> None:
    """Click a link or submit button and wait for the new page (reading
    the page right after a bare click could still read the old one)."""
    with page.expect_navigation():
        target.click()


def alert(page: Any) -> str:
    return str(page.locator("[role=alert]").first.inner_text())


def status(page: Any) -> str:
    return str(page.locator("[role=status]").first.inner_text())


def register_phone(web: WebServer, phones: Any, user: str, password: str) -> Any:
    ph = phones(
        [
            f"127.0.0.1:{web.ser.port}",
            "-sf",
            str(SCEN / "register.xml"),
            "-s",
            user,
            "-au",
            user,
            "-ap",
            password,
            "-m",
            "1",
            "-timeout",
            "10",
        ],
        "reg",
    )
    return ph


def test_protected_pages_redirect_to_login(page: Any) -> None:
    for path in ("/account", "/contacts", "/im", "/phonebook", "/calls", "/admin/users", "/admin/health"):
        page.goto(path)
        assert re.search(r"/login\?next=", page.url), (path, page.url)
        assert page.get_by_role("heading", name="Log in").is_visible()


def test_signup_confirm_login_password_phone_contacts(page: Any, web: WebServer, phones: Any) -> None:
    page.goto("/login")
    shot(page, "login")
    page.get_by_role("link", name="Sign up").click()
    # empty form: the browser's own checks stop it, so submit without them
    page.evaluate("document.querySelector('form[action=\"/signup\"]').noValidate = true")
    page.get_by_role("button", name="Sign up").click()
    msg = alert(page)
    assert "Please enter a user name." in msg and "Please enter a password." in msg
    assert "Please enter an e-mail address." in msg
    page.evaluate("document.querySelector('form[action=\"/signup\"]').noValidate = true")
    page.get_by_label("User name").fill("bad name!")
    page.get_by_label("E-mail").fill("not-an-address")
    page.locator("#password").fill("abc12345")
    page.get_by_label("Password again").fill("different1")
    page.get_by_role("button", name="Sign up").click()
    msg = alert(page)
    assert "A user name is 1-64 letters" in msg
    assert "not a valid e-mail address" in msg and "The two passwords differ." in msg
    # the good one
    page.get_by_label("User name").fill("jan")
    page.get_by_label("First name").fill("Jan")
    page.get_by_label("Last name").fill("Janský <b>")
    page.get_by_label("E-mail").fill("jan@example.com")
    page.locator("#password").fill("first-pw1")
    page.get_by_label("Password again").fill("first-pw1")
    page.get_by_role("button", name="Sign up").click()
    assert "jan@example.com" in status(page)
    link = web.mail_link("jan@example.com")
    # not a subscriber before confirmation
    login(page, "jan", "first-pw1")
    assert alert(page) == "Wrong user name or password."
    page.goto(link)
    assert "sip:jan@127.0.0.1 is ready" in status(page)
    page.goto(link)  # a second use of the link
    assert "unknown or has expired" in alert(page)
    login(page, "jan", "first-pw1")
    page.wait_for_url("**/account")
    assert page.get_by_text("sip:jan@127.0.0.1").is_visible()
    assert page.get_by_label("Last name").input_value() == "Janský <b>"  # escaped, kept
    # change the password: wrong current one first
    page.get_by_label("Current password").fill("nope-nope")
    page.locator("#new").fill("second-pw2")
    page.get_by_label("New password again").fill("second-pw2")
    page.get_by_role("button", name="Change password").click()
    assert alert(page) == "Your current password is wrong."
    page.get_by_label("Current password").fill("first-pw1")
    page.locator("#new").fill("second-pw2")
    page.get_by_label("New password again").fill("second-pw2")
    page.get_by_role("button", name="Change password").click()
    assert "Your password was changed" in status(page)
    assert "first-pw1" not in page.content() and "second-pw2" not in page.content()
    shot(page, "account")
    # a phone with the old password is refused, with the new one registers
    old = register_phone(web, phones, "jan", "first-pw1")
    assert old.wait(20) != 0
    new = register_phone(web, phones, "jan", "second-pw2")
    assert new.wait(20) == 0, new.output()
    page.get_by_role("link", name="Contacts").click()
    row = page.locator("tbody tr", has_text=f"sip:jan@127.0.0.1:{new.port}")
    assert row.count() == 1
    assert re.search(r"\d+ min", row.inner_text())  # expires in ~59 min
    # add a permanent contact (the seed's cell phone), bad URI first
    page.get_by_label("SIP address").fill("cell phone")
    page.get_by_role("button", name="Add contact").click()
    assert "is not a valid SIP address" in alert(page) or "contains no spaces" in alert(page)
    page.get_by_label("SIP address").fill("sip:+4917012345@gw.example.com")
    page.get_by_label("Valid for").select_option("permanent")
    page.get_by_role("button", name="Add contact").click()
    assert "added" in status(page)
    cell = page.locator("tbody tr", has_text="sip:+4917012345@gw.example.com")
    assert "permanent" in cell.inner_text()
    shot(page, "contacts")
    cell.get_by_role("button", name="Remove").click()
    assert "removed" in status(page)
    assert page.locator("tbody tr", has_text="sip:+4917012345@gw.example.com").count() == 0
    assert page.locator("tbody tr", has_text=f":{new.port}").count() == 1
    # log out: protected pages are gone again
    page.get_by_role("button", name="Log out").click()
    page.goto("/contacts")
    assert "/login" in page.url


def test_im_reaches_a_sipp_phone_and_bad_input_is_rejected(page: Any, web: WebServer, phones: Any) -> None:
    make_user(web, "ivan", "ivan-pass1")
    make_user(web, "olga", "olga-pass1")
    uas = phones(
        ["-sf", str(SIPP_DATA / "uas_message.xml"), "-m", "1", "-timeout", "30", "-trace_msg"], "uas"
    )
    reg = register_phone(web, phones, "olga", "olga-pass1")
    reg.proc.kill()  # we only need olga's contact: point it at the UAS instead
    login(page, "olga", "olga-pass1")
    page.goto("/contacts")
    page.get_by_label("SIP address").fill(f"sip:olga@127.0.0.1:{uas.port}")
    page.get_by_label("Valid for").select_option("3600")
    page.get_by_role("button", name="Add contact").click()
    assert "added" in status(page)
    page.get_by_role("button", name="Log out").click()
    login(page, "ivan", "ivan-pass1")
    page.goto("/im")
    form = page.locator("form[action='/im']")
    page.evaluate("document.querySelector('form[action=\"/im\"]').noValidate = true")
    page.get_by_role("button", name="Send").click()
    assert "Please enter a SIP address" in alert(page) and "Please enter a message." in alert(page)
    page.evaluate("document.querySelector('form[action=\"/im\"]').noValidate = true")
    page.get_by_label("To (SIP address)").fill("olga")
    page.evaluate("document.getElementById('text').removeAttribute('maxlength')")
    page.get_by_label("Message").fill("x" * 1301)
    page.get_by_role("button", name="Send").click()
    assert "'olga' is not a valid SIP address" in alert(page)
    assert "at most 1300 characters" in alert(page)
    # a forged CSRF token
    page.get_by_label("To (SIP address)").fill("sip:olga@127.0.0.1")
    page.get_by_label("Message").fill("hi")
    form.locator("input[name=csrf]").evaluate("e => e.value = 'forged'")
    page.get_by_role("button", name="Send").click()
    assert "security token is missing or wrong" in alert(page)
    # the real message
    page.goto("/im")
    page.get_by_label("To (SIP address)").fill("sip:olga@127.0.0.1")
    page.get_by_label("Message").fill("Ahoj Olgo, <script>alert(1)</script> ça va?")
    follow(page, page.get_by_role("button", name="Send"))
    assert im_final(page) == "delivered"
    assert "Message delivered to sip:olga@127.0.0.1 (200 OK)" in status(page)
    shot(page, "im")
    assert uas.wait(15) == 0
    got = uas.messages()
    assert "MESSAGE sip:olga@127.0.0.1:" in got
    assert "From: <sip:ivan@127.0.0.1>;tag=" in got
    assert "Ahoj Olgo, <script>alert(1)</script> ça va?" in got
    # nobody there: a clear message, not a traceback
    page.get_by_label("To (SIP address)").fill("sip:nobody@127.0.0.1")
    page.get_by_label("Message").fill("anyone?")
    follow(page, page.get_by_role("button", name="Send"))
    assert im_final(page) == "failed"
    assert "The message was not delivered: 404 Not Found." in alert(page)


def im_final(page: Any, timeout: float = 15.0) -> str:
    """The state of the message the page follows, once it is final."""
    box = page.locator("#im-progress")
    deadline = time.monotonic() + timeout
    while (state := box.get_attribute("data-state")) == "pending":
        assert time.monotonic() < deadline, box.inner_text()
        time.sleep(0.1)
    return str(state)


def test_im_shows_progress_until_the_final_reply(page: Any, web: WebServer) -> None:
    """Nobody answers the MESSAGE: the page comes back at once, says it
    waits, and shows tm's 408 when fr_timer (2 s here) fires."""
    make_user(web, "vera", "vera-pass1")
    make_user(web, "mute", "mute-pass1")
    silent = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)  # takes the MESSAGE, never answers
    silent.bind(("127.0.0.1", 0))
    try:
        port = silent.getsockname()[1]
        rpc_call(
            "ul_add",
            ["location", "mute@127.0.0.1", f"sip:mute@127.0.0.1:{port}", "600", "1.00"],
            url=web.rpc_url,
            secret=web.rpc_secret,
        )
        login(page, "vera", "vera-pass1")
        page.goto("/im")
        page.get_by_label("To (SIP address)").fill("sip:mute@127.0.0.1")
        page.get_by_label("Message").fill("are you there?")
        t0 = time.monotonic()
        page.get_by_role("button", name="Send").click()
        page.wait_for_url("**/im?job=*")
        answered = time.monotonic() - t0
        box = page.locator("#im-progress")
        assert box.get_attribute("data-state") == "pending", box.inner_text()
        assert answered < 1.5, answered  # the page did not wait for the reply
        assert "waits for the reply" in status(page)
        shot(page, "im_progress")
        silent.settimeout(5)
        assert b"are you there?" in silent.recv(65535)  # ser really sent it meanwhile
        assert im_final(page) == "failed"
        assert time.monotonic() - t0 >= 1.5  # the final reply came later, by itself
        assert "The message was not delivered: 408 Request Timeout." in alert(page)
        # the job belongs to vera: another account cannot read it
        job = page.url.split("job=")[1]
        page.get_by_role("button", name="Log out").click()
        login(page, "mute", "mute-pass1")
        page.wait_for_url("**/account")
        assert page.request.get(f"/im/jobs/{job}").status == 404
        assert page.goto(f"/im?job={job}").status == 404
    finally:
        silent.close()


def test_phonebook_click_to_dial_and_missed_calls(page: Any, web: WebServer, phones: Any) -> None:
    make_user(web, "petr", "petr-pass1")
    caller = phones(
        ["-sf", str(SCEN / "ctd_caller.xml"), "-m", "1", "-timeout", "30", "-trace_msg"], "caller"
    )
    callee = phones(["-sn", "uas", "-m", "1", "-timeout", "30", "-trace_msg"], "callee")
    login(page, "petr", "petr-pass1")
    # petr's phone is the SIPp caller; carol's is the SIPp callee
    page.goto("/contacts")
    page.get_by_label("SIP address").fill(f"sip:petr@127.0.0.1:{caller.port}")
    page.get_by_label("Valid for").select_option("3600")
    page.get_by_role("button", name="Add contact").click()
    assert "added" in status(page)
    make_user(web, "carol", "carol-pass1")
    rpc_call(
        "ul_add",
        ["location", "carol@127.0.0.1", f"sip:carol@127.0.0.1:{callee.port}", "600", "1.00"],
        url=web.rpc_url,
        secret=web.rpc_secret,
    )
    page.goto("/phonebook")
    page.evaluate("document.querySelector('form[action=\"/phonebook/add\"]').noValidate = true")
    page.get_by_role("button", name="Add").click()
    assert "Please enter a SIP address" in alert(page)
    page.get_by_label("First name").fill("Carol")
    page.get_by_label("Last name").fill("Callee")
    page.get_by_label("SIP address").fill("sip:carol@127.0.0.1")
    page.get_by_role("button", name="Add").click()
    assert "Carol Callee added" in status(page)
    assert "on-line" in page.locator("tbody tr", has_text="Carol").inner_text()
    shot(page, "phonebook")
    page.get_by_role("button", name="Call Carol Callee").click()
    assert "Your phone rings" in status(page), page.content()
    assert caller.wait(20) == 0, caller.output()
    assert callee.wait(20) == 0, callee.output()
    assert "Refer-To: <sip:carol@127.0.0.1>" in caller.messages()
    assert "INVITE sip:carol@127.0.0.1:" in callee.messages()
    assert "Subject: referred call" in callee.messages()
    # a missed call: somebody calls petr's colleague who has no phone on-line
    make_user(web, "mira", "mira-pass1")
    miss = phones(
        [f"127.0.0.1:{web.ser.port}", "-sn", "uac", "-s", "mira", "-m", "1", "-timeout", "10"], "miss"
    )
    miss.wait(20)
    page.get_by_role("button", name="Log out").click()
    login(page, "mira", "mira-pass1")
    page.get_by_role("link", name="Calls").click()
    rows = page.locator("tbody tr")
    assert rows.count() == 1
    assert "404 Not Found" in rows.first.inner_text()
    assert "sip:sipp@127.0.0.1" in rows.first.inner_text()
    shot(page, "missed_calls")
    # call history lists petr's? mira made none
    page.get_by_role("link", name="My calls").click()
    assert page.get_by_text("No calls.").is_visible()


def test_forgotten_password_link(page: Any, web: WebServer) -> None:
    make_user(web, "zoe", "zoe-pass-1")
    page.goto("/login")
    page.get_by_role("link", name="Forgotten password?").click()
    page.get_by_label("User name").fill("nobody-at-all")
    page.get_by_role("button", name="Send the link").click()
    answer = status(page)
    assert "If that account exists" in answer
    page.goto("/forgot")
    page.get_by_label("User name").fill("zoe")
    page.get_by_role("button", name="Send the link").click()
    assert status(page) == answer  # no hint whether the account exists
    link = web.mail_link("zoe@example.com", "/reset?t=")
    page.goto(link + "x")
    assert "invalid, used or older than one hour" in alert(page)
    page.goto(link)
    page.locator("#new").fill("zoe-new-pw")
    page.get_by_label("New password again").fill("zoe-new-pw")
    page.get_by_role("button", name="Set password").click()
    assert "Your password was changed" in status(page)
    page.goto(link)  # used: the password it was made for is gone
    assert "invalid, used or older than one hour" in alert(page)
    login(page, "zoe", "zoe-pass-1")
    assert alert(page) == "Wrong user name or password."
    login(page, "zoe", "zoe-new-pw")
    page.wait_for_url("**/account")
