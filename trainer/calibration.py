"""Temperature scaling (Guo et al., 2017): one scalar T that minimises validation NLL.

Dividing logits by T changes confidences, never the argmax, so accuracy is untouched.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F  # noqa: N812 - the conventional name

_T_MIN, _T_MAX = 0.05, 20.0


def fit_temperature(logits: torch.Tensor, labels: torch.Tensor, *, steps: int = 200) -> float:
    """The temperature that minimises NLL of ``labels`` under ``softmax(logits / T)``."""
    if logits.numel() == 0:
        return 1.0
    logits = logits.detach().float()
    log_t = torch.zeros(1, requires_grad=True)
    optimizer = torch.optim.LBFGS([log_t], lr=0.1, max_iter=steps, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = F.cross_entropy(logits / log_t.exp(), labels)
        loss.backward()  # type: ignore[no-untyped-call]
        return loss

    optimizer.step(closure)  # type: ignore[no-untyped-call]
    value = float(log_t.detach().exp().clamp(_T_MIN, _T_MAX))
    return value if torch.isfinite(torch.tensor(value)) else 1.0
