"""The Table 1 command end to end, on a subset of the generators."""
import json

import pytest

from benchmarks import table1


def test_table1_json_and_markdown(tmp_path, capsys):
    json_path, markdown_path = tmp_path / "table1.json", tmp_path / "table1.md"
    table1.main(["--models", "PixelFolder", "--device", "cpu", "--repeats", "1", "--warmup", "0",
                 "--json", str(json_path), "--markdown", str(markdown_path)])
    report = json.loads(json_path.read_text())
    row = report["models"]["PixelFolder"]
    assert report["batch"] == 1 and report["dtype"] == "float32" and report["device"].startswith("CPU")
    assert row["params"] == 20_843_614
    assert round(row["gmacs"], 2) == 23.75 and round(row["gmacs_paper_convention"], 2) == 23.74
    assert row["im_per_s"] > 0 and row["paper"]["im_per_s"] == 77.735
    table = markdown_path.read_text()
    assert "| PixelFolder | 20,843,614 | 20.84 | 23.75 | 23.74 | 23.78 |" in table
    assert table in capsys.readouterr().out


def test_table1_rejects_unknown_models():
    with pytest.raises(SystemExit):
        table1.main(["--models", "BigGAN"])
