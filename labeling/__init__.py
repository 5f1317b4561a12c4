"""Teachers (OpenAI-compatible, local, human), relabel jobs, the review queue, gold import and
labeled CSVs; owns ``cases``, ``labels``, ``review_queue``, ``teacher_cache`` and
``teacher_errors`` (:mod:`.case_store` is how capture writes cases).

Does not train, and sends teachers only scrubbed text.
"""
