"""Kubernetes tests: the chart rendered (tooling.py finds helm), and the cluster suite."""
