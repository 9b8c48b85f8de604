"""Outgoing mail (sign-up confirmation): SMTP in a worker thread, or the
log when no SMTP server is configured."""

from __future__ import annotations

import asyncio
import logging
import smtplib
from email.message import EmailMessage

log = logging.getLogger("sipexpress.web.mail")


def _send_smtp(server: str, msg: EmailMessage) -> None:
    host, _, port = server.rpartition(":") if server.count(":") == 1 else (server, "", "")
    with smtplib.SMTP(host or server, int(port or 25), timeout=15) as s:
        s.send_message(msg)


async def send_mail(smtp: str | None, sender: str, to: str, subject: str, body: str) -> None:
    """Raises ``OSError``/``smtplib.SMTPException`` when the server refuses."""
    if not smtp:
        log.warning("serweb mail (no web_smtp set) to <%s>: %s\n%s", to, subject, body)
        return
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = to
    msg["Subject"] = subject
    msg.set_content(body)
    await asyncio.to_thread(_send_smtp, smtp, msg)
    log.info("serweb mail sent to <%s>: %s", to, subject)
