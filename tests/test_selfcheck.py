"""``python -m pixelfolder_ops`` and the one tolerance rule of pixelfolder_ops.correctness: the report's
every line and its JSON, the worst ratio per row, a planted wrong kernel is caught, it runs with the
reference backend alone; the output gradient that the checks use (rounded, zero at the kinks)."""
import json
import math
import os
import platform
import re
import sys
import types

import pytest
import torch
import tqdm

import pixelfolder_ops as ops
from pixelfolder_ops import backend, correctness, extension, reference, selfcheck

# Each test builds the cases it checks (correctness.cases() in its body): a case built at collection would
# be built by a mutation run's parent process, before any mutant is active. The cases themselves run on
# every backend in its own test module (test_extension.py, test_triton.py, test_ops.py for the reference).


def test_tolerance_grows_with_the_sum_and_the_dtype():
    assert correctness.tolerance(torch.float32, 4608) > correctness.tolerance(torch.float32, 9)
    assert correctness.tolerance(torch.bfloat16, 9) > correctness.tolerance(torch.float16, 9) > \
        correctness.tolerance(torch.float32, 9) > correctness.tolerance(torch.float64, 9)
    # A 16-bit accumulator over 4,608 terms (errors ~ u16 * sqrt(n), about 0.26 in bfloat16) exceeds it.
    assert correctness.tolerance(torch.bfloat16, 4608) < correctness.unit_roundoff(torch.bfloat16) * math.sqrt(4608)
    # Data movement must be bit-exact in every dtype; every other case has a tolerance.
    for case in correctness.cases():
        assert all((case.tolerance(dtype) == 0) == case.exact for dtype in correctness.DTYPES)
        assert case.exact == (case.op in ("fold", "unfold"))


def test_tolerance_is_the_first_order_bound_its_docstring_states():
    # u = 2^-(mantissa bits + 1): IEEE float64, float32, float16 and bfloat16.
    assert [correctness.unit_roundoff(d) for d in (torch.float64, torch.float32, torch.float16, torch.bfloat16)] == \
        [2.0 ** -53, 2.0 ** -24, 2.0 ** -11, 2.0 ** -8]
    # SAFETY (u_dtype * condition + u_accumulator * sqrt(n)); 16-bit types accumulate in float32; n >= 1.
    safety = correctness.SAFETY
    assert correctness.tolerance(torch.float64, 100, condition=3) == safety * (3 * 2.0 ** -53 + 10 * 2.0 ** -53)
    assert correctness.tolerance(torch.bfloat16, 100) == safety * (2.0 ** -8 + 10 * 2.0 ** -24)
    assert correctness.tolerance(torch.float32, 1) == correctness.tolerance(torch.float32, 0) == safety * 2 * 2.0 ** -24
    # TF32 rounds the factors of float32 products to 10 mantissa bits: u = 2^-11 for what is stored.
    assert correctness.tolerance(torch.float32, 100, tf32=True) == safety * (2.0 ** -11 + 10 * 2.0 ** -24)


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


def _fold_like_pixel_unshuffle(args):
    # A plausible bug: torch's channel order (c * 4 + dy * 2 + dx) instead of the official one.
    return torch.nn.functional.pixel_unshuffle(args.input, 2)


def test_a_planted_wrong_kernel_fails_and_exits_non_zero(monkeypatch, capsys, small_table):
    _plant(monkeypatch, "cpu", _with(fold=_fold_like_pixel_unshuffle))
    assert selfcheck.main(["--backend", "cpu", "--device", "cpu", "--dtype", "float32"]) == 1
    out = capsys.readouterr().out
    fold_rows = [line for line in out.splitlines() if line.startswith("fold ")]
    assert fold_rows and all("FAIL" in line for line in fold_rows)
    assert "unfold" in out and any(line.startswith("unfold ") and "PASS" in line for line in out.splitlines())
    assert "failed" in out.splitlines()[-1] and not out.splitlines()[-1].endswith(" 0 failed")


def test_a_kernel_that_raises_is_a_failure(monkeypatch, capsys, small_table):
    def broken_to_rgb(args):
        raise RuntimeError("illegal memory access")
    _plant(monkeypatch, "cpu", _with(to_rgb=broken_to_rgb))
    assert selfcheck.main(["--backend", "cpu", "--device", "cpu", "--dtype", "float32"]) == 1
    assert "RuntimeError: illegal memory access" in capsys.readouterr().out


