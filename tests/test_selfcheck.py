"""``python -m pixelfolder_ops``: the same cases and tolerances as these tests (pixelfolder_ops.correctness),
a planted wrong kernel is caught, and it runs with the reference backend alone."""
import json
import math
import types

import pytest
import torch

import pixelfolder_ops as ops
from pixelfolder_ops import backend, correctness, reference, selfcheck

CPU_BACKENDS = [name for name in ("cpu",) if backend._unavailable_reason(name) is None]


@pytest.mark.parametrize("dtype", correctness.DTYPES, ids=str)
@pytest.mark.parametrize("case", correctness.CASES, ids=lambda case: case.name)
@pytest.mark.parametrize("name", CPU_BACKENDS or [pytest.param("cpu", marks=pytest.mark.skip(
    reason=f"the cpu backend is unavailable: {backend._unavailable_reason('cpu')}"))])
def test_backend_within_tolerance(name, case, dtype):
    for output, (error, tolerance) in correctness.check_case(case, name, dtype, "cpu").items():
        assert error <= tolerance, f"{case.name}, {output}: error {error:.3g} > tolerance {tolerance:.3g}"


def test_tolerance_grows_with_the_sum_and_the_dtype():
    assert correctness.tolerance(torch.float32, 0, exact=True) == 0
    assert correctness.tolerance(torch.float32, 4608) > correctness.tolerance(torch.float32, 9)
    assert correctness.tolerance(torch.bfloat16, 9) > correctness.tolerance(torch.float16, 9) > \
        correctness.tolerance(torch.float32, 9) > correctness.tolerance(torch.float64, 9)
    # A 16-bit accumulator over 4,608 terms (errors ~ u16 * sqrt(n), about 0.26 in bfloat16) exceeds it.
    assert correctness.tolerance(torch.bfloat16, 4608) < correctness.unit_roundoff(torch.bfloat16) * math.sqrt(4608)


def test_tolerance_is_the_first_order_bound_its_docstring_states():
    # u = 2^-(mantissa bits + 1): IEEE float64, float32, float16 and bfloat16.
    assert [correctness.unit_roundoff(d) for d in (torch.float64, torch.float32, torch.float16, torch.bfloat16)] == \
        [2.0 ** -53, 2.0 ** -24, 2.0 ** -11, 2.0 ** -8]
    # 8 (u_dtype * condition + u_accumulator * sqrt(n)); 16-bit types accumulate in float32; n >= 1.
    assert correctness.tolerance(torch.float64, 100, condition=3) == 8 * (3 * 2.0 ** -53 + 10 * 2.0 ** -53)
    assert correctness.tolerance(torch.bfloat16, 100) == 8 * (2.0 ** -8 + 10 * 2.0 ** -24)
    assert correctness.tolerance(torch.float32, 1) == correctness.tolerance(torch.float32, 0) == 8 * 2 * 2.0 ** -24


def test_relative_error_flags_wrong_shapes_and_non_finite_values():
    x = torch.randn(3, 4, dtype=torch.float64)
    assert correctness.relative_error(x, x) == 0
    assert correctness.relative_error(x[:2], x) == math.inf
    assert correctness.relative_error(torch.full_like(x, math.nan), x) == math.inf
    assert correctness.relative_error(x * (1 + 1e-3), x) == pytest.approx(1e-3, rel=1e-6)
    assert correctness.relative_error(None, x) == correctness.relative_error(x, None) == math.inf
    assert correctness.relative_error(torch.full_like(x, math.inf), x) == math.inf
    # Against an all-zero oracle the error is absolute; a float32 result is compared in float64.
    assert correctness.relative_error(x, torch.zeros_like(x)) == x.abs().max().item()
    assert correctness.relative_error(x * 1e-3 + 1e-6, x * 1e-3) == pytest.approx(1e-6 / (x * 1e-3).abs().max().item())
    assert correctness.relative_error(x.float(), x) == (x.float().double() - x).abs().max().item() / x.abs().max().item()


def _plant(monkeypatch, name, module):
    monkeypatch.setitem(backend._modules, name, module)
    monkeypatch.setitem(backend._reasons, name, None)


