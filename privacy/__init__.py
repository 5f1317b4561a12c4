"""PII scrubbing (regex, Presidio), consent and contribution caps, the DP-SGD wrapper and its
ledger (``privacy_ledger``), erasure and retention (``erasures``).

Keeps no raw PII anywhere. Erasure is the one module allowed to delete from every table.
"""
