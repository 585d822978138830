"""The whole-model speed benchmark runs end to end and reports what it cannot run."""
import json

import pytest

from benchmarks import model_speed, train_speed


def test_model_speed_report(tmp_path, monkeypatch):
    monkeypatch.setenv("PIXELFOLDER_OPS_BACKEND", "reference")
    report = model_speed.main(["--out", str(tmp_path), "--device", "cpu", "--models", "PixelFolder",
                               "--batches", "1", "--dtypes", "float32", "--modes", "reference,cudagraphs",
                               "--warmup", "0", "--repeats", "1"])
    saved = json.loads((tmp_path / "model_speed.json").read_text())
    assert saved["results"] == json.loads(json.dumps(report["results"]))
    reference, graphs = saved["results"]
    assert reference["mode"] == "reference" and reference["im_per_s"] > 0 and reference["tflops"] > 0
    assert reference["speedup_vs_reference"] == 1.0
    assert graphs["error"] == "RuntimeError: CUDA graphs need a CUDA device"
    assert "| PixelFolder | float32 | 1 | reference |" in (tmp_path / "model_speed.md").read_text()


def test_model_speed_rejects_unknown_modes(tmp_path):
    with pytest.raises(SystemExit):
        model_speed.main(["--out", str(tmp_path), "--modes", "fastest"])


def test_train_speed_report(tmp_path):
    report = train_speed.main(["--out", str(tmp_path), "--device", "cpu", "--models", "PixelFolder",
                               "--modes", "reference,cuda", "--batch", "2", "--size", "16", "--width", "0.0625",
                               "--r1-every", "2", "--cycles", "1", "--amp", "none"])
    reference, cuda = json.loads((tmp_path / "train_speed.json").read_text())["results"]
    assert reference == json.loads(json.dumps(report["results"][0]))
    assert reference["im_per_s"] > 0 and reference["speedup_vs_reference"] == 1.0
    assert cuda["error"].startswith("BackendUnavailableError: pixelfolder_ops: backend 'cuda' is unavailable")
    assert "| PixelFolder | reference |" in (tmp_path / "train_speed.md").read_text()
