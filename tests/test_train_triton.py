"""The trainer on the Triton backend (its kernels under Triton's interpreter on a CPU) against the same run
on the reference backend: a tiny PixelFolder, a few steps from the same seed.

Both runs are float32 and differ only in the order of their sums (unit roundoff 6e-8). Measured over
three steps: losses at most 1.8e-7 apart; generator parameters at most 6.5e-7 of each tensor's largest
entry or of the learning rate, whichever is larger (Adam moves an entry by about the learning rate per
step; the largest difference is a noise strength still near zero, moved by a gradient that is a sum of
cancelling terms). The tolerances are about ten and six times that. A wrong gradient moves Adam's
updates of the affected entries by a good part of the learning rate (2e-3) and fails them by far."""
import pytest
import torch

pytest.importorskip("triton", reason="Triton is not installed (pip install triton)")

from helpers import tiny_config  # noqa: E402
from training.train import Trainer  # noqa: E402

STEPS = 3
LOSS_TOLERANCE = 2e-6
PARAMETER_TOLERANCE = 4e-6


def run(tmp_path, backend):
    """Each step's losses, the generator's parameters at the end and the learning rate."""
    trainer = Trainer(tiny_config(tmp_path / backend, backend=backend, device="cpu", steps=STEPS))
    losses = [{name: loss.item() for name, loss in trainer.train_step().items()} for _ in range(STEPS)]
    return losses, [parameter.detach() for parameter in trainer.g_module.parameters()], trainer.config.lr


@pytest.mark.slow
def test_triton_training_steps_give_the_reference_losses_and_weights(tmp_path):
    (expected_losses, expected_parameters, lr), (losses, parameters, _) = (run(tmp_path, "reference"),
                                                                          run(tmp_path, "triton"))
    for step, (expected_step, step_losses) in enumerate(zip(expected_losses, losses)):
        assert step_losses.keys() == expected_step.keys()
        for name, expected in expected_step.items():
            assert step_losses[name] == pytest.approx(expected, rel=LOSS_TOLERANCE, abs=LOSS_TOLERANCE), (step, name)
    assert len(parameters) == len(expected_parameters)
    for parameter, expected in zip(parameters, expected_parameters):
        scale = max(expected.abs().max().item(), lr)
        torch.testing.assert_close(parameter, expected, rtol=0, atol=PARAMETER_TOLERANCE * scale)
