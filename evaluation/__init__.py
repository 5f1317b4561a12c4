"""Classification metrics (accuracy, macro-F1, ECE, AURC, selective accuracy) and the
:class:`~.classifier.Classifier` protocol that gates, the demo and the benchmarks evaluate.

Pure numerics: no warehouse, no models of its own.
"""
