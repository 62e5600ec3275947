"""A task run every so often on a daemon thread, for background maintenance."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from hirag_oz.errors import InsufficientStorageError

logger = logging.getLogger(__name__)


class Periodic:
    """Runs `work` every `interval_secs` once started, until stopped. A run that raises is
    logged (as `what` failed) and the next one goes on."""

    def __init__(self, name: str, what: str, work: Callable[[], object]) -> None:
        self.name = name
        self.what = what
        self.work = work
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self, interval_secs: float) -> None:
        if self._thread is not None:
            return
        self._stop.clear()

        def loop() -> None:
            while not self._stop.wait(interval_secs):
                try:
                    self.work()
                except InsufficientStorageError as exc:  # expected until space is freed
                    logger.warning("%s waits for disk space: %s", self.what, exc.message)
                except Exception:
                    logger.exception("%s failed", self.what)

        self._thread = threading.Thread(target=loop, name=self.name, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop, after the run under way if any."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
