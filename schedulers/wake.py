"""`WakeTimer`: one pending call of a pump on the running event loop, at the soonest time asked for:
a batch held back for more items goes out when its wait is over, if nothing comes before."""
from __future__ import annotations

import asyncio
from collections.abc import Callable


class WakeTimer:
    def __init__(self, wake: Callable[[], None]):
        self.wake = wake
        self._handle: asyncio.TimerHandle | None = None

    def within(self, seconds: float | None) -> None:
        """Wake at the latest `seconds` from now (None: nothing asked for)."""
        if seconds is None:
            return
        loop = asyncio.get_running_loop()
        if self._handle is not None:
            if self._handle.when() <= loop.time() + seconds:
                return
            self._handle.cancel()
        self._handle = loop.call_later(seconds, self._fire)

    def _fire(self) -> None:
        self._handle = None
        self.wake()