def _fold_like_pixel_unshuffle(input):
    # A plausible bug: torch's channel order (c * 4 + dy * 2 + dx) instead of the official one.
    return torch.nn.functional.pixel_unshuffle(input, 2)


def test_a_planted_wrong_kernel_fails_and_exits_non_zero(monkeypatch, capsys):
    wrong = types.SimpleNamespace(**{op: getattr(reference, op) for op in correctness.OPS})
    wrong.fold = _fold_like_pixel_unshuffle
    _plant(monkeypatch, "cpu", wrong)
    assert selfcheck.main(["--backend", "cpu", "--device", "cpu", "--dtype", "float32"]) == 1
    out = capsys.readouterr().out
    fold_rows = [line for line in out.splitlines() if line.startswith("fold ")]
    assert fold_rows and all("FAIL" in line for line in fold_rows)
    assert "unfold" in out and any(line.startswith("unfold ") and "PASS" in line for line in out.splitlines())
    assert "failed" in out.splitlines()[-1] and not out.splitlines()[-1].endswith(" 0 failed")


def test_a_kernel_that_raises_is_a_failure(monkeypatch, capsys):
    def broken_to_rgb(*args):
        raise RuntimeError("illegal memory access")
    module = types.SimpleNamespace(**{op: getattr(reference, op) for op in correctness.OPS})
    module.to_rgb = broken_to_rgb
    _plant(monkeypatch, "cpu", module)
    assert selfcheck.main(["--backend", "cpu", "--device", "cpu", "--dtype", "float32"]) == 1
    assert "RuntimeError: illegal memory access" in capsys.readouterr().out


def _bias_gradient_off_by(error, seen):
    """fused_leaky_relu whose output is right and whose bias gradient is (1 + error) times the true one;
    each call appends its input's dtype and the TF32 switches to ``seen``."""
    def fused_leaky_relu(input, bias, negative_slope, scale):
        seen.append((input.dtype, torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32))
        output = reference.fused_leaky_relu(input, bias, negative_slope, scale)
        # A zero-valued term whose bias gradient is ``error`` times the true one.
        shifted = reference.fused_leaky_relu(input.detach(), bias.detach() + error * (bias - bias.detach()),
                                             negative_slope, scale)
        return output + (shifted - shifted.detach())
    return fused_leaky_relu


def _with(**ops_of_the_backend):
    """A backend module: the reference's ops, with those given instead."""
    return types.SimpleNamespace(**{**{op: getattr(reference, op) for op in correctness.OPS}, **ops_of_the_backend})


# Planted as "triton": a backend the CPU's 'auto' never picks, so only a check that asks for it by name sees it.
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_a_wrong_gradient_of_one_input_is_caught_in_that_gradient_alone(monkeypatch, dtype):
    seen = []
    _plant(monkeypatch, "triton", _with(fused_leaky_relu=_bias_gradient_off_by(1e-3, seen)))
    case = next(c for c in correctness.CASES if c.op == "fused_leaky_relu")
    with correctness.tf32(True):
        results = correctness.check_case(case, "triton", dtype, "cpu")
        # The backend ran once, in the dtype checked, with TF32 off (the float32 tolerances assume
        # float32 products); the switches are restored after.
        assert seen == [(dtype, False, False)]
        assert torch.backends.cuda.matmul.allow_tf32 and torch.backends.cudnn.allow_tf32
    assert set(results) == {"forward", "grad input", "grad bias"}
    assert all(error <= tolerance for error, tolerance in (results["forward"], results["grad input"]))
    # The bias gradient, |sum over 128 values| ~ 11 against its 1e-3 error, is off by ~1e-3 relative.
    error, tolerance = results["grad bias"]
    assert tolerance < 1e-4 < 5e-4 < error < 2e-3
    assert correctness.check_case(case, "triton", dtype, "cpu") == results  # the seed fixes every draw


def test_a_gradient_that_does_not_reach_an_input_is_an_infinite_error(monkeypatch):
    _plant(monkeypatch, "triton", _with(fused_leaky_relu=lambda input, bias, slope, scale: reference.fused_leaky_relu(
        input, bias.detach(), slope, scale)))
    case = next(c for c in correctness.CASES if c.op == "fused_leaky_relu")
    results = correctness.check_case(case, "triton", torch.float64, "cpu")
    assert results["forward"][0] == 0 and results["grad bias"][0] == math.inf


