"""The predictor: the champion's int8 ONNX model behind a thread-safe Python API.

- :meth:`Predictor.score` answers a batch of requests with one model call: calibrated top-k,
  abstention below ``serving.abstain_below`` (and, with ``serving.open_set``, on inputs the
  model's open-set scorer calls unknown), one prediction event per request through the
  emitter (the stream workers capture, scrub and store it). The HTTP server batches the
  requests that arrive together (see ``serving.batcher``).
- :meth:`Predictor.predict` is the one-request form, with the optional fallback applied.
- Hot reload: a thread polls the champion pointer (and the rollout pointer, for shadow and
  canary) every ``registry.reload_poll_s``; a new model is loaded next to the old one and
  swapped in under a lock, so requests in flight finish on the model they started with.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from tutorloop.infra.settings import Settings
from tutorloop.registry.onnx_model import OnnxStudent
from tutorloop.serving.fallback import Fallback
from tutorloop.serving.pointers import Pointers
from tutorloop.serving.prediction import NoChampionError, Prediction, PredictRequest, load_model
from tutorloop.serving.rollout import RolloutRouter

if TYPE_CHECKING:
    from tutorloop.streams.emitter import Emitter

log = logging.getLogger(__name__)


class Predictor:
    """Thread-safe predictions from the current champion, reloaded on promotion/rollback."""

    def __init__(
        self,
        settings: Settings,
        *,
        emitter: Emitter | None = None,
        top_k: int = 5,
        fallback: Fallback | None = None,
    ) -> None:
        self.settings = settings
        self.fallback = fallback
        self.cfg = settings.serving
        self.emitter = emitter
        self.top_k = top_k
        self.rollout = RolloutRouter(settings)
        self._lock = threading.Lock()
        self._reload_lock = threading.Lock()
        self._model: OnnxStudent | None = None
        self._failed: str | None = None
        self._key: str | None = None  # of the loaded champion: a new card reloads it
        self.pointers = Pointers(settings)
        self._stop = threading.Event()
        self._watcher: threading.Thread | None = None
        self.reload()

    @property
    def version(self) -> str | None:
        model = self._model
        return model.version if model else None

    @property
    def labels(self) -> list[str]:
        model = self._model
        return list(model.labels) if model else []

    def reload(self) -> bool:
        """Load the published champion if it changed; True when a new model was swapped in."""
        with self._reload_lock:  # the watcher and the live-window judge both call it
            return self._reload()

    def _reload(self) -> bool:
        self.rollout.refresh(self.pointers, self.cfg.threads)
        published = self.pointers.champion()
        if published is None or published.key == self._failed:
            return False
        # The same version republished (its files rebuilt after an erasure) has a new key.
        if self._model is not None and published.key == self._key:
            return False
        model = load_model(
            published.folder, published.version, self.cfg.threads, retrieval=self.cfg.retrieval
        )
        if model is None:  # logged; not retried until the pointer changes
            self._failed = published.key
            return False
        if self.cfg.open_set and (model.open_set is None or not model.open_set.abstains):
            log.warning(
                "serving.open_set is on but %s has no open-set threshold (see its card's "
                "open_set): it abstains on low confidence only", model.version,
            )  # fmt: skip
        with self._lock:
            previous, self._model = self._model, model
            self._key = published.key
        log.info("serving %s (was %s)", model.version, previous.version if previous else None)
        return True

    def start_watching(self) -> None:
        def loop() -> None:
            while not self._stop.wait(self.cfg.reload_poll_s):
                try:
                    self.reload()
                except Exception:  # never let the watcher die
                    log.exception("champion reload check failed")

        self._watcher = threading.Thread(target=loop, name="champion-watcher", daemon=True)
        self._watcher.start()

    def close(self) -> None:
        self._stop.set()
        if self._watcher is not None:
            self._watcher.join(timeout=5)
        self.rollout.close()

    def predict(self, request: PredictRequest) -> Prediction:
        """One request, answered by the fallback when the student abstains (if there is one)."""
        [prediction] = self.score([request], emit=False)
        if prediction.abstained and self.fallback is not None:
            answer = self.fallback.ask(request.text)
            if answer is not None:
                prediction = prediction.answered(answer, "fallback")
        self.emit(request, prediction)
        return prediction

    def score(self, requests: Sequence[PredictRequest], *, emit: bool = True) -> list[Prediction]:
        """The student's predictions for ``requests``, one model call, no fallback; with
        ``emit``, their events go out now (else the caller emits once the answer is final)."""
        with self._lock:
            model = self._model
        if model is None:
            raise NoChampionError("no champion to serve: promote a model version first")
        texts = [r.text for r in requests]
        started = time.perf_counter()
        probs, unknown = model.predict_with_scope(
            texts, batch=max(1, len(texts)), scope=self.cfg.open_set
        )
        rollout = self.rollout.current
        challenger = None
        if rollout is not None:
            rollout.champion_latency((time.perf_counter() - started) * 1000, len(texts))
            challenger = rollout.score(texts, scope=self.cfg.open_set)
        out: list[Prediction] = []
        for i, request in enumerate(requests):
            mine = self._prediction(model.version, model.labels, probs[i], unknown[i], request)
            answer = mine
            if challenger is not None and rollout is not None:
                theirs = self._prediction(
                    rollout.version, rollout.labels, challenger[0][i], challenger[1][i],
                    request, mine.request_id,
                )  # fmt: skip
                answer = rollout.choose(request.user_id, mine, theirs)
            out.append(answer)
            if emit:
                self.emit(request, answer)
        return out

    def _prediction(
        self, version: str, labels: Sequence[str], probs: Any, unknown: bool,
        request: PredictRequest, request_id: str | None = None,
    ) -> Prediction:  # fmt: skip
        order = probs.argsort()[::-1][: self.top_k]
        top = [(labels[i], float(probs[i])) for i in order]
        label, confidence = top[0]
        reason = "low_confidence" if confidence < self.cfg.abstain_below else None
        if unknown:  # the more specific reason: no known label fits, however confident
            reason = "out_of_scope"
        abstained = reason is not None
        return Prediction(
            request_id=request_id or request.request_id or uuid.uuid4().hex,
            event_id=str(uuid.uuid4()),
            model_version=version,
            label=None if abstained else label,
            confidence=confidence,
            abstained=abstained,
            top_k=top,
            answered_by="nobody" if abstained else "student",
            abstain_reason=reason,
        )

    def emit(self, request: PredictRequest, prediction: Prediction) -> None:
        """The prediction event of an answered request (never raises: see the emitter)."""
        if self.emitter is None:
            return
        from tutorloop.streams.events import Consent, PredictionEvent, TopK, now_utc

        self.emitter.emit(
            PredictionEvent(
                event_id=uuid.UUID(prediction.event_id),
                ts=now_utc(),
                tenant_id=request.tenant_id,
                user_id=request.user_id,
                request_id=prediction.request_id,
                model_version=prediction.model_version,
                text=request.text,
                label=prediction.top_k[0][0],
                confidence=prediction.confidence,
                top_k=TopK.from_pairs(prediction.top_k),
                consent=Consent(training=request.consent.training),
                answered_by=prediction.answered_by,
                served_label=prediction.label,
            )
        )
