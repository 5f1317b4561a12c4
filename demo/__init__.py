"""The end-to-end demo: the whole loop on one machine, with a report."""