def test_the_output_gradient_is_rounded_to_the_dtype_and_zero_near_the_activations_kink(monkeypatch):
    # The kink is the reference's, whatever backend is in force.
    _plant(monkeypatch, "cpu", _with(styled_conv2d=lambda input, *args: torch.zeros(2, 2, 10, 14, dtype=input.dtype)))
    ops.set_backend("cpu")
    case = next(c for c in correctness.CASES if c.name == "styled conv odd 3->8 5x7, unfold")
    made, call = case.make(torch.Generator().manual_seed(0))
    inputs = {name: t.to(torch.bfloat16).double() for name, t in made.items()}
    grad_output = correctness._output_gradient(case, call, inputs, torch.bfloat16, seed=1)
    assert grad_output.dtype == torch.float64 and torch.equal(grad_output.bfloat16().double(), grad_output)
    pre_activation = call(inputs, "reference", 1.0, 1.0)
    assert pre_activation.abs().max() > 1
    band = correctness.SAFETY * correctness.unit_roundoff(torch.bfloat16) * pre_activation.abs().max()
    near = pre_activation.abs() <= band
    assert near.any() and (grad_output[near] == 0).all() and (grad_output[~near] != 0).all()
    # The seed decides it; an op without an activation keeps every value.
    torch.testing.assert_close(grad_output[~near], torch.randn(
        grad_output.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(1)).bfloat16().double()[~near])
    plain = next(c for c in correctness.CASES if not c.activated and not c.exact)
    made, call = plain.make(torch.Generator().manual_seed(0))
    assert (correctness._output_gradient(plain, call, made, torch.float32, seed=1) != 0).all()


def test_with_only_the_reference_it_says_so_and_checks_it(monkeypatch, capsys, tmp_path):
    for name in ("cpu", "cuda", "triton"):
        monkeypatch.setitem(backend._reasons, name, "no C++ compiler was found (planted by the test)")
    report_path = tmp_path / "check.json"
    assert selfcheck.main(["--device", "cpu", "--speed", "--json", str(report_path)]) == 0
    out = capsys.readouterr().out
    assert "Only the reference backend can run on cpu" in out
    assert "no C++ compiler was found (planted by the test)" in out
    report = json.loads(report_path.read_text())
    assert report["passed"] and {r["backend"] for r in report["correctness"]} == {"reference"}
    assert {r["dtype"] for r in report["correctness"]} == {"float32", "float64", "bfloat16", "float16"}
    assert {r["op"] for r in report["correctness"]} == set(correctness.OPS)
    assert all(r["auto"] == "reference" and r["seconds"]["reference"] > 0 for r in report["speed"])


