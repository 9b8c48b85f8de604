"""The stateful proxy core (RFC 3261 §16) on top of the §17 machines.

Theory of operation
-------------------
:class:`TransactionLayer` is tm's whole proxy layer, one job per file:

- ``cell.py``: :class:`~sipexpress.modules.tm.cell.Transaction` (SER's
  ``struct cell``) and its branches, and the phases of a transaction as a
  table (``TRYING -> FORWARDED <-> FAILURE_ROUTE -> FREED``);
- ``table.py``: the transaction and branch tables, matching requests to
  transactions, creating and freeing them, the timers;
- ``forking.py``: ``t_relay`` to every destination, CANCEL of branches;
- ``replies.py``: matching replies to branches, choosing what goes
  upstream, ``onreply_route`` and ``failure_route``, local replies.

Requests: the core's pre-script hook (``request_hook``) absorbs
retransmissions and ACKs of negative replies before the script runs;
``t_relay`` creates the transaction, sends ``100`` for INVITE and forks.
Replies: the core's reply hook (``reply_hook``) hands each reply of ours to
its branch.  Time comes from the core's clock and one timer heap; nothing
here opens a socket (tests drive it with an in-memory core and a virtual
clock).
"""

from __future__ import annotations

from sipexpress.modules.tm.replies import ReplySelection

TRYING_REASON = "trying -- your call is important to us"


class TransactionLayer(ReplySelection):
    """Transaction tables, the proxy logic and the timers of one server."""
