"""Real clients against a management server process: sc's shell procedure,
serweb's PHP stub (same system calls), and many concurrent clients."""

from __future__ import annotations

import re
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from sipexpress.mgmt.client import ServerNotRunning, fifo_request
from tests.interop.mgmt.conftest import MgmtProc, start_mgmt_proc

pytestmark = pytest.mark.interop

UPTIME_RE = re.compile(r"200 ok\nNow: .+\nUp Since: .+\nUp time: \d+ \[sec\]\n\Z")


def test_shell_heredoc_client(mgmt_proc: MgmtProc) -> None:
    script = f"""
set -e
name=ser_receiver_$$
mkfifo {mgmt_proc.reply_dir}$name; chmod a+w {mgmt_proc.reply_dir}$name
cat < {mgmt_proc.reply_dir}$name &
cat > {mgmt_proc.fifo} <<EOF
:uptime:$name

