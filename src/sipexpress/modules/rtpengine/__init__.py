"""rtpengine -- media relay through rtpengine's ng control protocol."""

from __future__ import annotations

from sipexpress.modules.rtpengine.module import RtpengineModule

__all__ = ["RtpengineModule"]
