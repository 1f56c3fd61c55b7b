"""Shared test set-up: Keras 2 everywhere, and small synthetic data sets made per test."""

import os
import sys

os.environ.setdefault('TF_USE_LEGACY_KERAS', '1')
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')

import pytest  # pylint: disable=g-import-not-at-top

PROJECT_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope='session')
def project_root() -> str:
  return PROJECT_ROOT


@pytest.fixture(scope='session')
def python() -> str:
  """The interpreter running the tests, for the CLI subprocesses."""
  return sys.executable
