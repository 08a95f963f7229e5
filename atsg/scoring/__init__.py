"""Evaluation: metrics, reports and figures."""
