"""training.export --format onnx: every generator's ONNX graph gives the eager generator's images in ONNX
Runtime at several batch sizes, is made of standard operators, draws fresh noise with --noise random
and none with --noise const, takes psi as an input; the command's errors are one line."""
import importlib.util
import os
import shutil
import sys

import pytest
import torch

from helpers import ABLATIONS, GENERATORS, official_checkpoint, tiny_generator
from training import export, extras

HAVE_ONNX = all(importlib.util.find_spec(name) is not None for name in extras.MODULES["onnx"])
needs_onnx = pytest.mark.skipif(not HAVE_ONNX, reason="onnx, onnxruntime or onnxscript is not installed")

if HAVE_ONNX:
    import onnx
    import onnxruntime

    from training import export_onnx


def session(model):
    return onnxruntime.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])


@pytest.fixture(scope="module")
def random_noise_graph(tmp_path_factory):
    """A small PixelFolder as an ONNX graph with a symbolic batch, psi as an input and random noise:
    (path, the generator)."""
    generator = tiny_generator("PixelFolder")
    path = str(tmp_path_factory.mktemp("onnx") / "g.onnx")
    export.export(generator, path, dynamic_batch=True, truncation_input=True, noise_mode="random", format="onnx")
    return path, generator


@needs_onnx
def test_graph_with_random_noise_gives_the_eager_images_given_the_same_noise(random_noise_graph):
    # The check feeds the graph's random-normal nodes the noise the eager generator drew, at batch
    # sizes 1, 3 and 4: everything but the draw itself is compared.
    path, _ = random_noise_graph
    error, tolerance, batches = export.check(path)
    assert error <= tolerance == 1e-4 and batches == [1, 3, 4]


@needs_onnx
def test_graph_is_standard_operators_with_a_symbolic_batch(random_noise_graph):
    path, _ = random_noise_graph
    model = onnx.load(path)
    onnx.checker.check_model(model, full_check=True)
    assert {entry.domain for entry in model.opset_import} <= {"", "ai.onnx"}
    assert {node.domain for node in model.graph.node} <= {"", "ai.onnx"}
    assert [entry.version for entry in model.opset_import] == [export.ONNX_DEFAULT_OPSET]
    assert [i.name for i in model.graph.input] == ["z", "psi"] and [o.name for o in model.graph.output] == ["images"]
    assert model.graph.input[0].type.tensor_type.shape.dim[0].dim_param  # a named, symbolic batch
    run = session(model)
    for batch in (1, 3, 5):
        images, = run.run(None, {"z": torch.randn(batch, 512).numpy(), "psi": torch.tensor(0.5).numpy()})
        assert images.shape == (batch, 3, 16, 16)


@needs_onnx
def test_random_noise_is_fresh_standard_normal_at_every_call(random_noise_graph):
    path, _ = random_noise_graph
    model = onnx.load(path)
    random_nodes = [node for node in model.graph.node if node.op_type in export_onnx.RANDOM_OPS]
    assert len(random_nodes) == len(tiny_generator("PixelFolder").noise_shapes(1))
    # The noise itself, as extra outputs: N(0, 1) draws of the generator's noise shapes, new at every call.
    model.graph.output.extend(onnx.helper.make_tensor_value_info(node.output[0], onnx.TensorProto.FLOAT, None)
                              for node in random_nodes)
    run = session(model)
    inputs = {"z": torch.randn(2, 512).numpy(), "psi": torch.tensor(1.0).numpy()}
    first, second = run.run(None, inputs), run.run(None, inputs)
    assert not (first[0] == second[0]).all()
    shapes = [list(noise.shape) for noise in first[1:]]
    assert shapes == [[2] + list(shape[1:]) for shape in tiny_generator("PixelFolder").noise_shapes(1)]
    values = torch.cat([torch.from_numpy(noise).flatten() for noise in first[1:]])
    assert abs(values.mean()) < 5 / values.numel() ** 0.5 and abs(values.std() - 1) < 0.05


