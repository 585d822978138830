"""A command whose optional extra is not installed exits with one line naming the extra."""
import os
import runpy
import subprocess
import sys
import tomllib

import pytest

from training import extras

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Every command of training/ and benchmarks/ that needs an extra, and the extras it needs.
COMMANDS = {
    "training.train": ("train",),
    "training.generate": ("train",),
    "training.evaluate": ("train",),
    "training.prepare_data": ("train",),
    "training.export": ("train",),
    "benchmarks.table1": ("bench",),
    "benchmarks.model_speed": ("bench",),
    "benchmarks.learning": ("train", "digits"),
    "benchmarks.train_speed": ("train",),
    "benchmarks.profile_model": ("train",),
    "benchmarks.byte_ledger": ("triton",),
}


def run_as_command(module):
    """What ``python -m module`` does, in this process; the SystemExit it ends with."""
    with pytest.raises(SystemExit) as exit_info:
        runpy.run_module(module, run_name="__main__", alter_sys=True)
    return exit_info.value


@pytest.mark.parametrize("command, extra, module", [(command, extra, module) for command, needed in COMMANDS.items()
                                                    for extra in needed for module in extras.MODULES[extra]])
def test_a_command_without_a_module_of_its_extra_names_the_extra_in_one_line(command, extra, module, monkeypatch):
    monkeypatch.setitem(sys.modules, module, None)  # a None entry makes the import fail, as if not installed
    monkeypatch.setattr(sys, "argv", [command])
    message = str(run_as_command(command).code)
    assert message == (f"python -m {command} needs the [{extra}] extra ({module} cannot be imported): "
                       f"pip install '.[{extra}]'")


def test_a_fresh_python_without_lmdb_stops_before_importing_torch(tmp_path):
    stub = tmp_path / "lmdb"
    stub.mkdir()
    (stub / "__init__.py").write_text("raise ImportError('lmdb is not installed')\n")
    code = "import runpy, sys; runpy.run_module('training.prepare_data', run_name='__main__', alter_sys=True)"
    result = subprocess.run([sys.executable, "-c", code + "; print(sorted(sys.modules))"], cwd=ROOT,
                            capture_output=True, text=True, env={**os.environ, "PYTHONPATH": f"{tmp_path}:{ROOT}"})
    assert result.returncode == 1 and result.stdout == ""
    assert result.stderr.strip().splitlines() == [
        "python -m training.prepare_data needs the [train] extra (lmdb cannot be imported): pip install '.[train]'"]


def test_imported_as_a_module_a_command_checks_nothing(monkeypatch):
    """Only the command run checks: importing its module raises the missing import as usual."""
    monkeypatch.setitem(sys.modules, "lmdb", None)
    monkeypatch.delitem(sys.modules, "training.prepare_data", raising=False)
    monkeypatch.delitem(sys.modules, "training.data", raising=False)
    with pytest.raises(ImportError, match="lmdb"):
        import training.prepare_data  # noqa: F401


def test_with_every_module_installed_the_check_passes():
    for extra in extras.MODULES:
        assert extras.missing_modules(extra) == [], extra
        extras.require(extra)


def test_each_extra_named_is_declared_and_the_test_extra_holds_them_all():
    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as file:
        declared = tomllib.load(file)["project"]["optional-dependencies"]
    assert set(extras.MODULES) <= set(declared)
    (self_reference,) = [entry for entry in declared["test"] if entry.startswith("pixelfolder-ops[")]
    assert set(self_reference[len("pixelfolder-ops["):-1].split(",")) == set(extras.MODULES)
