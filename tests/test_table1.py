"""The Table 1 command end to end, on a subset of the generators."""
import json

import pytest

import models
from benchmarks import table1


@pytest.mark.slow
def test_table1_json_and_markdown(tmp_path, capsys):
    json_path, markdown_path = tmp_path / "table1.json", tmp_path / "table1.md"
    table1.main(["--models", "PixelFolder", "--device", "cpu", "--repeats", "1", "--warmup", "0",
                 "--json", str(json_path), "--markdown", str(markdown_path)])
    report = json.loads(json_path.read_text())
    row = report["models"]["PixelFolder"]
    assert report["batch"] == 1 and report["dtype"] == "float32" and report["device"].startswith("CPU")
    assert report["repeats"] == 1 and report["warmup"] == 0
    assert row["params"] == 20_843_614
    assert round(row["gmacs"], 2) == 23.75 and round(row["gmacs_paper_convention"], 2) == 23.74
    assert row["im_per_s"] > 0 and row["im_per_s_iqr"] == [row["im_per_s"]] * 2 and row["paper"]["im_per_s"] == 77.735
    table = markdown_path.read_text()
    assert "| PixelFolder | 20,843,614 | 20.84 | 23.75 | 23.74 | 23.78 |" in table
    assert table in capsys.readouterr().out


@pytest.mark.slow
def test_table1_interleaves_the_models_and_reports_the_spread(tmp_path, monkeypatch):
    """Each round runs every model once, in turn; the progress bar counts the extension load, each
    model's counting and every timed or warm-up forward."""
    calls = []

    def small_generator(name, **kwargs):
        generator = models.PixelFolder(64, width=0.125)
        generator.register_forward_hook(lambda *_: calls.append(name))
        return generator

    monkeypatch.setattr(table1, "build_generator", small_generator)
    steps = []
    monkeypatch.setattr(table1.tqdm, "update", lambda self, n=1: steps.append(n))
    report = table1.main(["--models", "PixelFolder,StyleGAN2", "--device", "cpu", "--backend", "cpu",
                          "--warmup", "1", "--repeats", "4"])
    assert calls[-10:] == ["PixelFolder", "StyleGAN2"] * 5  # after the forwards that count the GMACs
    assert len(steps) == 1 + 2 * (1 + 1 + 4)
    for row in report["models"].values():
        low, high = row["im_per_s_iqr"]
        assert low <= row["im_per_s"] <= high


@pytest.mark.parametrize("flag, value", [("--models", "BigGAN"), ("--repeats", "0"), ("--warmup", "-1"),
                                         ("--batch", "0")])
def test_table1_rejects_bad_arguments(flag, value, capsys):
    with pytest.raises(SystemExit) as exit:
        table1.main([flag, value])
    assert exit.value.code != 0
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert flag.lstrip("-") in error and value in error
