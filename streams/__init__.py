"""Event contracts (pydantic), the serving-side emitter, the faust capture workers and their
idempotent sink; owns ``predictions_audit`` and ``escalations``.

Does not train or decide promotion.
"""
