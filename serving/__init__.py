"""The serving runtime: the predictor (calibrated top-k, abstention, hot reload), the ASGI app
on uvicorn (limits, auth, TLS, metrics, access log), the scorer threads, the teacher fallback,
shadow/canary routing with its live windows, the drift monitor, ``tutorloop serve`` and
``tutorloop monitor``; settings under ``[serving]``.

Does not train; loads no torch.
"""
