"""tm -- SER's transaction module: RFC 3261 §17 transactions and the
stateful proxy core of §16 (``t_relay`` and friends)."""

from __future__ import annotations

from sipexpress.modules.tm.cell import Branch, Transaction
from sipexpress.modules.tm.module import TmModule, UacResult
from sipexpress.modules.tm.proxy import TRYING_REASON, TransactionLayer

__all__ = ["TRYING_REASON", "Branch", "TmModule", "Transaction", "TransactionLayer", "UacResult"]
