"""Shared test set-up."""
import pytest

import pixelfolder_ops


@pytest.fixture(autouse=True)
def default_backend():
    """Each test starts with the default backend choice, whatever an earlier one set."""
    pixelfolder_ops.set_backend(None)
    yield
    pixelfolder_ops.set_backend(None)
