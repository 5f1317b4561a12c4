"""Dataset building (``dataset_versions``, ``dataset_members``), the student model, QLoRA
distillation, calibration, training runs (``training_runs``).

Does not promote; returns a DP run's privacy accounting instead of writing the ledger.
"""
