"""training.export: torch.export programs and AOTInductor packages of every generator give the eager
generator's images for several batch sizes, the reference program runs with torch alone, and the
command's errors are one line."""
import os
import subprocess
import sys

import pytest
import torch

from pixelfolder_ops import correctness
from helpers import GENERATORS, official_checkpoint, tiny_generator
from training import export

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
needs_cpu_backend = pytest.mark.needs_backend("cpu")

def assert_same_images(actual, expected, tolerance=1e-5):
    assert correctness.relative_error(actual, expected) <= tolerance


@pytest.mark.parametrize("name", GENERATORS)
@pytest.mark.slow
def test_reference_program_gives_the_eager_images_at_any_batch(name, tmp_path):
    path = str(tmp_path / "g.pt2")
    metadata = export.export(tiny_generator(name), path, dynamic_batch=True, truncation=0.7)
    assert metadata["requires"] == [] and not metadata["needs_pixelfolder_ops"]
    error, tolerance, batches = export.check(path)
    assert error <= tolerance == 1e-5 and batches == [1, 3, 4]


def test_fixed_batch_program_rejects_another_batch(tmp_path):
    path = str(tmp_path / "g.pt2")
    export.export(tiny_generator("PixelFolder"), path, batch=2)
    program = torch.export.load(path).module()
    assert program(torch.randn(2, 512)).shape == (2, 3, 16, 16)
    with pytest.raises(Exception):
        program(torch.randn(3, 512))


@pytest.mark.slow
def test_reference_program_runs_without_this_repository(tmp_path):
    path = str(tmp_path / "g.pt2")
    export.export(tiny_generator("PixelFolder"), path, dynamic_batch=True)
    expected = torch.load(export.check_path(path), weights_only=True)["images"][0]  # the whole batch's
    script = (
        "import sys\n"
        "sys.modules['pixelfolder_ops'] = None\nsys.modules['models'] = None\n"  # importing either now fails
        "import torch\n"
        f"program = torch.export.load({path!r}).module()\n"
        f"z = torch.load({export.check_path(path)!r}, weights_only=True)['z']\n"
        f"torch.save(program(z), {str(tmp_path / 'images.pt')!r})\n")
    subprocess.run([sys.executable, "-c", script], check=True, cwd=tmp_path, env={**os.environ, "PYTHONPATH": ""})
    assert_same_images(torch.load(tmp_path / "images.pt"), expected)


@pytest.mark.slow
def test_constant_noise_is_deterministic_and_random_noise_is_not(tmp_path):
    z = torch.randn(2, 512)
    const = torch.export.load(_exported(tmp_path / "c.pt2", noise_mode="const")).module()
    random = torch.export.load(_exported(tmp_path / "r.pt2", noise_mode="random")).module()
    assert torch.equal(const(z), const(z))
    assert not torch.equal(random(z), random(z))
    # Its check seeds torch's RNG before the eager generator and the program alike: same noise, same images.
    error, tolerance, batches = export.check(str(tmp_path / "r.pt2"))
    assert error <= tolerance and batches == [1, 3, 4]


def _exported(path, **options):
    export.export(tiny_generator("PixelFolder"), str(path), dynamic_batch=True, **options)
    return str(path)


@pytest.mark.slow
def test_truncation_as_an_input(tmp_path):
    generator = tiny_generator("PixelFolder")
    program = torch.export.load(_exported(tmp_path / "g.pt2", truncation_input=True)).module()
    z = torch.randn(3, 512)
    with torch.no_grad():
        for psi in (1.0, 0.5):
            expected = generator(z, truncation=psi, truncation_latent=generator.mean_latent(), noise="const")
            assert_same_images(program(z, torch.tensor(psi)), expected)


@needs_cpu_backend
@pytest.mark.slow
def test_fused_backend_program_names_the_ops_it_needs(tmp_path):
    path = str(tmp_path / "g.pt2")
    metadata = export.export(tiny_generator("PixelFolder"), path, dynamic_batch=True, backend="cpu")
    assert metadata["needs_pixelfolder_ops"]
    assert {"pixelfolder_ops.styled_conv2d.default", "pixelfolder_ops.to_rgb.default"} <= set(metadata["requires"])
    error, tolerance, _ = export.check(path)
    assert error <= tolerance


@pytest.mark.slow
@needs_cpu_backend
def test_aoti_package_of_a_fused_backend_at_any_batch(tmp_path):
    path = str(tmp_path / "g.pt2")
    export.export(tiny_generator("PixelFolder"), path, dynamic_batch=True, backend="cpu", aoti=True)
    runner = torch._inductor.aoti_load_package(path)
    assert runner(torch.randn(3, 512)).shape == (3, 3, 16, 16)
    error, tolerance, batches = export.check(path)
    assert error <= tolerance and batches == [1, 3, 4]


@pytest.fixture
def checkpoint(tmp_path):
    return official_checkpoint(tmp_path / "official.pt")


