"""Bad input to training.train, training.generate and training.evaluate: one line on stderr naming the
argument or file, what was expected and what was found, a non-zero exit, and no traceback."""
import argparse
import dataclasses
import os
import subprocess
import sys

import pytest
import torch

from helpers import our_checkpoint
from training import cli, evaluate, generate, train
from training.config import TrainConfig, flag

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def one_line_error(capsys, main, argv):
    """Runs ``main(argv)``; returns its stderr, after checking that it exited non-zero with one line."""
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code not in (0, None)
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 1, lines
    return lines[0]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return our_checkpoint(str(tmp_path_factory.mktemp("run")))[0]


@pytest.fixture
def a_file(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("not a folder")
    return str(path)


# training.train: (arguments, words the message must hold)
TRAIN_CASES = [
    (["--size", "2048"], ["--size", "power of two from 8 to 1024", "'2048'"]),
    (["--size", "8"], ["--size", "--model PixelFolder needs a size of at least 16", "8"]),
    (["--style-dim", "0"], ["--style-dim", "integer >= 1", "'0'"]),
    (["--width", "0"], ["--width", "> 0", "'0'"]),
    (["--width", "-1"], ["--width", "> 0", "'-1'"]),
    (["--channel-multiplier", "0"], ["--channel-multiplier", ">= 1", "'0'"]),
    (["--r1-gamma", "-1"], ["--r1-gamma", ">= 0", "'-1'"]),
    (["--lr", "-0.1"], ["--lr", "> 0", "'-0.1'"]),
    (["--lr", "nan"], ["--lr", "finite", "'nan'"]),
    (["--ema-half-life", "-5"], ["--ema-half-life", "> 0", "'-5'"]),
    (["--n-mlp", "-1"], ["--n-mlp", ">= 1", "'-1'"]),
    (["--beta2", "1"], ["--beta2", "< 1", "'1'"]),
    (["--mixing", "1.5"], ["--mixing", "<= 1", "'1.5'"]),
    (["--batch", "two"], ["--batch", "integer", "'two'"]),
    (["--num-workers", "-1"], ["--num-workers", ">= 0", "'-1'"]),
    (["--model", "GAN"], ["--model", "invalid choice", "'GAN'"]),
    (["--conv-clamp", "256"], ["--conv-clamp", "StyleGAN2 only", "--model PixelFolder"]),
    (["--channel-base", "16384"], ["--channel-base", "StyleGAN2 only", "--model PixelFolder"]),
    (["--model", "StyleGAN2", "--conv-clamp", "0"], ["--conv-clamp", "> 0", "'0'"]),
    (["--mbstd-channels", "-1"], ["--mbstd-channels", ">= 0", "'-1'"]),
    (["--mbstd-group", "0"], ["--mbstd-group", ">= 1", "'0'"]),
    (["--resume", "nowhere/checkpoint.pt"], ["nowhere/checkpoint.pt", "does not exist"]),
]


@pytest.mark.parametrize("argv, words", TRAIN_CASES, ids=[" ".join(argv) for argv, _ in TRAIN_CASES])
def test_train_refuses_bad_flags_in_one_line(capsys, argv, words):
    line = one_line_error(capsys, train.main, argv)
    for word in words:
        assert word in line, (word, line)


def test_train_refuses_an_out_that_is_a_file_and_cuda_without_a_gpu(capsys, a_file):
    line = one_line_error(capsys, train.main, ["--out", a_file])
    assert "--out" in line and "expected a folder" in line and a_file in line
    if not torch.cuda.is_available():
        line = one_line_error(capsys, train.main, ["--device", "cuda"])
        assert "--device" in line and "no CUDA GPU" in line


def bad_value(setting):
    """A value the flag of ``setting`` must refuse."""
    return {"out": os.path.abspath(__file__), "device": "tpu"}.get(setting.name, "nan")


CHECKED = [setting for setting in dataclasses.fields(TrainConfig) if setting.metadata.get("check")]


@pytest.mark.parametrize("setting", CHECKED, ids=[setting.name for setting in CHECKED])
def test_every_checked_flag_refuses_a_bad_value_on_the_command_line_and_in_python(capsys, setting):
    line = one_line_error(capsys, train.main, [flag(setting.name), bad_value(setting)])
    assert f"argument {flag(setting.name)}: expected" in line
    # The same rule for a configuration made in Python (the Trainer validates it).
    with pytest.raises(ValueError, match=f"argument {flag(setting.name)}: expected"):
        TrainConfig(**{setting.name: bad_value(setting)}).validate()


def test_unchecked_train_flags_are_choices_or_booleans_or_checked_when_used():
    # What the test above does not cover must be covered some other way: a choice, a boolean, or a
    # path that the Trainer reads (and reports as the missing-data and missing-checkpoint tests show).
    for setting in dataclasses.fields(TrainConfig):
        if not setting.metadata.get("check"):
            boolean = isinstance(setting.default, bool) or setting.metadata.get("action") is argparse.BooleanOptionalAction
            assert "choices" in setting.metadata or boolean or setting.name in ("dataset", "resume"), setting.name


@pytest.mark.parametrize("argv, words", [
    (["--batch-size", "0"], ["--batch-size", ">= 1", "'0'"]),
    (["--interpolate", "0", "1", "--steps", "0"], ["--steps", ">= 2", "'0'"]),
    (["--seeds", "5-3"], ["--seeds", "FIRST <= LAST", "'5-3'"]),
    (["--seeds", ""], ["--seeds", "expected seeds"]),
    (["--seeds", "a-b"], ["--seeds", "expected seeds", "'a-b'"]),
    (["--truncation", "nan"], ["--truncation", "finite", "'nan'"]),
    (["--truncation", "inf"], ["--truncation", "finite", "'inf'"]),
    (["--nrow", "0"], ["--nrow", ">= 1"]),
    (["--size", "100"], ["--size", "power of two", "'100'"]),
    (["--device", "tpu"], ["--device", "'tpu'"]),
])
def test_generate_refuses_bad_flags_in_one_line(capsys, checkpoint, argv, words):
    line = one_line_error(capsys, generate.main, [checkpoint] + argv)
    for word in words:
        assert word in line, (word, line)


def test_generate_refuses_an_outdir_that_is_a_file(capsys, checkpoint, a_file):
    line = one_line_error(capsys, generate.main, [checkpoint, "--outdir", a_file])
    assert "--outdir" in line and a_file in line and "is a file" in line


def test_generate_names_a_missing_empty_truncated_or_foreign_checkpoint(capsys, checkpoint, tmp_path):
    assert "does not exist" in one_line_error(capsys, generate.main, [str(tmp_path / "missing.pt")])
    empty, truncated, text, foreign = (tmp_path / name for name in ("empty.pt", "truncated.pt", "text.pt", "x.pt"))
    empty.write_bytes(b"")
    data = open(checkpoint, "rb").read()
    truncated.write_bytes(data[:len(data) // 2])
    text.write_text("hello")
    torch.save({"weights": torch.ones(2)}, foreign)
    for path in (empty, truncated, text):
        line = one_line_error(capsys, generate.main, [str(path)])
        assert f"checkpoint {path} cannot be read" in line and "truncated, corrupt or not a checkpoint" in line
    line = one_line_error(capsys, generate.main, [str(foreign)])
    assert f"checkpoint {foreign} holds no network of a known format" in line and "PixelFolder" in line


def test_generate_takes_a_run_folder_for_its_latest_checkpoint(capsys, checkpoint, tmp_path):
    generate.main([os.path.dirname(checkpoint), "--seeds", "3", "--outdir", str(tmp_path)])
    assert os.path.isfile(tmp_path / "seed0003.png")


def test_evaluate_refuses_bad_flags_and_files_in_one_line(capsys, checkpoint, tmp_path, a_file):
    images = tmp_path / "images"
    images.mkdir()
    for argv, words in [
        (["--dataset", str(tmp_path / "absent")], ["--dataset", "does not exist"]),
        (["--dataset", str(images), "--num-samples", "1"], ["--num-samples", ">= 4", "'1'"]),
        (["--dataset", str(images), "--num-samples", "0"], ["--num-samples", ">= 4", "'0'"]),
        (["--dataset", str(images), "--batch-size", "0"], ["--batch-size", ">= 1", "'0'"]),
        (["--dataset", str(images), "--workers", "-2"], ["--workers", ">= 0"]),
        (["--dataset", str(images), "--kid-subset-size", "1"], ["--kid-subset-size", ">= 2"]),
        (["--dataset", str(images), "--truncation", "nan"], ["--truncation", "finite"]),
        (["--dataset", str(images), "--cache-dir", a_file], ["--cache-dir", "is a file"]),
        (["--dataset", str(images), "--inception", str(tmp_path / "absent.pth")],
         ["FID Inception weights not found", "absent.pth", "--inception"]),
    ]:
        line = one_line_error(capsys, evaluate.main, [checkpoint] + argv)
        for word in words:
            assert word in line, (word, line)
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(open(checkpoint, "rb").read()[:1000])
    line = one_line_error(capsys, evaluate.main, [str(truncated), "--dataset", str(images)])
    assert f"checkpoint {truncated} cannot be read" in line


@pytest.mark.parametrize("content", [b"garbage", None], ids=["corrupt", "foreign"])
def test_evaluate_names_a_corrupt_or_foreign_inception_file(capsys, checkpoint, tmp_path, content):
    weights = tmp_path / "inception.pth"
    if content is None:
        torch.save({"conv.weight": torch.ones(1)}, weights)
    else:
        weights.write_bytes(content)
    (tmp_path / "images").mkdir()
    line = one_line_error(capsys, evaluate.main, [checkpoint, "--dataset", str(tmp_path / "images"),
                                                  "--inception", str(weights), "--device", "cpu"])
    assert f"FID Inception weights '{weights}' cannot be used" in line


def test_evaluate_names_a_statistics_file_that_is_not_one(tmp_path):
    not_npz = tmp_path / "stats.npz"
    not_npz.write_text("mu, sigma")
    with pytest.raises(ValueError, match=f"'{not_npz}' is not a statistics file"):
        evaluate.load_statistics(str(not_npz))


def test_default_num_workers_fits_the_cores_this_process_may_use(monkeypatch):
    cores = len(os.sched_getaffinity(0))
    assert cli.default_num_workers() == max(0, min(8, cores - 1))
    monkeypatch.setenv("LOCAL_WORLD_SIZE", str(cores))  # one process per core: no room for workers
    assert cli.default_num_workers() == 0


def test_a_command_run_as_a_module_prints_no_traceback(tmp_path):
    result = subprocess.run([sys.executable, "-m", "training.generate", str(tmp_path / "missing.pt")], cwd=ROOT,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 1
    assert result.stderr.strip() == f"error: checkpoint {tmp_path / 'missing.pt'} does not exist"
