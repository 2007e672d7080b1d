"""Evaluation runs: schema-validated outputs, IQA statistics, baselines, ablations, reports."""