def _bias_gradient_off_by(error, seen):
    """fused_leaky_relu whose output is right and whose bias gradient is (1 + error) times the true one;
    each call appends its input's dtype and the TF32 switches to ``seen``."""
    def fused_leaky_relu(args):
        seen.append((args.input.dtype, torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32))
        output = reference.fused_leaky_relu(args)
        # A zero-valued term whose bias gradient is ``error`` times the true one.
        bias = args.bias
        shifted = reference.fused_leaky_relu(args._replace(input=args.input.detach(),
                                                           bias=bias.detach() + error * (bias - bias.detach())))
        return output + (shifted - shifted.detach())
    return fused_leaky_relu


def _recording(record):
    """A backend module: the reference's ops, each calling ``record(op, first tensor)`` first."""
    def recorded(op):
        def run(args):
            record(op, args[0])
            return getattr(reference, op)(args)
        return run
    return types.SimpleNamespace(**{op: recorded(op) for op in correctness.cases_by_op()})


def _with(**ops_of_the_backend):
    """A backend module: the reference's ops, with those given instead."""
    return types.SimpleNamespace(**{**{op: getattr(reference, op) for op in correctness.cases_by_op()},
                                    **ops_of_the_backend})


# Planted as "triton": a backend the CPU's 'auto' never picks, so only a check that asks for it by name sees it.
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_a_wrong_gradient_of_one_input_is_caught_in_that_gradient_alone(monkeypatch, dtype):
    seen = []
    _plant(monkeypatch, "triton", _with(fused_leaky_relu=_bias_gradient_off_by(1e-3, seen)))
    case = correctness.cases_by_op()["fused_leaky_relu"][0]
    with correctness.tf32_mode(True):
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
    _plant(monkeypatch, "triton", _with(fused_leaky_relu=lambda args: reference.fused_leaky_relu(
        args._replace(bias=args.bias.detach()))))
    case = correctness.cases_by_op()["fused_leaky_relu"][0]
    results = correctness.check_case(case, "triton", torch.float64, "cpu")
    assert results["forward"][0] == 0 and results["grad bias"][0] == math.inf


def test_the_output_gradient_is_rounded_to_the_dtype_and_zero_near_the_kinks(monkeypatch):
    # The kinks are the reference's, whatever backend is in force: the leaky ReLU's at 0 of the
    # pre-activation, the clamp's at +-0.5 of the unclamped output.
    _plant(monkeypatch, "cpu", _with(styled_conv2d=lambda args: torch.zeros(2, 4, 6, 8, dtype=args.input.dtype)))
    ops.set_backend("cpu")
    case = correctness.find("styled conv odd up 2, shared noise, clamp 0.5")
    inputs = {name: t.detach().double() for name, t in case.inputs(torch.bfloat16).items()}
    grad_output = correctness.output_gradient(case, inputs, torch.bfloat16, seed=1)
    assert grad_output.dtype == torch.float64 and torch.equal(grad_output.bfloat16().double(), grad_output)
    pre_activation = case.call(inputs, "reference", negative_slope=1.0, gain=1.0, clamp=None)
    unclamped = case.call(inputs, "reference", clamp=None)
    assert pre_activation.abs().max() > 1 and (unclamped > 0.5).any() and (unclamped < -0.5).any()
    u = correctness.unit_roundoff(torch.bfloat16)
    near_zero = pre_activation.abs() <= correctness.SAFETY * u * pre_activation.abs().max()
    near_clamp = (unclamped.abs() - 0.5).abs() <= correctness.SAFETY * u * unclamped.abs().max()
    near = near_zero | near_clamp
    assert near_zero.any() and near_clamp.any() and (grad_output[near] == 0).all() and (grad_output[~near] != 0).all()
    # The seed decides it; an op without a kink keeps every value.
    torch.testing.assert_close(grad_output[~near], torch.randn(
        grad_output.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(1)).bfloat16().double()[~near])
    plain = correctness.find("modulated conv odd 3x3 9->4 5x7")
    assert not correctness.kinks(plain)
    inputs = {name: t.detach() for name, t in plain.inputs(torch.float64).items()}
    assert (correctness.output_gradient(plain, inputs, torch.float32, seed=1) != 0).all()


def test_the_kinks_are_the_leaky_relus_and_the_clamps():
    kinks = {case.name: correctness.kinks(case) for case in correctness.cases()}
    assert kinks["leaky relu odd 6ch 5x7, clamp 0.5"] == [
        ({"negative_slope": 1.0, "scale": 1.0, "clamp": None}, 0.0), ({"clamp": None}, 0.5)]
    assert kinks["styled conv odd 3->8 5x7, clamp 1, unfold"] == [
        ({"negative_slope": 1.0, "gain": 1.0, "clamp": None}, 0.0), ({"clamp": None}, 1.0)]
    # ToRGB's clamp cuts the layer's own output, before the skip is added.
    assert kinks["to_rgb odd 5ch 6x4 + skip, clamp 1"] == [({"clamp": None, "skip": None, "skip_kernel": None}, 1.0)]
    assert kinks["to_rgb odd 5ch 6x4 + skip"] == kinks["upfirdn2d odd 5x7 down 2"] == []


