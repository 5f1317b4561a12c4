"""Model versions and their artifacts, ONNX export and int8 quantization, the gates, promote /
rollback / history (``model_versions``, ``gate_results``, ``promotions``), lineage queries.

Does not train and does not serve; on-call commands stay free of torch.
"""
