"""The whole-model benchmarks run end to end and report what they cannot run; the GPU report judges
the targets from their results."""
import json
import sys

import pytest

import models
from benchmarks import export_speed, gpu_report, model_speed, profile_model, styled_conv_speed, train_speed
from benchmarks.complexity import count_gmacs, gmacs_per_image_and_call


@pytest.mark.slow
def test_model_speed_report(tmp_path, monkeypatch):
    monkeypatch.setenv("PIXELFOLDER_OPS_BACKEND", "reference")
    report = model_speed.main(["--out", str(tmp_path), "--device", "cpu", "--models", "PixelFolder",
                               "--batches", "1", "--dtypes", "float32", "--modes", "reference,reference_hoisted,cudagraphs",
                               "--warmup", "0", "--repeats", "1"])
    saved = json.loads((tmp_path / "model_speed.json").read_text())
    assert saved["results"] == json.loads(json.dumps(report["results"]))
    reference, hoisted, graphs = saved["results"]
    assert reference["mode"] == "reference" and reference["im_per_s"] > 0 and reference["tflops"] > 0
    assert reference["speedup_vs_reference"] == 1.0 and "speedup_vs_reference_hoisted" not in reference
    assert hoisted["speedup_vs_reference_hoisted"] == 1.0
    assert hoisted["speedup_vs_reference"] == hoisted["im_per_s"] / reference["im_per_s"]
    # one image: the hoisted branch runs once either way, so both flows perform the same FLOPs
    assert abs(hoisted["gflop_per_image"] / reference["gflop_per_image"] - 1) < 1e-9
    assert graphs["error"] == "RuntimeError: CUDA graphs need a CUDA device"
    text = (tmp_path / "model_speed.md").read_text()
    assert "| PixelFolder | float32 | 1 | reference |" in text and "| PixelFolder | float32 | 1 | reference_hoisted |" in text


def test_hoisted_positional_branch_is_counted_once_per_call():
    """The official data flow repeats PixelFolder's positional branch for every image; hoisted, a call
    performs it once (both make the Fourier features once per call). Both do the same work for one image."""
    def small(official):
        return models.PixelFolder(64, width=0.125, official_data_flow=official)

    official_per_image, official_per_call = gmacs_per_image_and_call(small(True))
    hoisted_per_image, hoisted_per_call = gmacs_per_image_and_call(small(False))
    assert hoisted_per_call - official_per_call > 0.03 * official_per_image
    assert abs(hoisted_per_image + hoisted_per_call - (official_per_image + official_per_call)) < 1e-9
    assert abs(count_gmacs(small(False), batch=3) - (3 * hoisted_per_image + hoisted_per_call)) < 1e-9


def test_model_speed_rejects_unknown_modes(tmp_path):
    with pytest.raises(SystemExit):
        model_speed.main(["--out", str(tmp_path), "--modes", "fastest"])


@pytest.mark.slow
def test_export_speed_times_every_mode_at_every_batch_in_rounds(tmp_path):
    pytest.importorskip("onnxruntime")
    modes = ["eager", "eager-reference", "export", "onnx", "onnx-dynamic"]
    export_speed.main(["--out", str(tmp_path), "--size", "16", "--batches", "1,2", "--modes", ",".join(modes),
                       "--backend", "reference", "--warmup", "0", "--repeats", "2"])
    saved = json.loads((tmp_path / "export_speed.json").read_text())
    rows = saved["rows"]
    assert [(row["batch"], row["mode"]) for row in rows] == [(batch, mode) for batch in (1, 2) for mode in modes]
    for row in rows:
        low, high = row["im_per_s_iqr"]
        assert len(row["seconds"]) == 2 and 0 < low <= row["im_per_s"] <= high
    assert [row["speedup_vs_eager"] for row in rows if row["mode"] == "eager"] == [1.0, 1.0]
    assert saved["environment"]["onnxruntime"] and saved["environment"]["onnxruntime_threads"] >= 1
    assert "| 2 | onnx-dynamic |" in (tmp_path / "export_speed.md").read_text()


def test_export_speed_needs_eager_to_compare_with(tmp_path):
    with pytest.raises(SystemExit):
        export_speed.main(["--out", str(tmp_path), "--modes", "onnx"])


