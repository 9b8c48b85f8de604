"""tm's timer defaults: RFC 3261's T1 and Timer C unless SER's are asked for."""

from __future__ import annotations

from sipexpress.core.server import Core
from sipexpress.modules.tm import TmModule


def test_t1_is_half_a_second_and_timer_c_noisy_by_default() -> None:
    layer = TmModule(Core()).layer
    assert layer.client_timers.t1 == 0.5
    assert layer.noisy_ctimer


def test_ser_settings_kept() -> None:
    tm = TmModule(Core())
    tm.set_param("retr_timer1p1", 1)
    tm.set_param("noisy_ctimer", 0)
    assert tm.layer.client_timers.t1 == 1.0
    assert not tm.layer.noisy_ctimer
    tm = TmModule(Core())
    tm.set_param("retr_timer1", 250)
    assert tm.layer.client_timers.t1 == 0.25
