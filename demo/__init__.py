"""The end-to-end demo: the whole loop on one machine, with a report.

Uses every package; nothing imports it but the CLI root.
"""
