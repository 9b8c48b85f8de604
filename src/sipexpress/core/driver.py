"""Running coroutines eagerly: the routes and tm's reply processing.

A route is an ``async def`` but most never suspend: creating a Task for
each would cost more than the route itself.  :class:`CoroutineDriver`
steps a coroutine by hand until it finishes; only one that really awaits
something is handed over to a Task (:class:`Resume` carries it on from
where it stopped).
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine, Generator
from typing import Any, Generic, TypeVar

T = TypeVar("T")


class Resume:
    """Awaitable that hands a started coroutine over to a Task: it re-yields
    whatever the coroutine is blocked on and forwards what the Task sends."""

    __slots__ = ("coro", "first")

    def __init__(self, coro: Coroutine[Any, Any, Any], first: Any) -> None:
        self.coro = coro
        self.first = first

    def __await__(self) -> Generator[Any, Any, Any]:
        value = self.first
        coro = self.coro
        while True:
            try:
                sent = yield value
            except GeneratorExit:
                coro.close()
                raise
            except BaseException as exc:
                try:
                    value = coro.throw(exc)
                except StopIteration as stop:
                    return stop.value
            else:
                try:
                    value = coro.send(sent)
                except StopIteration as stop:
                    return stop.value


class CoroutineDriver(Generic[T]):
    """Runs coroutines to completion now when they do not suspend, else in a
    task started with ``spawn``.  An exception the coroutine raises goes to
    ``failed(exc, arg)`` with the ``arg`` it was driven with (the request
    being routed, say), wherever it happens."""

    __slots__ = ("_failed", "_spawn")

    def __init__(
        self,
        spawn: Callable[[Coroutine[Any, Any, None]], None],
        failed: Callable[[Exception, T], None],
    ) -> None:
        self._spawn = spawn
        self._failed = failed

    def drive(self, coro: Coroutine[Any, Any, Any], arg: T) -> None:
        try:
            first = coro.send(None)
        except StopIteration:
            return
        except Exception as e:
            self._failed(e, arg)
            return
        self._spawn(self._resume(coro, first, arg))

    async def _resume(self, coro: Coroutine[Any, Any, Any], first: Any, arg: T) -> None:
        try:
            await Resume(coro, first)
        except Exception as e:
            self._failed(e, arg)