@pytest.mark.slow
def test_train_speed_report(tmp_path):
    report = train_speed.main(["--out", str(tmp_path), "--device", "cpu", "--models", "PixelFolder",
                               "--modes", "reference,cuda", "--batch", "2", "--size", "16", "--width", "0.0625",
                               "--r1-every", "2", "--cycles", "1", "--amp", "none"])
    reference, cuda = json.loads((tmp_path / "train_speed.json").read_text())["results"]
    assert reference == json.loads(json.dumps(report["results"][0]))
    assert reference["im_per_s"] > 0 and reference["speedup_vs_reference"] == 1.0
    assert cuda["error"].startswith("BackendUnavailableError: pixelfolder_ops: backend 'cuda' is unavailable")
    assert "| PixelFolder | reference |" in (tmp_path / "train_speed.md").read_text()


@pytest.mark.slow
def test_profile_report_lists_kernels_by_time(tmp_path):
    report = profile_model.main(["--out", str(tmp_path), "--device", "cpu", "--backend", "reference", "--batch", "1",
                                 "--dtype", "float32", "--train-batch", "2", "--size", "16", "--width", "0.0625",
                                 "--repeats", "1", "--rows", "5"])
    inference, training = report["profiles"].values()
    for table in (inference, training):
        times = [k["ms"] for k in table["kernels"]]
        assert len(times) == 5 and times == sorted(times, reverse=True) and sum(times) <= table["total_ms"]
    assert any("convolution" in k["name"] for k in inference["kernels"])
    assert "### PixelFolder training" in (tmp_path / "profile.md").read_text()


def styled_conv_layer(forward_ms=None, backward_ms=None, errors=None):
    forward_ms = forward_ms or {}
    return {"in_channels": 512, "out_channels": 256, "resolution": 64, "unfold_output": False, "gflop": 1.0,
            "forward_ms": forward_ms, "forward_tflops": {n: 1.0 / ms for n, ms in forward_ms.items()},
            "forward_backward_ms": {}, "backward_ms": backward_ms or {}, "errors": errors or {}}


def test_styled_conv_speed_report_lists_every_mode_and_what_could_not_run():
    layer = styled_conv_layer(forward_ms={"reference": 4.0, "unfused (cuDNN)": 2.0, "cuda": 1.6, "triton": 1.0},
                              backward_ms={"reference": 9.0, "unfused (cuDNN)": 5.0, "cuda": 4.0, "triton": 1.6},
                              errors={"auto": "BackendUnavailableError: no"})
    report = {"batch": 32, "dtype": "bf16", "device": "test", "torch": "t", "triton": "t", "cuda": "c", "date": "d",
              "repeats": 1, "warmup": 0, "matmul_tflops": 1.0, "layers": [layer]}
    assert styled_conv_speed.backward_speedups(report) == [2.5]
    text = styled_conv_speed.markdown(report)
    assert "Not measured: auto: BackendUnavailableError: no" in text
    assert "| 512 -> 256 @ 64 | no | 4.000 (0) | 2.000 (0) | 1.600 (1) | 1.000 (1) | - | 2.00x | 1.60x |" in text
    assert "| 512 -> 256 @ 64 | no | 9.000 | 5.000 | 4.000 | 1.600 | - | 2.50x |" in text
    assert "All 12 layers, backward: reference 9.00 ms" in text and "auto" not in text.split("All 12 layers")[1]


