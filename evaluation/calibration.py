"""Temperature scaling (Guo et al., 2017): one scalar T that minimises the NLL of held-out rows.

Dividing logits by T changes confidences, never the argmax, so accuracy is untouched. Numpy
and scipy only: the trainer fits T on its torch logits, the exporter refits it on the int8
network's logits, so the temperature that serves belongs to the network that serves.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray

_LOG_T_BOUNDS = (float(np.log(0.05)), float(np.log(20.0)))


def _nll(logits: NDArray[np.float64], targets: NDArray[Any], temperature: float) -> float:
    z = logits / temperature
    z = z - z.max(axis=1, keepdims=True)
    log_norm = np.log(np.exp(z).sum(axis=1))
    return float(np.mean(log_norm - z[np.arange(len(targets)), targets]))


def fit_temperature(logits: NDArray[Any], targets: NDArray[Any]) -> float:
    """The temperature in [0.05, 20] that minimises NLL of ``targets`` under softmax(logits/T)."""
    from scipy.optimize import minimize_scalar

    logits = np.asarray(logits, dtype=np.float64)
    targets = np.asarray(targets, dtype=np.int64)
    if logits.size == 0 or len(targets) == 0:
        return 1.0
    if np.all(logits.argmax(axis=1) == targets):
        # No row is wrong: the NLL only falls as T -> 0, and the fit would return its lower
        # bound (a model that claims certainty everywhere). Nothing to calibrate against.
        return 1.0
    result = minimize_scalar(
        lambda log_t: _nll(logits, targets, float(np.exp(log_t))),
        bounds=_LOG_T_BOUNDS, method="bounded", options={"xatol": 1e-5},
    )  # fmt: skip
    value = float(np.exp(result.x))
    return value if np.isfinite(value) else 1.0