@needs_onnx
def test_truncation_as_an_input(random_noise_graph):
    path, generator = random_noise_graph
    runner = export_onnx.Runner(path, generator.noise_shapes(1))  # the graph with its noise as inputs
    z = torch.randn(3, 512)
    with torch.no_grad():
        for psi in (1.0, 0.5):
            torch.manual_seed(7)
            noise = generator.make_noise(3)
            expected = generator(z, truncation=psi, truncation_latent=generator.mean_latent(), noise=noise)
            torch.manual_seed(7)
            actual = runner(z, torch.tensor(psi))
            assert export.image_error(actual, expected, normwise=True) <= export.ONNX_CHECK_TOLERANCE


@needs_onnx
def test_a_graph_cut_short_is_one_line(random_noise_graph, tmp_path, capsys):
    path, _ = random_noise_graph
    cut = tmp_path / "cut.onnx"
    cut.write_bytes(open(path, "rb").read()[:5000])
    shutil.copy(export.check_path(path), export.check_path(str(cut)))
    with pytest.raises(SystemExit) as exit_info:
        export.main(["--check", str(cut)])
    assert exit_info.value.code == 1
    err = capsys.readouterr().err
    assert f"{cut} is not a readable ONNX model" in err and len(err.strip().splitlines()) == 1


@needs_onnx
def test_constant_noise_is_the_models_own_in_the_graph(tmp_path):
    # As for a converted network, whose noise is its own: the graph holds the model's noise buffers.
    generator = tiny_generator("StyleGAN2")
    with torch.no_grad():
        for noise in generator.constant_noise():
            noise.normal_(generator=torch.Generator().manual_seed(5))
    path = str(tmp_path / "g.onnx")
    export.export(generator, path, batch=2, format="onnx")
    z = torch.randn(2, 512)
    images, = session(onnx.load(path)).run(None, {"z": z.numpy()})
    with torch.no_grad():
        expected = generator(z, noise="const")
    assert export.image_error(torch.from_numpy(images), expected, normwise=True) <= export.ONNX_CHECK_TOLERANCE


@pytest.mark.slow
@needs_onnx
@pytest.mark.parametrize("name", list(GENERATORS) + list(ABLATIONS))
def test_every_generator_with_constant_noise_at_any_batch(name, tmp_path):
    path = str(tmp_path / "g.onnx")
    metadata = export.export(tiny_generator(name), path, dynamic_batch=True, truncation=0.7, format="onnx")
    error, tolerance, batches = export.check(path)
    assert error <= tolerance and batches == [1, 3, 4]
    operators = metadata["graph"]["operators"]
    assert not set(operators) & set(export_onnx.RANDOM_OPS)
    run = session(onnx.load(path))
    z = torch.randn(2, 512).numpy()
    assert (run.run(None, {"z": z})[0] == run.run(None, {"z": z})[0]).all()


@pytest.mark.slow
@needs_onnx
def test_fixed_batch_graph_keeps_onnx_grouped_conv_and_its_batch(tmp_path):
    path = str(tmp_path / "g.onnx")
    metadata = export.export(tiny_generator("StyleGAN2"), path, batch=2, opset=18, format="onnx")
    assert metadata["graph"]["opset"] == 18 and "MatMul" not in metadata["graph"]["operators"]
    error, tolerance, batches = export.check(path)
    assert error <= tolerance and batches == [2]
    run = session(onnx.load(path))
    assert run.run(None, {"z": torch.randn(2, 512).numpy()})[0].shape == (2, 3, 16, 16)
    with pytest.raises(Exception, match="dimensions"):
        run.run(None, {"z": torch.randn(3, 512).numpy()})


@pytest.fixture
def checkpoint(tmp_path):
    return official_checkpoint(tmp_path / "official.pt")


