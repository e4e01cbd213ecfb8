"""Workflows that chain the layers below: a pruning run (prune, then fine-tune) and the quickstart.

``tinysr.bench`` is a workflow too (its own package). Nothing below this layer imports it.
"""