@pytest.mark.slow
def test_command_exports_then_checks(checkpoint, tmp_path, capsys):
    out = str(tmp_path / "programs" / "g.pt2")
    export.main([checkpoint, "--out", out, "--size", "16", "--batch", "2", "--truncation", "0.5"])
    printed = capsys.readouterr().out
    assert f"wrote {out}: torch.export program of PixelFolder 16x16, runs with torch alone" in printed
    assert "matches the eager generator's images" in printed
    with pytest.raises(SystemExit) as exit_info:
        export.main(["--check", out])
    assert exit_info.value.code == 0
    saved = torch.load(export.check_path(out), weights_only=True)
    saved["images"] = [images + 0.01 for images in saved["images"]]  # what a wrong program would give
    torch.save(saved, export.check_path(out))
    with pytest.raises(SystemExit) as exit_info:
        export.main(["--check", out])
    assert exit_info.value.code == 1 and "DOES NOT match" in capsys.readouterr().out


@pytest.mark.parametrize("argv, message", [
    ([], "expected CHECKPOINT and --out"),
    (["{checkpoint}"], "expected CHECKPOINT and --out"),
    (["{checkpoint}", "--out", "{tmp}"], "argument --out: expected a file path, got the folder"),
    (["{checkpoint}", "--out", "{tmp}/g.pt2", "--batch", "0"], "argument --batch: expected an integer >= 1, got '0'"),
    (["{checkpoint}", "--out", "{tmp}/g.pt2", "--batch", "2", "--dynamic-batch"], "not allowed with argument"),
    (["{checkpoint}", "--out", "{tmp}/g.pt2", "--truncation", "nan"], "argument --truncation: expected a finite"),
    (["{checkpoint}", "--out", "{tmp}/g.pt2", "--dtype", "int8"], "argument --dtype: invalid choice"),
    (["--check", "{checkpoint}"], "expected {checkpoint}.check.pt beside the program"),
    (["--check", "{tmp}/missing.pt2"], "argument --check: expected an existing file or folder"),
    (["{checkpoint}", "--check", "{checkpoint}"], "argument --check: expected alone"),
])
def test_bad_arguments_are_one_line_errors(argv, message, checkpoint, tmp_path, capsys):
    fill = {"checkpoint": checkpoint, "tmp": str(tmp_path)}
    with pytest.raises(SystemExit) as exit_info:
        export.main([a.format(**fill) for a in argv])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert message.format(**fill) in err and len(err.strip().splitlines()) == 1


def test_a_file_that_is_no_checkpoint_is_one_line(tmp_path, capsys):
    bogus = tmp_path / "notes.pt"
    bogus.write_text("not a checkpoint")
    with pytest.raises(SystemExit) as exit_info:
        export.main([str(bogus), "--out", str(tmp_path / "g.pt2")])
    assert exit_info.value.code == 1
    err = capsys.readouterr().err
    assert str(bogus) in err and len(err.strip().splitlines()) == 1
    assert not os.path.exists(tmp_path / "g.pt2")


@pytest.mark.slow
def test_an_aoti_package_that_ignores_the_batch_is_refused_and_removed(checkpoint, tmp_path, capsys):
    # torch 2.13's AOTInductor fixes the batch of the reference backend's per-image grouped conv.
    out = tmp_path / "g.pt2"
    with pytest.raises(SystemExit) as exit_info:
        export.main([checkpoint, "--out", str(out), "--size", "16", "--dynamic-batch", "--aoti"])
    assert exit_info.value.code == 1
    assert "AOTInductor fixes the batch" in capsys.readouterr().err
    assert not out.exists() and not os.path.exists(export.check_path(str(out)))


def test_a_truncated_program_is_one_line(checkpoint, tmp_path, capsys):
    out = tmp_path / "g.pt2"
    export.main([checkpoint, "--out", str(out), "--size", "16"])
    out.write_bytes(out.read_bytes()[:1000])
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        export.main(["--check", str(out)])
    assert exit_info.value.code == 1
    err = capsys.readouterr().err
    assert f"{out} is not a readable exported program" in err and len(err.strip().splitlines()) == 1


@needs_cpu_backend
def test_a_fused_program_where_the_extension_cannot_load_is_one_line(tmp_path):
    path = str(tmp_path / "g.pt2")
    export.export(tiny_generator("PixelFolder"), path, dynamic_batch=True, backend="cpu")
    # No compiler and an empty build cache: this process cannot have the compiled ops.
    env = {**os.environ, "CXX": str(tmp_path / "no-compiler"), "TORCH_EXTENSIONS_DIR": str(tmp_path / "cache"),
           "PYTHONPATH": ROOT}
    result = subprocess.run([sys.executable, "-m", "training.export", "--check", path], cwd=ROOT, env=env,
                            capture_output=True, text=True)
    assert result.returncode == 1, result.stderr
    lines = [line for line in result.stderr.strip().splitlines() if not line.startswith("pixelfolder_ops: building")]
    assert len(lines) == 1 and "pixelfolder_ops.styled_conv2d.default" in lines[0], result.stderr
    assert "which this Python does not have" in lines[0]
