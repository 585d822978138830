"""Shared test set-up."""
import pytest

import pixelfolder_ops


@pytest.fixture(autouse=True)
def default_backend():
    """Each test starts with the default backend choice and no measured choices of 'auto',
    whatever an earlier one set."""
    pixelfolder_ops.set_backend(None)
    pixelfolder_ops.backend.clear_auto_choices()
    yield
    pixelfolder_ops.set_backend(None)
    pixelfolder_ops.backend.clear_auto_choices()