def test_with_only_the_reference_it_says_so_and_checks_it(monkeypatch, capsys, tmp_path, small_table):
    for name in ("cpu", "cuda", "triton"):
        monkeypatch.setitem(backend._reasons, name, "no C++ compiler was found (planted by the test)")
    report_path = tmp_path / "check.json"
    assert selfcheck.main(["--device", "cpu", "--speed", "--json", str(report_path)]) == 0
    out = capsys.readouterr().out
    assert "Only the reference backend can run on cpu here: it is checked in every dtype against itself in float64." \
        in out.splitlines()
    assert "no C++ compiler was found (planted by the test)" in out
    report = json.loads(report_path.read_text())
    assert report["passed"] and {r["backend"] for r in report["correctness"]} == {"reference"}
    assert {r["dtype"] for r in report["correctness"]} == {"float32", "float64", "bfloat16", "float16"}
    assert {r["op"] for r in report["correctness"]} == set(correctness.cases_by_op())
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
    assert capsys.readouterr().err.splitlines()[-1] == \
        "python -m pixelfolder_ops: error: argument --device: cuda was asked for, but PyTorch sees no CUDA GPU"


def test_every_public_op_has_cases():
    public = {"fold", "unfold", "fourier_embedding", "fused_leaky_relu", "upfirdn2d", "modulated_conv2d",
              "styled_conv2d", "to_rgb"}
    assert public <= set(ops.__all__) and set(correctness.cases_by_op()) == public


@pytest.mark.parametrize("case_name", correctness.case_names(leave_out=correctness.NOT_ON_A_CPU))
def test_each_case_calls_its_op_on_the_backend_it_is_given(monkeypatch, case_name):
    called = []
    _plant(monkeypatch, "triton", _recording(lambda op, input: called.append(op)))
    case = correctness.find(case_name)
    with ops.use_backend("reference"), torch.no_grad():
        case.call(case.inputs(torch.float32), "triton")
    assert called == [case.op]


def test_the_cases_draw_the_same_tensors_from_the_same_seed():
    for case in map(correctness.find, correctness.case_names(leave_out=correctness.NOT_ON_A_CPU)):  # not tens of MB
        first, again = (case.inputs(torch.float64, seed=3) for _ in range(2))
        assert all(torch.equal(first[name], again[name]) for name in first)
        assert set(case.make(torch.Generator().manual_seed(0))) == set(case.differentiable)


def test_a_clamp_saturates_a_good_share_of_the_outputs_on_both_sides():
    clamped = [case for case in correctness.cases() if case.option("clamp") is not None]
    assert {case.op for case in clamped} == {"fused_leaky_relu", "styled_conv2d", "to_rgb"}
    for case in clamped:
        tensors = {name: t.detach() for name, t in case.inputs(torch.float64).items()}
        overrides, clamp = correctness.kinks(case)[-1]
        value = case.call(tensors, "reference", **overrides)
        assert (value.abs() > clamp).double().mean() >= 0.25, case.name
    # Below the clamp too, where the leaky ReLU's slope is not too small for it.
    assert any((case.call({n: t.detach() for n, t in case.inputs(torch.float64).items()}, "reference",
                          **correctness.kinks(case)[-1][0]) < -case.option("clamp")).double().mean() >= 0.2
               for case in clamped if case.op == "styled_conv2d")


def test_every_layout_holds_the_same_values():
    case = correctness.find("styled conv odd 3->8 5x7, shared noise, bias, unfold")
    tensors = {layout: case.inputs(torch.float32, layout=layout) for layout in correctness.LAYOUTS}
    for layout, made in tensors.items():
        assert all(torch.equal(made[name], tensors["contiguous"][name]) for name in made)
    assert tensors["channels_last"]["input"].is_contiguous(memory_format=torch.channels_last)
    strided = tensors["strided"]["input"]
    assert not strided.is_contiguous() and not strided.is_contiguous(memory_format=torch.channels_last)
    assert strided.is_leaf and strided.requires_grad


