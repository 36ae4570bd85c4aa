"""Shared pytest setup: doctest namespace and deterministic threads."""

from typing import Any

import pytest
import torch


@pytest.fixture(autouse=True)
def _doctest_namespace(doctest_namespace: dict[str, Any]) -> None:
    doctest_namespace["torch"] = torch
