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


def test_relative_error_flags_wrong_shapes_and_non_finite_values():
    x = torch.randn(3, 4, dtype=torch.float64)
    assert correctness.relative_error(x, x) == 0
    assert correctness.relative_error(x[:2], x) == math.inf
    assert correctness.relative_error(torch.full_like(x, math.nan), x) == math.inf
    assert correctness.relative_error(x * (1 + 1e-3), x) == pytest.approx(1e-3, rel=1e-6)


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