@pytest.mark.parametrize("argv, message", [
    (["--device", "tpu"], "argument --device: expected cpu or cuda[:N], got 'tpu'"),
    (["--backend", "fast"], "argument --backend: expected one of reference, cpu, cuda, triton, got 'fast'"),
    (["--dtype", "int8"], "argument --dtype: invalid choice: 'int8'"),
])
def test_bad_arguments_are_one_line_errors(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        selfcheck.main(argv)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message for a machine without a GPU")
def test_cuda_without_a_gpu_is_a_one_line_error(capsys):
    with pytest.raises(SystemExit):
        selfcheck.main(["--device", "cuda"])
    assert "PyTorch sees no CUDA GPU" in capsys.readouterr().err


def test_every_public_op_has_cases():
    public = {"fold", "unfold", "fourier_embedding", "fused_leaky_relu", "upfirdn2d", "modulated_conv2d",
              "styled_conv2d", "to_rgb"}
    assert public <= set(ops.__all__) and set(correctness.OPS) == public


def _blur_x2():
    """StyleGAN2's RGB-skip up-sampling kernel: outer([1, 3, 3, 1]) / 64, times 4 for the zeros inserted."""
    taps = torch.tensor([1.0, 3, 3, 1], dtype=torch.float64)
    return 4 * torch.outer(taps, taps) / 64


# Every case as its name describes it, written out here: (its input, its output shape, the longest sum
# behind one value of the output or of a gradient, and the op call it stands for).
CASE_SPECS = {
    "fold 32ch 16x16 (positional branch)": ((2, 32, 16, 16), (2, 128, 8, 8), 0, lambda t: ops.fold(t["input"])),
    "fold odd 3ch 6x10": ((2, 3, 6, 10), (2, 12, 3, 5), 0, lambda t: ops.fold(t["input"])),
    "unfold 512ch 4x4 (StyledConv A)": ((2, 512, 4, 4), (2, 128, 8, 8), 0, lambda t: ops.unfold(t["input"])),
    "unfold odd 8ch 3x5": ((2, 8, 3, 5), (2, 2, 6, 10), 0, lambda t: ops.unfold(t["input"])),
    # The weight's gradient sums over the grid.
    "fourier 512ch 16x16 (stage 0)": ((512, 2), (1, 512, 16, 16), 256,
                                      lambda t: ops.fourier_embedding(t["weight"], t["bias"], 16, 16)),
    "fourier odd 6ch 5x7": ((6, 2), (1, 6, 5, 7), 35, lambda t: ops.fourier_embedding(t["weight"], t["bias"], 5, 7)),
    # The bias's gradient sums over the batch and the pixels.
    "leaky relu 512ch 8x8": ((2, 512, 8, 8), (2, 512, 8, 8), 128,
                             lambda t, slope=0.2, gain=2 ** 0.5: ops.fused_leaky_relu(t["input"], t["bias"], slope,
                                                                                       gain)),
    "leaky relu odd 5ch 3x7, slope 0.1 gain 1.5": (
        (2, 5, 3, 7), (2, 5, 3, 7), 42,
        lambda t, slope=0.1, gain=1.5: ops.fused_leaky_relu(t["input"], t["bias"], slope, gain)),
    # The kernel's gradient sums over every (up-sampled) input pixel.
    "upfirdn2d RGB skip 8x8 up 2": ((2, 3, 8, 8), (2, 3, 16, 16), 1536,
                                    lambda t: ops.upfirdn2d(t["input"], t["kernel"], 2, 1, (2, 1))),
    "upfirdn2d odd 5x7 down 2": ((2, 3, 5, 7), (2, 3, 3, 4), 210,
                                 lambda t: ops.upfirdn2d(t["input"], t["kernel"], 1, 2, (1, 1))),
    # Demodulation and the input's gradient sum 512 x 3 x 3 terms.
    "modulated conv 3x3 512->512 4x4": ((2, 512, 4, 4), (2, 512, 4, 4), 4608,
                                        lambda t: ops.modulated_conv2d(t["input"], t["weight"], t["styles"])),
    # The weight's gradient sums over the batch's 70 pixels.
    "modulated conv odd 3x3 3->4 5x7": ((2, 3, 5, 7), (2, 4, 5, 7), 70,
                                        lambda t: ops.modulated_conv2d(t["input"], t["weight"], t["styles"])),
    "modulated conv odd up 2, no demod": (
        (2, 3, 5, 4), (2, 4, 10, 8), 160,
        lambda t: ops.modulated_conv2d(t["input"], t["weight"], t["styles"], demodulate=False, up=2)),
    "modulated conv odd down 2": ((2, 3, 6, 4), (2, 4, 3, 2), 48,
                                  lambda t: ops.modulated_conv2d(t["input"], t["weight"], t["styles"], down=2)),
    # The noise strength's gradient sums over every output value.
    "styled conv A 512->512 4x4, unfold": ((2, 512, 4, 4), (2, 128, 8, 8), 16384, lambda t, **a: ops.styled_conv2d(
        t["input"], t["weight"], t["styles"], t["noise"], t["noise_strength"], t["bias"], unfold_output=True, **a)),
    "styled conv B 128->512 8x8": ((2, 128, 8, 8), (2, 512, 8, 8), 65536, lambda t, **a: ops.styled_conv2d(
        t["input"], t["weight"], t["styles"], t["noise"], t["noise_strength"], t["bias"], **a)),
    "styled conv odd 3->8 5x7, unfold": ((2, 3, 5, 7), (2, 2, 10, 14), 560, lambda t, **a: ops.styled_conv2d(
        t["input"], t["weight"], t["styles"], t["noise"], t["noise_strength"], t["bias"], unfold_output=True, **a)),
    "styled conv odd up 2, shared noise": ((2, 3, 3, 4), (2, 4, 6, 8), 384, lambda t, **a: ops.styled_conv2d(
        t["input"], t["weight"], t["styles"], t["noise"], t["noise_strength"], t["bias"], up=2, **a)),
    # The input's and the styles' gradients sum over 512 channels, the weight's over 128 pixels.
    "to_rgb 512ch 8x8 + skip": ((2, 512, 8, 8), (2, 3, 8, 8), 512, lambda t: ops.to_rgb(
        t["input"], t["weight"], t["styles"], t["bias"], t["skip"], _blur_x2())),
    "to_rgb odd 5ch 3x5, no skip": ((2, 5, 3, 5), (2, 3, 3, 5), 30, lambda t: ops.to_rgb(
        t["input"], t["weight"], t["styles"], t["bias"])),
}


@pytest.mark.parametrize("case", correctness.CASES, ids=lambda case: case.name)
def test_each_case_is_the_call_its_name_describes(case):
    first_input, output_shape, reduction, expected_call = CASE_SPECS[case.name]
    tensors, call = case.make(torch.Generator().manual_seed(0))
    again, _ = case.make(torch.Generator().manual_seed(0))
    assert all(t.dtype == torch.float64 and torch.equal(t, again[name]) for name, t in tensors.items())
    assert tuple(next(iter(tensors.values())).shape) == first_input
    assert case.reduction == reduction and case.exact == (case.op in ("fold", "unfold"))
    # Data movement must be bit-exact in every dtype.
    assert all((case.tolerance(dtype) == 0) == case.exact for dtype in correctness.DTYPES)
    output = call(tensors, "reference")
    assert tuple(output.shape) == output_shape
    assert case.activated == (case.op in ("fused_leaky_relu", "styled_conv2d"))
    with ops.use_backend("reference"):
        torch.testing.assert_close(output, expected_call(tensors), rtol=0, atol=0)
        if case.activated:  # slope and gain 1 give the pre-activation
            pre_activation = (expected_call(tensors, slope=1.0, gain=1.0) if case.op == "fused_leaky_relu"
                              else expected_call(tensors, negative_slope=1.0, gain=1.0))
            torch.testing.assert_close(call(tensors, "reference", 1.0, 1.0), pre_activation, rtol=0, atol=0)


def test_case_inputs_are_drawn_as_the_module_says():
    made = [case.make(torch.Generator().manual_seed(0))[0] for case in correctness.CASES]
    # Styles around 1 (s = 0.5 N(0, 1) + 1, as a trained affine gives), over every case's styles.
    styles = torch.cat([t["styles"].flatten() for t in made if "styles" in t])
    assert abs(styles.mean() - 1) < 0.05 and abs(styles.std() - 0.5) < 0.05
    # PixelFolder's Fourier initialisation: weights uniform in +-sqrt(9/2), phases in +-1/sqrt(2).
    fourier = [t for t in made if "weight" in t and t["weight"].dim() == 2]
    weights, phases = torch.cat([t["weight"].flatten() for t in fourier]), torch.cat([t["bias"] for t in fourier])
    assert 0.98 * math.sqrt(9 / 2) < weights.abs().max() <= math.sqrt(9 / 2) and weights.min() < 0
    assert 0.95 / math.sqrt(2) < phases.abs().max() <= 1 / math.sqrt(2) and phases.min() < 0
    fourier_case = next(c for c in correctness.CASES if c.op == "fourier_embedding")
    # sin's argument |B [x, y] + b| <= 2 sqrt(9/2) + 1/sqrt(2) is the factor by which it amplifies rounding.
    assert fourier_case.condition == pytest.approx(2 * math.sqrt(9 / 2) + 1 / math.sqrt(2))
    # Every other tensor N(0, 1), the FIR kernels N(0, 1) / taps.
    normal = torch.cat([t[name].flatten() for t in made for name in ("input", "noise") if name in t])
    assert abs(normal.mean()) < 0.02 and abs(normal.std() - 1) < 0.02
    kernels = [t["kernel"] for t in made if "kernel" in t]
    assert [tuple(k.shape) for k in kernels] == [(4, 4), (3, 3)]
    assert all(abs(k.std() * k.shape[0] - 1) < 0.5 for k in kernels)
