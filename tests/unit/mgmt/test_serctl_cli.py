"""serctl without a server: argument errors, clear messages, exit codes."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner

from sipexpress.cli.serctl import cli, filter_fl


def run(*args: str, **env: str) -> tuple[int, str, str]:
    r = CliRunner().invoke(cli, list(args), env=env)
    return r.exit_code, r.stdout, r.stderr


def test_filter_fl_as_sc() -> None:
    assert filter_fl("200 ok\nNow: x\n") == "Now: x\n"
    assert filter_fl("200 OK\n<sip:a@b>;q=1;expires=3\n") == "<sip:a@b>;q=1;expires=3\n"
    assert filter_fl("500 command 'foobar' not available\n") == "500 command 'foobar' not available\n"
    assert filter_fl("200 killing now...") == "200 killing now...\n"
    assert filter_fl("200 Added to table\n('a','b') to 'location'\n").startswith("200 Added")


def test_server_not_running(tmp_path: Path) -> None:
    code, out, err = run("fifo", "uptime", SER_FIFO=str(tmp_path / "none"))
    assert code == 2 and "Error opening ser's FIFO" in err and out == ""


def test_user_without_domain(tmp_path: Path) -> None:
    code, _, err = run("ul", "show", "jiri", SER_FIFO=str(tmp_path / "none"), SIP_DOMAIN="")
    assert code == 1
    assert "domain unknown: use usernames with domain or set default domain in SIP_DOMAIN" in err


def test_bad_arguments() -> None:
    assert run("add", "onlyuser")[0] == 2
    assert run("acl", "grant", "jiri")[0] == 2
    assert run("monitor", "notanumber")[0] == 2


def test_monitor_keeps_cycling_when_server_is_down(tmp_path: Path) -> None:
    code, out, _ = run("monitor", "2", SER_FIFO=str(tmp_path / "none"), WATCH_PERIOD="0.05")
    assert code == 0
    assert "[cycle #: 2;" in out and "[uptime: Error opening ser's FIFO" in out


def test_stop_without_pid_file(tmp_path: Path) -> None:
    code, _, err = run("--pid-file", str(tmp_path / "ser.pid"), "stop")
    assert code == 1 and "No PID file found! SER probably not running" in err


def test_version() -> None:
    code, out, _ = run("version")
    assert code == 0 and "sipexpress" in out


def test_config_values_skip_comments_and_may_be_unquoted(tmp_path: Path) -> None:
    from sipexpress.cli.serctl import _cfg_value

    cfg = tmp_path / "ser.cfg"
    cfg.write_text('/* fifo="/old"\n db_url="mysql://x" */\nfifo="/tmp/y" # here\njsonrpc_http=yes\n')
    assert _cfg_value(str(cfg), "fifo") == "/tmp/y"
    assert _cfg_value(str(cfg), "jsonrpc_http") == "yes"
    assert _cfg_value(str(cfg), "db_url") is None