def test_case_inputs_are_drawn_as_the_module_says():
    made = [case.make(torch.Generator().manual_seed(0)) for case in correctness.cases()
            if not set(correctness.NOT_ON_A_CPU) & case.tags]
    # Styles around 1 (s = 0.5 N(0, 1) + 1, as a trained affine gives), over every case's styles.
    styles = torch.cat([t["styles"].flatten() for t in made if "styles" in t])
    assert abs(styles.mean() - 1) < 0.05 and abs(styles.std() - 0.5) < 0.05
    # PixelFolder's Fourier initialisation: weights uniform in +-sqrt(9/2), phases in +-1/sqrt(2).
    fourier = [t for t in made if "weight" in t and t["weight"].dim() == 2]
    weights, phases = torch.cat([t["weight"].flatten() for t in fourier]), torch.cat([t["bias"] for t in fourier])
    assert -math.sqrt(9 / 2) <= weights.min() < -0.98 * math.sqrt(9 / 2) < 0.98 * math.sqrt(9 / 2) < weights.max() <= \
        math.sqrt(9 / 2)
    assert -1 / math.sqrt(2) <= phases.min() < -0.95 / math.sqrt(2) < 0.95 / math.sqrt(2) < phases.max() <= \
        1 / math.sqrt(2)
    fourier_case = correctness.cases_by_op()["fourier_embedding"][0]
    # sin's argument |B [x, y] + b| <= 2 sqrt(9/2) + 1/sqrt(2) is the factor by which it amplifies rounding.
    assert fourier_case.condition == pytest.approx(2 * math.sqrt(9 / 2) + 1 / math.sqrt(2))
    # Every other tensor N(0, 1), the FIR kernels N(0, 1) / sqrt(taps).
    normal = torch.cat([t[name].flatten() for t in made for name in ("input", "noise") if name in t])
    assert abs(normal.mean()) < 0.02 and abs(normal.std() - 1) < 0.02
    kernels = torch.cat([(t["kernel"] * t["kernel"].numel() ** 0.5).flatten() for t in made if "kernel" in t])
    assert abs(kernels.std() - 1) < 0.1


# The report itself: what python -m pixelfolder_ops prints and writes, on a few small cases, with the
# machine, the checks and the timings planted so that every value is known.

@pytest.fixture
def small_table(monkeypatch):
    """The table cut to the first small case of each op, the first three of modulated_conv2d and two of
    styled_conv2d (several cases of an op, for the worst-of rows)."""
    counts = {"modulated_conv2d": 3, "styled_conv2d": 2}
    small = tuple(case for op, op_cases in correctness.cases_by_op().items()
                  for case in [c for c in op_cases if correctness.SMALL in c.tags][:counts.get(op, 1)])
    monkeypatch.setattr(correctness, "cases", lambda: small)
    return small


