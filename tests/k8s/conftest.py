"""Kubernetes tests: the chart rendered (tooling.py finds helm), and the cluster suite (any
KUBECONFIG, see :mod:`tests.k8s.cluster`)."""

from __future__ import annotations

import pytest

from tests.k8s.cluster import Cluster, cluster_from_environment


@pytest.fixture(scope="session")
def cluster() -> Cluster:
    return cluster_from_environment()
