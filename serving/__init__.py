"""The serving runtime: the predictor (calibrated top-k, abstention, optional fallback), the HTTP
server, hot reload of the champion, ``tutorloop serve``; settings under ``[serving]``.

Does not train; loads no torch.
"""