def _planted_machine(monkeypatch, extension_module=None):
    """No GPU (cuDNN built in), a CPU named "Acme Turbo 9", the cpu backend the reference's ops (recording the dtype of
    every input it gets in the returned list), cuda and triton unavailable, the extension given."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.cudnn, "version", lambda: 91002)  # a CUDA build's, on a machine without a GPU
    monkeypatch.setattr(selfcheck, "_cpu_name", lambda: "Acme Turbo 9")
    cpu_calls = []
    _plant(monkeypatch, "cpu", _recording(lambda op, input: cpu_calls.append((op, input.dtype))))
    for name in ("cuda", "triton"):
        monkeypatch.setitem(backend._reasons, name, f"no {name} here (planted by the test)")
    monkeypatch.setattr(extension, "load", lambda: types.SimpleNamespace(module=extension_module))
    return cpu_calls


def _cells(line):
    return re.split(r" {2,}", line)


def _table(lines, title):
    """The rows of the table under ``title``, split into cells: the header, then the rows (the dashed
    rule checked and left out)."""
    start = lines.index(title) + 1
    header, rule = lines[start], lines[start + 1]
    assert _cells(rule) == ["-" * len(cell) for cell in _cells(rule)]
    rows = []
    for line in lines[start + 2:]:
        if not line.startswith(tuple(correctness.cases_by_op())):
            break
        rows.append(_cells(line))
    return [_cells(header)] + rows


class _ProgressBar:
    made = []

    def __init__(self, **options):
        self.options, self.updates = options, 0
        _ProgressBar.made.append(self)

    def __enter__(self):
        return self

    def __exit__(self, *exception):
        return False

    def update(self, n=1):
        self.updates += n


def _names_by_op(table):
    grouped = {}
    for case in table:
        grouped.setdefault(case.op, []).append(case.name)
    return grouped


def test_the_report_gives_the_environment_the_build_each_result_and_each_speed(monkeypatch, capsys, tmp_path,
                                                                              small_table):
    built = types.SimpleNamespace(__file__="/opt/pixelfolder/_C.so", build_info=lambda: {
        "torch_version": "2.11.0", "cuda_arch_list": ["9.0", "10.0"], "backends": []})
    cpu_calls = _planted_machine(monkeypatch, built)
    checked = []

    def check_case(case, name, dtype, device, layout):
        checked.append((case.name, name, dtype, device, layout))
        return {"forward": (0.25, 1.0), "grad input": (0.0, 1.0)}
    monkeypatch.setattr(correctness, "check_case", check_case)

    def median_seconds(function, device):
        # The planted cpu backend records its calls: 1 ms for it, 4 ms for the reference.
        before = len(cpu_calls)
        function()
        return 0.001 if len(cpu_calls) > before else 0.004
    monkeypatch.setattr(selfcheck, "_median_seconds", median_seconds)
    monkeypatch.setattr(backend, "auto_choices", lambda: {("fold", "cpu", "inference", "one shape"): "cpu",
                                                          ("fold", "cpu", "training", "another shape"): "triton",
                                                          ("fold", "cpu", "inference", "a third shape"): "reference"})
    report_path = tmp_path / "new" / "folder" / "check.json"
    assert selfcheck.main(["--dtype", "bfloat16", "--dtype", "float64", "--speed", "--json", str(report_path)]) == 0
    lines = capsys.readouterr().out.splitlines()
    try:
        import triton
        triton_version = triton.__version__
    except ImportError:
        triton_version = "none"
    assert lines[:17] == [
        "Environment",
        f"  pixelfolder_ops: {ops.__version__}",
        f"  python: {platform.python_version()}",
        f"  torch: {torch.__version__}",
        f"  cuda: {torch.version.cuda or 'none'}",
        "  cudnn: none",
        f"  cpu: Acme Turbo 9, {os.cpu_count()} cores",
        "  gpus: none",
        f"  triton: {triton_version}",
        "Build",
        "  reference: available",
        "  cpu: available",
        "  cuda: no cuda here (planted by the test)",
        "  triton: no triton here (planted by the test)",
        "  extension: /opt/pixelfolder/_C.so",
        "  built with: torch_version=2.11.0, cuda_arch_list=9.0 10.0, backends=none",
        "Correctness on cpu (worst normwise relative error against the reference in float64, forward and every "
        "gradient)",
    ]
    # The dtypes in the backend's order, not the order asked; every case of every op once per dtype and
    # layout, NCHW and channels-last.
    assert checked == [(case.name, "cpu", dtype, torch.device("cpu"), layout)
                       for dtype in (torch.float64, torch.bfloat16) for case in small_table
                       for layout in ("contiguous", "channels_last")]
    names = _names_by_op(small_table)
    op_names = list(names)
    header = ["op", "backend", "dtype", "worst error", "tolerance", "result", "worst case"]
    assert _table(lines, lines[16]) == [header] + [
        [op, "cpu", dtype, "2.50e-01", "1.00e+00", "PASS", f"{names[op][0]} (contiguous): forward"]
        for dtype in ("float64", "bfloat16") for op in op_names]
    # Speed: each op's case with the longest sum, in float32 on a CPU, and the backend auto took last.
    longest = {op: max((case for case in small_table if case.op == op), key=lambda case: case.reduction).name
               for op in op_names}
    auto = {op: "reference" if op == "fold" else "cpu" for op in op_names}
    title = "Speed on cpu (median forward time; x = reference time / backend time)"
    assert _table(lines, title) == [["op", "dtype", "reference ms", "cpu ms", "auto picks"]] + [
        [op, "float32", "4.000", "1.000 (4.00x)", auto[op]] for op in op_names]
    assert {dtype for _, dtype in cpu_calls} == {torch.float32}
    assert lines[-1] == "16 passed, 0 failed"
    assert report_path.read_text().startswith('{\n  "environment": {\n    "pixelfolder_ops": ')  # indented to be read
    report = json.loads(report_path.read_text())
    assert list(report) == ["environment", "build", "device", "correctness", "speed", "passed"]
    assert report["device"] == "cpu" and report["passed"] is True
    assert report["build"] == {
        "backends": {"reference": "available", "cpu": "available", "cuda": "no cuda here (planted by the test)",
                     "triton": "no triton here (planted by the test)"},
        "extension": {"file": "/opt/pixelfolder/_C.so", "build_info": {
            "torch_version": "2.11.0", "cuda_arch_list": ["9.0", "10.0"], "backends": []}}}
    assert report["environment"]["cpu"] == f"Acme Turbo 9, {os.cpu_count()} cores"
    assert report["speed"] == [{"op": op, "case": longest[op], "dtype": "float32",
                                "seconds": {"reference": 0.004, "cpu": 0.001}, "auto": auto[op]} for op in op_names]
    assert report["correctness"][0] == {
        "op": "fold", "backend": "cpu", "dtype": "float64", "case": names["fold"][0], "layout": "contiguous",
        "output": "forward", "error": 0.25, "tolerance": 1.0, "ratio": 0.25, "exception": None, "passed": True}


def test_each_row_is_the_worst_ratio_of_error_to_tolerance_over_the_ops_cases_and_outputs(monkeypatch, capsys,
                                                                                         tmp_path, small_table):
    _planted_machine(monkeypatch)
    names = _names_by_op(small_table)
    (fold,), (unfold,), (fourier,), (leaky,), (upfirdn,), (to_rgb,) = (
        names[op] for op in ("fold", "unfold", "fourier_embedding", "fused_leaky_relu", "upfirdn2d", "to_rgb"))
    conv, up_conv, down_conv = names["modulated_conv2d"]
    styled, other_styled = names["styled_conv2d"]
    # Per case, its outputs' (error, tolerance), or the exception its check raises; by layout where given.
    planted = {
        fold: {"forward": (0.0, 0.0)},  # exact, and right: ratio 0
        unfold: {"forward": (2.0 ** -30, 0.0)},  # exact, and wrong: an infinite ratio
        fourier: {"forward": (2.0 ** -10, 2.0 ** -10), "grad weight": (0.0, 1.0)},  # at the tolerance
        leaky: {"forward": (0.5, 1.0), "grad bias": (2.0 ** -9, 2.0 ** -10)},
        upfirdn: RuntimeError("illegal memory access\nCUDA kernel errors are reported later"),
        # The worst ratio, not the largest error; the first of two equal ratios.
        conv: {"forward": (0.5, 64.0), "grad input": (2.0 ** -10, 2.0 ** -8)},
        up_conv: {"forward": (0.25, 0.5), "grad weight": (0.125, 1.0)},
        down_conv: {"forward": (0.5, 1.0), "grad styles": (0.0, 1.0)},
        styled: {"forward": (0.125, 1.0)},
        other_styled: RuntimeError(),
        # The worst over the layouts too.
        to_rgb: {"contiguous": {"forward": (0.0, 1.0), "grad bias": (0.0, 1.0)},
                 "channels_last": {"forward": (0.0, 1.0), "grad bias": (2.0 ** -12, 2.0 ** -10)}},
    }

    def check_case(case, name, dtype, device, layout):
        result = planted[case.name]
        if isinstance(result, Exception):
            raise result
        return result.get(layout, result)
    monkeypatch.setattr(correctness, "check_case", check_case)
    _ProgressBar.made.clear()
    monkeypatch.setattr(tqdm, "tqdm", _ProgressBar)
    monkeypatch.chdir(tmp_path)
    argv = ["--backend", "reference", "--backend", "cpu", "--dtype", "float32", "--json", "check.json"]
    assert selfcheck.main(argv) == 1
    lines = capsys.readouterr().out.splitlines()
    assert not any(line.startswith("Only the reference") for line in lines)
    rows = json.loads((tmp_path / "check.json").read_text())["correctness"]
    expected = [  # op, case, layout, output, error, tolerance, ratio, exception
        ("fold", fold, "contiguous", "forward", 0.0, 0.0, 0.0, None),
        ("unfold", unfold, "contiguous", "forward", 2.0 ** -30, 0.0, math.inf, None),
        ("fourier_embedding", fourier, "contiguous", "forward", 2.0 ** -10, 2.0 ** -10, 1.0, None),
        ("fused_leaky_relu", leaky, "contiguous", "grad bias", 2.0 ** -9, 2.0 ** -10, 2.0, None),
        ("upfirdn2d", upfirdn, "contiguous", "error", math.inf, 0.0, math.inf, "RuntimeError: illegal memory access"),
        ("modulated_conv2d", up_conv, "contiguous", "forward", 0.25, 0.5, 0.5, None),
        ("styled_conv2d", other_styled, "contiguous", "error", math.inf, 0.0, math.inf, "RuntimeError: "),
        ("to_rgb", to_rgb, "channels_last", "grad bias", 2.0 ** -12, 2.0 ** -10, 0.25, None),
    ]
    backends = ("reference", "cpu")
    assert rows == [{"op": op, "backend": name, "dtype": "float32", "case": case, "layout": layout, "output": output,
                     "error": error, "tolerance": tolerance, "ratio": ratio, "exception": exception,
                     "passed": ratio <= 1}
                    for name in backends for op, case, layout, output, error, tolerance, ratio, exception in expected]
    results = {op: "PASS" if ratio <= 1 else "FAIL" for op, *_, ratio, _ in expected}
    table = _table(lines, lines[lines.index("Build") + 5])[1:]
    assert [row[:6] for row in table] == [[op, name, "float32", f"{error:.2e}", f"{tolerance:.2e}", results[op]]
                                          for name in backends for op, _, _, _, error, tolerance, _, _ in expected]
    assert [row[6] for row in table] == [
        f"{case} ({layout}): {output}" + (f" ({exception})" if exception else "")
        for name in backends for _, case, layout, output, _, _, _, exception in expected]
    assert lines[-1] == "8 passed, 8 failed"
    # One progress step per case and layout checked, on stderr (stdout is the report), gone when done.
    [bar] = _ProgressBar.made
    assert bar.options == {"total": 2 * 2 * len(small_table), "desc": "checking reference, cpu on cpu",
                           "file": sys.stderr, "leave": False, "disable": None}
    assert bar.updates == 2 * 2 * len(small_table)


def test_tables_are_left_aligned_columns_under_a_dashed_rule(capsys):
    selfcheck._print_table(["op", "x"], [["fold", "1.5"], ["a", "22222"]])
    assert capsys.readouterr().out.splitlines() == ["op    x", "----  -----", "fold  1.5", "a     22222"]
    selfcheck._print_table(["operation", "x"], [["fold", "1.5"]])  # a header wider than its column's cells
    assert capsys.readouterr().out.splitlines() == ["operation  x", "---------  ---", "fold       1.5"]


def test_build_values_are_described_on_one_line():
    assert selfcheck._describe({"arch": ["8.0", "9.0"], "nested": {"a": 1, "b": None}, "none": [], "flag": True}) == \
        "arch=8.0 9.0, nested=a=1, b=None, none=none, flag=True"
    assert selfcheck._describe(("x",)) == "x" and selfcheck._describe(3) == "3"


def test_the_cpu_is_named_from_proc_cpuinfo_else_by_the_platform(monkeypatch, tmp_path):
    cpuinfo = tmp_path / "cpuinfo"
    real_open = open
    monkeypatch.setattr(selfcheck, "open", lambda path, *args, **kwargs: real_open(
        cpuinfo if path == "/proc/cpuinfo" else path, *args, **kwargs), raising=False)
    cpuinfo.write_text("processor\t: 0\nvendor_id\t: Acme\nmodel name\t: Acme Turbo 9: the fast one  \nflags\t: fpu\n")
    assert selfcheck._cpu_name() == "Acme Turbo 9: the fast one"
    cpuinfo.write_text("processor\t: 0\nvendor_id\t: Acme\n")
    monkeypatch.setattr(platform, "processor", lambda: "acme64")
    assert selfcheck._cpu_name() == "acme64"
    cpuinfo.unlink()
    monkeypatch.setattr(platform, "processor", lambda: "")
    monkeypatch.setattr(platform, "machine", lambda: "aarch64")
    assert selfcheck._cpu_name() == "aarch64"


def test_an_extension_module_without_a_file_is_reported_as_such(monkeypatch):
    monkeypatch.setattr(extension, "load", lambda: types.SimpleNamespace(module=types.SimpleNamespace(
        build_info=lambda: {"backends": ["cpu"]})))
    assert selfcheck.build()["extension"] == {"file": None, "build_info": {"backends": ["cpu"]}}


def test_the_environment_names_every_gpu_with_its_architecture(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda index: [(9, 0), (8, 6)][index])
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda index: ["NVIDIA H200", "NVIDIA RTX A6000"][index])
    monkeypatch.setattr(torch.backends.cudnn, "version", lambda: 91002)
    monkeypatch.setitem(sys.modules, "triton", None)  # import triton fails
    info = selfcheck.environment()
    assert info["gpus"] == ["cuda:0 NVIDIA H200 (sm_90)", "cuda:1 NVIDIA RTX A6000 (sm_86)"]
    assert info["cudnn"] == 91002 and info["triton"] is None


def test_the_checked_backends_are_those_asked_for_else_the_devices_else_the_reference(monkeypatch):
    monkeypatch.setattr(backend, "available_backends", lambda: ("reference", "cpu", "cuda", "triton"))
    assert selfcheck.checked_backends(torch.device("cpu")) == ["cpu"]
    assert selfcheck.checked_backends(torch.device("cuda")) == ["cuda", "triton"]
    assert selfcheck.checked_backends(torch.device("cuda"), ("triton", "reference")) == ["triton", "reference"]
    monkeypatch.setattr(backend, "available_backends", lambda: ("reference", "triton"))
    assert selfcheck.checked_backends(torch.device("cpu")) == ["reference"]
    assert selfcheck.checked_backends(torch.device("cuda")) == ["triton"]
    assert selfcheck.checked_backends(torch.device("meta")) == ["reference"]  # a device no backend prefers


def test_an_ops_time_is_the_median_of_seven_timed_calls_after_an_untimed_one(monkeypatch):
    ticks = iter([0, 5, 10, 11, 20, 24, 30, 32, 40, 43, 50, 57, 60, 66])  # 5, 1, 4, 2, 3, 7, 6
    monkeypatch.setattr(selfcheck, "time", types.SimpleNamespace(perf_counter=lambda: next(ticks)))
    calls = []
    assert selfcheck._median_seconds(lambda: calls.append(1), torch.device("cpu")) == 4
    assert len(calls) == 8
    # On a GPU each timed call is bracketed by synchronisations of its device (kernels run asynchronously).
    ticks = iter(range(14))
    synchronized = []
    monkeypatch.setattr(torch.cuda, "synchronize", lambda device: synchronized.append(("sync", device)))
    selfcheck._median_seconds(lambda: synchronized.append("call"), torch.device("cuda", 1))
    assert synchronized == ["call"] + ([("sync", torch.device("cuda", 1)), "call", ("sync", torch.device("cuda", 1))]
                                       * 7)


def test_the_arguments_are_read_as_the_help_says(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    args = selfcheck._parse([])
    assert args.device == torch.device("cuda") and args.backend is None and args.dtype is None
    assert not args.speed and args.json is None
    args = selfcheck._parse(["--device", "cpu", "--dtype", "float16", "--dtype", "float64", "--backend", "reference",
                             "--speed", "--json", "out.json"])
    assert args.device == torch.device("cpu") and args.dtype == [torch.float16, torch.float64]
    assert args.backend == ["reference"] and args.speed and args.json == "out.json"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert selfcheck._parse([]).device == torch.device("cpu")


def test_the_help_describes_every_option(monkeypatch, capsys):
    monkeypatch.setenv("COLUMNS", "400")  # one line per option
    with pytest.raises(SystemExit) as exit_info:
        selfcheck.main(["--help"])
    assert exit_info.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    for part in [
            "usage: python -m pixelfolder_ops [-h] [--device DEVICE] [--backend NAME] [--dtype NAME] [--speed] "
            "[--json FILE]",
            "python -m pixelfolder_ops (also pixelfolder-ops-check): what this install is, and whether every kernel it "
            "built computes the right thing on this machine. options:",
            "--device DEVICE the device to check (default: cuda if a GPU is visible, else cpu)",
            "--backend NAME check only this backend (repeatable); default: every available one",
            "--dtype NAME check only this dtype (repeatable): float32, float64, bfloat16, float16; default: all",
            "--speed also time each op against the reference",
            "--json FILE write everything to FILE as JSON"]:
        assert part in text


def test_an_unavailable_backend_a_bad_device_or_a_folder_for_the_json_are_one_line_errors(monkeypatch, capsys,
                                                                                         tmp_path):
    monkeypatch.setitem(backend._reasons, "triton", "no triton here (planted by the test)")
    for argv, message in [
            (["--backend", "triton"], "argument --backend: backend 'triton' is unavailable here: no triton here "
                                      "(planted by the test)"),
            (["--device", "cuda:x"], "argument --device: expected cpu or cuda[:N], got 'cuda:x'"),
            (["--device", "meta"], "argument --device: expected cpu or cuda[:N], got 'meta'"),  # a device, not ours
            (["--json", str(tmp_path)], f"argument --json: expected a file path, got the folder {str(tmp_path)!r}")]:
        with pytest.raises(SystemExit) as exit_info:
            selfcheck.main(argv)
        assert exit_info.value.code == 2
        assert capsys.readouterr().err.splitlines()[-1] == f"python -m pixelfolder_ops: error: {message}"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU: the speed dtype and device on a GPU")
def test_speed_on_a_gpu_is_timed_in_bfloat16_on_the_gpu(monkeypatch, small_table):
    inputs = []
    _plant(monkeypatch, "triton", _recording(lambda op, input: inputs.append((input.device.type, input.dtype))))
    rows = selfcheck.speed_rows(torch.device("cuda"), ["triton"])
    assert {row["dtype"] for row in rows} == {"bfloat16"} and all(row["seconds"]["triton"] > 0 for row in rows)
    assert inputs and set(inputs) == {("cuda", torch.bfloat16)}
