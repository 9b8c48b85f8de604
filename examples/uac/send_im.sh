#!/bin/sh
# The seed's "Sending IM From Shell Script", unchanged but for two variables:
# SER_FIFO (the server's FIFO, /tmp/ser_fifo by default) and RECEIVER.
#
# call this script to send an instant message; script parameters
# will be displayed in message body
# paremeters mean: message type, request-URI, outbound server is
# left blank ("."), required header fields From and To follow,
# then optional header fields terminated by dot and optional
# dot-terminated body

SER_FIFO=${SER_FIFO:-/tmp/ser_fifo}
RECEIVER=${RECEIVER:-sip:receiver@127.0.0.1}

cat > $SER_FIFO <<EOF
:t_uac_dlg:hh
NOTIFY
$RECEIVER
.
From: sip:originator@foo.bar
To: $RECEIVER
foo: bar_special_header
x: y
p_header: p_value
Contact: <sip:devnull@127.0.0.1:9>
Content-Type: text/plain; charset=UTF-8
.
Hello world!!!! $@
.
EOF
