"""Evaluation runs: schema-validated outputs, IQA statistics, baselines, ablations, reports."""

import casiqa  # noqa: F401  (first: sets the CPU allocator's huge pages before torch loads)
