"""Sessions end on the server: logging out or changing the password in one
browser ends the user's sessions in every other browser (a real ser with
its web interface, two Chromium contexts); failed log-ins lock out one
address for one user, not the user everywhere."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.web.conftest import DOMAIN, WebServer


@pytest.fixture
def two_browsers(browser: Any, web: WebServer) -> Iterator[tuple[Any, Any]]:
    contexts = [browser.new_context(base_url=web.base) for _ in range(2)]
    for c in contexts:
        c.set_default_timeout(10000)
    yield contexts[0].new_page(), contexts[1].new_page()
    for c in contexts:
        c.close()


def login(page: Any, password: str) -> None:
    page.goto("/login")
    page.get_by_label("User name").fill("admin")
    page.get_by_label("Domain").fill(DOMAIN)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url("**/account")


def logged_in(page: Any) -> bool:
    page.goto("/account")
    return "/login" not in page.url


def test_logout_ends_every_session_of_the_user(two_browsers: tuple[Any, Any]) -> None:
    a, b = two_browsers
    login(a, "heslo")
    login(b, "heslo")
    assert logged_in(a) and logged_in(b)
    a.get_by_role("button", name="Log out").click()
    a.wait_for_url("**/login")
    assert not logged_in(b)  # the other browser's signed cookie no longer counts


def test_failed_logins_lock_out_an_address_not_the_user(web: WebServer) -> None:
    def attempt(source: str, password: str) -> int:
        transport = httpx.HTTPTransport(local_address=source)
        with httpx.Client(base_url=web.base, transport=transport) as c:
            page = c.get("/login").text
            csrf = page.split('name="csrf" value="')[1].split('"')[0]
            form = {"username": "admin", "domain": DOMAIN, "password": password, "csrf": csrf}
            return c.post("/login", data=form).status_code

    for _ in range(5):
        assert attempt("127.0.0.3", "guess") == 401
    assert attempt("127.0.0.3", "heslo") == 429  # the guesser's address waits
    assert attempt("127.0.0.1", "heslo") == 303  # the user, elsewhere, does not


def test_password_change_ends_the_other_sessions(two_browsers: tuple[Any, Any]) -> None:
    """Last in this module: admin's password is heslo-2 afterwards."""
    a, b = two_browsers
    login(a, "heslo")
    login(b, "heslo")
    a.goto("/account")
    a.get_by_label("Current password").fill("heslo")
    a.get_by_label("New password", exact=False).first.fill("heslo-2")
    a.get_by_label("New password again").fill("heslo-2")
    with a.expect_navigation():
        a.get_by_role("button", name="Change password").click()
    assert "Your password was changed" in a.locator("[role=status]").first.inner_text()
    assert logged_in(a)  # whoever changed it goes on
    assert not logged_in(b)
    login(b, "heslo-2")
    assert logged_in(b)