def test_gpu_report_targets_are_judged_from_the_same_runs():
    def inference(mode, im_per_s, model="PixelFolder", batch=128):
        return {"model": model, "dtype": "bfloat16", "batch": batch, "mode": mode, "im_per_s": im_per_s}

    def training(mode, im_per_s, memory):
        return {"model": "PixelFolder", "mode": mode, "im_per_s": im_per_s, "peak_mib_per_image": memory}

    steps = {
        "gpu_tests": {"status": "ok"},
        "model_speed": {"results": {"model_speed.json": {"results": [
            inference("reference", 2000), inference("reference_hoisted", 2500), inference("cuda", 7000),
            inference("cudagraphs", 8000),
            inference("cudagraphs", 99999, batch=32), inference("cudagraphs", 99999, model="StyleGAN2"),
            {"model": "PixelFolder", "dtype": "bfloat16", "batch": 128, "mode": "triton", "error": "no"}]}}},
        "model_speed_compile": {"results": {"model_speed.json": {"results": [
            inference("compile", 6000), inference("auto", 8000)]}}},
        "train_speed": {"results": {"train_speed.json": {"results": [
            training("reference", 100, 50.0), training("auto", 250, 25.0)]}}},
    }
    rows = {what: (measured, met) for what, measured, _, met, _ in gpu_report.targets(steps)}
    backward = "StyledConv backward, triton over the cuda composite (slowest of the 12 layers)"
    assert rows[backward] == (None, None)  # styled_conv_speed did not run
    steps["styled_conv_speed"] = {"results": {"results.json": {"layers": [
        styled_conv_layer(backward_ms={"cuda": 3.0, "triton": 1.0}),
        styled_conv_layer(backward_ms={"cuda": 3.0, "triton": 2.0})]}}}
    rows = {what: (measured, met) for what, measured, _, met, _ in gpu_report.targets(steps)}
    assert rows[backward] == (1.5, False)  # the slowest layer decides: 3 / 2 < 2
    assert rows["inference im/s, batch 128 (fastest fused mode)"] == (8000, True)
    assert rows["inference vs the reference"] == (4.0, True)
    assert rows["inference vs torch.compile of the reference"][1] is False  # 8000 / 6000 < 1.5
    assert rows["training im/s vs the reference"] == (2.5, True)
    assert rows["training im/s vs torch.compile of the reference"] == (None, None)  # no compile row
    assert rows["training peak memory per image vs the reference"] == (0.5, True)
    assert gpu_report.data_flow_split(steps) == (1.25, 3.2)  # 2500 / 2000; 8000 / 2500
    text = gpu_report.targets_markdown(gpu_report.targets(steps), "ok", gpu_report.data_flow_split(steps))
    assert "| training im/s vs torch.compile of the reference | not measured | >= 1.3 | - |" in text
    assert "1.25x is the data flow" in text and "3.20x the kernels" in text
    assert "Where the time goes" in text and "No target is met" not in text

    for correctness in ("failed (exit 1)", None):  # the GPU tests failed, or did not run in this command
        steps["gpu_tests"] = {"status": correctness}
        rows = {what: (measured, met) for what, measured, _, met, _ in gpu_report.targets(steps)}
        assert rows["inference im/s, batch 128 (fastest fused mode)"] == (8000, False)
        assert rows["training im/s vs torch.compile of the reference"] == (None, None)
        text = gpu_report.targets_markdown(gpu_report.targets(steps), correctness)
        assert "No target is met: the correctness step (gpu_tests) " + (correctness or "did not run") in text
        assert "| yes |" not in text


def test_gpu_report_keeps_to_its_budget_and_writes_after_every_step(tmp_path, monkeypatch):
    results = tmp_path / "results"
    write = f"import os; os.makedirs({str(results)!r}, exist_ok=True); open({str(results / 'r.md')!r}, 'w').write('table')"
    fake_steps = [("one", [sys.executable, "-c", write], str(results), 60),
                  ("two", [sys.executable, "-c", "import time; time.sleep(3)"], None, 60),
                  ("three", [sys.executable, "-c", "pass"], None, 60)]
    monkeypatch.setattr(gpu_report, "steps", lambda scratch, skip_compile: fake_steps)
    monkeypatch.setattr(gpu_report.torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(gpu_report, "environment", lambda device: dict.fromkeys(
        ("device", "driver", "cuda", "torch", "triton", "date"), "test"))
    out = tmp_path / "out"
    gpu_report.main([str(out), "--budget", "62"])
    statuses = {name: step["status"] for name, step in json.loads((out / "report.json").read_text())["steps"].items()}
    assert statuses["one"] == statuses["two"] == "ok"
    assert statuses["three"].startswith("skipped (")  # under a minute of the budget was left
    report = (out / "report.md").read_text()
    assert "## one: ok" in report and "table" in report and "## Targets" in report
    gpu_report.main([str(out), "--steps", "one,three"])
    assert list(json.loads((out / "report.json").read_text())["steps"]) == ["one", "three"]


def test_gpu_report_runs_the_self_check_first_after_the_build():
    steps = gpu_report.steps("/scratch", skip_compile=True)
    assert [name for name, *_ in steps][:3] == ["build", "selfcheck", "gpu_tests"]
    command = dict((name, command) for name, command, *_ in steps)["selfcheck"]
    assert command[1:3] == ["-m", "pixelfolder_ops"] and "--json" in command