@pytest.mark.slow
@needs_onnx
def test_command_exports_checks_and_removes_a_graph_that_fails(checkpoint, tmp_path, capsys, monkeypatch):
    out = str(tmp_path / "graphs" / "g.onnx")  # the suffix chooses --format onnx
    export.main([checkpoint, "--out", out, "--size", "16", "--dynamic-batch", "--opset", "21"])
    printed = capsys.readouterr().out
    assert f"wrote {out}: ONNX graph (opset 21, " in printed and "of PixelFolder 16x16" in printed
    assert "matches the eager generator's images: worst normwise relative error" in printed
    assert "at batch sizes 1, 3, 4" in printed
    with pytest.raises(SystemExit) as exit_info:
        export.main(["--check", out])
    assert exit_info.value.code == 0
    # A graph that does not give the eager images is not left behind.
    monkeypatch.setattr(export, "ONNX_CHECK_TOLERANCE", -1.0)
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        export.main([checkpoint, "--out", out, "--size", "16"])
    assert exit_info.value.code == 1
    assert "does not give the eager images, so it was removed" in capsys.readouterr().err
    assert not os.path.exists(out) and not os.path.exists(export.check_path(out))


@pytest.mark.parametrize("argv, message", [
    (["--format", "onnx", "--aoti"], "argument --aoti: expected no --aoti with --format onnx"),
    (["--backend", "triton"], "argument --backend: expected reference with --format onnx"),
    (["--backend", "auto"], "argument --backend: expected reference with --format onnx"),
    (["--dtype", "float16"], "argument --dtype: expected float32 with --format onnx, got float16"),
    (["--opset", "17"], "argument --opset: expected an integer >= 18 and <= 23, got '17'"),
    (["--opset", "24"], "argument --opset: expected an integer >= 18 and <= 23, got '24'"),
    (["--format", "tflite"], "argument --format: invalid choice"),
    (["--format", "pt2", "--opset", "20"], "argument --opset: expected only with --format onnx, got --format pt2"),
    (["--opset", "20", "--out", "g.pt2"], "argument --opset: expected only with --format onnx, got --format pt2"),
])
def test_bad_onnx_arguments_are_one_line_errors(argv, message, checkpoint, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        export.main([checkpoint, "--out", str(tmp_path / "g.onnx")] + argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1
    assert not os.path.exists(tmp_path / "g.onnx")


def test_check_takes_no_format_or_opset(checkpoint, capsys):
    for flag in (["--format", "onnx"], ["--opset", "20"]):
        with pytest.raises(SystemExit) as exit_info:
            export.main(["--check", checkpoint] + flag)
        assert exit_info.value.code == 2
        err = capsys.readouterr().err
        assert "argument --check: expected alone" in err and len(err.strip().splitlines()) == 1


def test_export_refuses_a_gpu_for_onnx(tmp_path):
    with pytest.raises(ValueError, match="argument --device: expected cpu with --format onnx"):
        export.export(tiny_generator("PixelFolder"), str(tmp_path / "g.onnx"), format="onnx", device="cuda")


@pytest.mark.parametrize("missing", extras.MODULES["onnx"])
def test_missing_onnx_packages_are_one_line(missing, checkpoint, tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, missing, None)  # importing it now fails
    with pytest.raises(SystemExit) as exit_info:
        export.main([checkpoint, "--out", str(tmp_path / "g.onnx"), "--size", "16"])
    assert exit_info.value.code == 1
    err = capsys.readouterr().err
    assert f"and {missing} does not import here" in err and "pip install '.[onnx]'" in err
    assert len(err.strip().splitlines()) == 1 and not os.path.exists(tmp_path / "g.onnx")


@needs_onnx
def test_checking_a_graph_without_onnxruntime_is_one_line(random_noise_graph, capsys, monkeypatch):
    path, _ = random_noise_graph
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    with pytest.raises(SystemExit) as exit_info:
        export.main(["--check", path])
    assert exit_info.value.code == 1
    err = capsys.readouterr().err
    assert "onnxruntime does not import here" in err and len(err.strip().splitlines()) == 1
