"""Checkpoints: atomic writes that keep the previous one, clear errors for damaged or foreign files."""
import os
import random

import numpy as np
import pytest
import torch

import training.checkpoint as checkpoint_module
from helpers import tiny_config
from training.checkpoint import (LATEST, PREVIOUS, capture_rng_state, load_checkpoint, load_ema_generator,
                                 restore_rng_state, save_checkpoint)
from training.train import Trainer


def minimal_state(step):
    return {"config": {"model": "PixelFolder"}, "step": step, "g": {"w": torch.full((3,), float(step))}, "d": {},
            "g_ema": {}, "g_optim": {}, "d_optim": {}, "data": {"epoch": 0, "batch": step}, "rng": []}


def test_save_keeps_the_previous_checkpoint(tmp_path):
    for step in (1, 2, 3):
        save_checkpoint(minimal_state(step), str(tmp_path))
    assert load_checkpoint(str(tmp_path / LATEST))["step"] == 3
    assert load_checkpoint(str(tmp_path / PREVIOUS))["step"] == 2
    assert sorted(os.listdir(tmp_path)) == [LATEST, PREVIOUS]


def test_a_crash_while_saving_leaves_the_latest_checkpoint_intact(tmp_path, monkeypatch):
    save_checkpoint(minimal_state(1), str(tmp_path))
    save_checkpoint(minimal_state(2), str(tmp_path))

    def write_half_then_die(obj, file):
        file.write(b"PK\x03\x04 the first bytes of a zip archive")
        file.flush()
        raise KeyboardInterrupt("killed mid-write")

    monkeypatch.setattr(checkpoint_module.torch, "save", write_half_then_die)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(minimal_state(3), str(tmp_path))
    monkeypatch.undo()
    assert load_checkpoint(str(tmp_path / LATEST))["step"] == 2
    assert load_checkpoint(str(tmp_path / PREVIOUS))["step"] == 1
    assert sorted(os.listdir(tmp_path)) == [LATEST, PREVIOUS]  # no temporary file left behind


def test_truncated_and_foreign_files_are_clear_errors(tmp_path):
    save_checkpoint(minimal_state(1), str(tmp_path))
    data = (tmp_path / LATEST).read_bytes()
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match=f"{truncated}.*truncated, corrupt or not a checkpoint"):
        load_checkpoint(str(truncated))
    text = tmp_path / "notes.pt"
    text.write_text("not a checkpoint")
    with pytest.raises(ValueError, match=f"{text}.*cannot be read"):
        load_checkpoint(str(text))
    foreign = tmp_path / "foreign.pt"
    torch.save({"g": {}, "g_ema": {}, "d": {}}, foreign)  # an official PixelFolder checkpoint's shape
    with pytest.raises(ValueError, match=f"{foreign} is not a training checkpoint of this package"):
        load_checkpoint(str(foreign))
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_checkpoint(str(tmp_path / "missing.pt"))


@pytest.mark.slow
def test_a_checkpoint_of_other_networks_is_a_clear_error_naming_both(tmp_path):
    Trainer(tiny_config(tmp_path, steps=1)).run()
    with pytest.raises(ValueError, match=r"holds PixelFolder at 16x16 px.*but this run builds StyleGAN2 at 16x16"):
        Trainer(tiny_config(tmp_path, model="StyleGAN2", steps=2, resume=str(tmp_path)))
    with pytest.raises(ValueError, match=r"holds PixelFolder at 16x16 px.*but this run builds PixelFolder at 32x32"):
        Trainer(tiny_config(tmp_path, size=32, steps=2, resume="auto"))


def test_load_ema_generator_returns_the_ema_generator(tmp_path):
    trainer = Trainer(tiny_config(tmp_path, steps=1))
    trainer.run()
    generator = load_ema_generator(str(tmp_path / LATEST))
    assert not generator.training
    for name, value in trainer.g_ema.state_dict().items():
        assert torch.equal(generator.state_dict()[name], value)


@pytest.mark.parametrize("damage", ["unknown model", "weights of other shapes"])
def test_a_checkpoint_whose_networks_cannot_be_built_is_one_line_naming_it(tmp_path, damage):
    Trainer(tiny_config(tmp_path, steps=1)).run()
    path = str(tmp_path / LATEST)
    checkpoint = torch.load(path, weights_only=True)
    if damage == "unknown model":
        checkpoint["config"]["model"] = "Foo"
    else:
        checkpoint["g_ema"] = {name: value[:1] for name, value in checkpoint["g_ema"].items()}
    torch.save(checkpoint, path)
    with pytest.raises(ValueError, match=f"^{path}: its networks lack a part of the layout they claim, or a part does not fit") as error:
        load_ema_generator(path)
    assert "\n" not in str(error.value)


def test_rng_states_round_trip_through_a_weights_only_file(tmp_path):
    device = torch.device("cpu")
    state = capture_rng_state(device)
    torch.save(state, tmp_path / "rng.pt")
    expected = (random.random(), np.random.rand(), torch.rand(1).item())
    restore_rng_state(torch.load(tmp_path / "rng.pt", weights_only=True), device)
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == expected
