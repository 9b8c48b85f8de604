#!/bin/sh
# Click-to-dial through SER's FIFO alone, as SER 0.9's examples/ctd.sh:
# INVITE the caller into a "wrapper call" with an on-hold SDP, REFER it to
# the callee, BYE the wrapper call.  ser ACKs the 200 itself.
#
# usage: ctd.sh [caller-URI [callee-URI]]    (SER_FIFO: the server's FIFO)

FIFO=${SER_FIFO:-/tmp/ser_fifo}
CALLER=${1:-sip:44@127.0.0.1}
CALLEE=${2:-sip:23@127.0.0.1}
[ -n "$2" ] || echo "destination unspecified -- taking default value $CALLEE"
[ -n "$1" ] || echo "caller unspecified -- taking default value $CALLER"

FROM="<sip:controller@foo.bar>"
CALLIDNR=$(date +%s)$$
CALLID="${CALLIDNR}.fifouacctd"
FIXED_DLG="From: $FROM;tag=$CALLIDNR
Call-ID: $CALLID
Contact: <sip:caller@!!>"
name=ctd_fifo_$$
REPLY=/tmp/$name
DLG=/tmp/$CALLID.dlg

mkfifo -m 666 $REPLY || exit 1
trap 'rm -f $REPLY $DLG' EXIT

# The completion reply: line 1 status, lines 2-4 request URI, next hop and
# Route for the next in-dialog request, then the reply's header fields;
# keep lines 2-4 and the To header (with the callee's tag).
filter_fl() {
    awk -v ok=0 '
    NR == 1 { if ($0 ~ /^2[0-9][0-9] /) { ok = 1 } else { print > "/dev/stderr"; exit 1 }; next }
    NR == 2 || NR == 3 { print; next }
    NR == 4 { if ($0 != ".") print; next }
    /^(To|t):/ { sub(/\r$/, ""); print }
    END { exit ok ? 0 : 1 }'
}

request() {  # $1: the request lines; the result is written to stdout
    cat < $REPLY &
    reader=$!
    printf '\n:t_uac_dlg:%s\n%s\n\n' "$name" "$1" > $FIFO
    wait $reader
}

request "INVITE
$CALLER
.
$FIXED_DLG
To: <$CALLER>
CSeq: 1 INVITE
Content-Type: application/sdp
.
v=0
o=click-to-dial 0 0 IN IP4 0.0.0.0
s=session
c=IN IP4 0.0.0.0
b=CT:1000
t=0 0
m=audio 9 RTP/AVP 0
a=rtpmap:0 PCMU/8000
." | filter_fl > $DLG
if [ $? -ne 0 ]; then echo "invitation failed"; exit 1; fi
echo "invitation succeeded"

DIALOG=$(cat $DLG)
request "REFER
$DIALOG
$FIXED_DLG
CSeq: 2 REFER
Referred-By: $FROM
Refer-To: <$CALLEE>
.
." | filter_fl > /dev/null
REFER_RESULT=$?
if [ $REFER_RESULT -eq 0 ]; then echo "refer succeeded"; else echo "refer failed"; fi

request "BYE
$DIALOG
$FIXED_DLG
CSeq: 3 BYE
.
." | filter_fl > /dev/null
if [ $? -eq 0 ]; then echo "bye succeeded"; else echo "bye failed"; fi

exit $REFER_RESULT
