"""exec, step 4 as a Python routing script: ``ser -f routes.py``.

The same logic as ser.cfg: t_newtran() absorbs retransmissions, the
program looks the called user's e-mail address up (SQLite,
$SER_SQLITE_DB) and mails, t_reply() answers statefully.
"""

from sipexpress.script.pyroute import exec_msg, sl_reply_error, t_newtran, t_reply

OPTIONS = {"listen": "udp:127.0.0.1:5060", "fork": 0, "log_stderror": 1}
MODULES = ["sl", "tm", "exec"]

NOTIFY = """
case "$SIP_OUSER" in ''|*[!A-Za-z0-9._+-]*) exit 1;; esac;
QUERY="select email_address from subscriber where username='$SIP_OUSER'";
EMAIL=`sqlite3 "${SER_SQLITE_DB:-/var/lib/ser/ser.sqlite}" "$QUERY"`;
if [ -z "$EMAIL" ] ; then exit 1; fi ;
echo "SIP request received from $SIP_HF_FROM for $SIP_OUSER" |
mail -s "request for you" "$EMAIL"
"""


async def request_route(ctx):
    r = t_newtran(ctx)
    if r == 0:  # a retransmission: absorbed
        return 0
    if r < 0:
        sl_reply_error(ctx)
        return 0
    if await exec_msg(ctx, NOTIFY) > 0:
        return t_reply(ctx, 600, "No messages for this user")
    return t_reply(ctx, 404, "User does not exist")
