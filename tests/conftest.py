"""Shared test set-up."""
import os

import pytest
import torch

if not torch.cuda.is_available():
    # Without a GPU the Triton kernels run under Triton's interpreter. A kernel is made for one mode when
    # its module is imported, so the switch must be on before any test module imports one.
    os.environ["TRITON_INTERPRET"] = "1"

import pixelfolder_ops  # noqa: E402


@pytest.fixture(autouse=True)
def default_backend():
    """Each test starts with the default backend choice and no measured choices of 'auto',
    whatever an earlier one set."""
    pixelfolder_ops.set_backend(None)
    pixelfolder_ops.backend.clear_auto_choices()
    yield
    pixelfolder_ops.set_backend(None)
    pixelfolder_ops.backend.clear_auto_choices()
