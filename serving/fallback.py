"""The fallback for abstentions: ask a teacher, within a timeout, a concurrency cap and a budget.

A slow, failing or over-budget teacher degrades to abstention (``answered_by = "nobody"``),
never to an error for the caller: :meth:`Fallback.ask` returns ``None`` within
``fallback_timeout_s`` whatever the teacher does. The text is scrubbed before it leaves the
process (raw PII never reaches a teacher request). Outcomes are counted for ``/metrics``.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import Counter, deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout

from tutorloop.infra.settings import Settings
from tutorloop.infra.warehouse_backends import open_warehouse

log = logging.getLogger(__name__)

Answer = Callable[[str], "str | None"]


class Fallback:
    """Wraps ``answer(text) -> label | None`` with a timeout, a cap and an hourly budget."""

    def __init__(
        self,
        answer: Answer,
        *,
        timeout_s: float = 2.0,
        max_concurrent: int = 4,
        budget_per_hour: int = 1000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._answer = answer
        self.timeout_s = timeout_s
        self.budget_per_hour = budget_per_hour
        self._pool = ThreadPoolExecutor(max_concurrent, thread_name_prefix="fallback")
        self._slots = threading.BoundedSemaphore(max_concurrent)
        self._spent: deque[float] = deque()
        self._lock = threading.Lock()
        self._clock = clock
        self.outcomes: Counter[str] = Counter()  # answered, no_answer, timeout, error, busy, ...

    def ask(self, text: str) -> str | None:
        """The teacher's label for ``text``, or None (abstain) within ``timeout_s``."""
        future = self._submit(text)
        if future is None:
            return None
        try:
            return self._outcome(future.result(timeout=self.timeout_s), None)
        except FutureTimeout:
            return self._outcome(None, "timeout")
        except Exception as exc:
            return self._outcome(None, "error", exc)

    async def ask_async(self, text: str) -> str | None:
        """:meth:`ask` for the event loop (the teacher runs on the fallback's own threads)."""
        future = self._submit(text)
        if future is None:
            return None
        try:
            label = await asyncio.wait_for(asyncio.wrap_future(future), self.timeout_s)
        except TimeoutError:
            return self._outcome(None, "timeout")
        except Exception as exc:
            return self._outcome(None, "error", exc)
        return self._outcome(label, None)

    def _submit(self, text: str) -> Future[str | None] | None:
        if not self._take_budget():
            self._count("over_budget")
            return None
        if not self._slots.acquire(blocking=False):
            self._count("busy")
            return None
        try:
            future = self._pool.submit(self._answer, text)
        except RuntimeError:  # closed
            self._slots.release()
            self._count("closed")
            return None
        future.add_done_callback(lambda _: self._slots.release())
        return future

    def _outcome(
        self, label: str | None, failure: str | None, exc: BaseException | None = None
    ) -> str | None:
        if exc is not None:
            log.warning("fallback teacher failed: %s", type(exc).__name__)
        self._count(failure or ("answered" if label is not None else "no_answer"))
        return label

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

    def _take_budget(self) -> bool:
        now = self._clock()
        with self._lock:
            while self._spent and now - self._spent[0] >= 3600:
                self._spent.popleft()
            if len(self._spent) >= self.budget_per_hour:
                return False
            self._spent.append(now)
            return True

    def _count(self, outcome: str) -> None:
        with self._lock:
            self.outcomes[outcome] += 1


def teacher_fallback(settings: Settings) -> Fallback | None:
    """The ``serving.fallback`` of the settings: None, or the configured teacher behind a
    scrubber (both loaded now, so that a broken configuration fails at start-up)."""
    cfg = settings.serving
    if cfg.fallback == "none":
        return None
    from tutorloop.labeling.teacher import TeacherAnswer
    from tutorloop.labeling.teachers import build_teacher
    from tutorloop.privacy.scrubbing import configured_scrubber

    teacher = build_teacher(settings, open_warehouse(settings))
    if teacher is None:
        log.warning("serving.fallback = teacher but teacher.backend is human: abstaining instead")
        return None
    scrubber = configured_scrubber(settings.privacy)

    def answer(text: str) -> str | None:
        [scrubbed] = scrubber.scrub_batch([text])
        [result] = teacher.label_batch([scrubbed.text])
        return result.label if isinstance(result, TeacherAnswer) else None

    return Fallback(
        answer, timeout_s=cfg.fallback_timeout_s, max_concurrent=cfg.fallback_max_concurrent,
        budget_per_hour=cfg.fallback_budget_per_hour,
    )  # fmt: skip
