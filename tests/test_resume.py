"""A run never loses work: resume keeps the run's settings, a divergence stops the run before it writes
bad weights, SIGINT / SIGTERM save before stopping, a killed save's leftovers go, and a damaged latest
checkpoint falls back to the previous one."""
import logging
import os
import shutil
import signal
import threading

import pytest
import torch

from helpers import command_line, tiny_config
from training import generate
from training.checkpoint import LATEST, PREVIOUS, load_checkpoint, save_checkpoint
from training.config import TrainConfig
from training.train import StopRequests, Trainer, TrainingDiverged, configure, main


def run_main(argv):
    """main(argv)'s exit status (0 when it returns)."""
    try:
        main(argv)
    except SystemExit as exit_info:
        return exit_info.code
    return 0


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """A run of 2 steps with a checkpoint at each, and settings that differ from the defaults."""
    out = tmp_path_factory.mktemp("finished")
    assert run_main(command_line(out, steps=2, checkpoint_every=1, lr=0.003, batch=4, seed=7)) == 0
    return out


@pytest.fixture
def copied_run(finished_run, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(finished_run, out)
    return out


def test_the_readme_resume_line_continues_with_the_runs_own_settings(finished_run):
    config = configure(["--resume", "auto", "--out", str(finished_run)])
    saved = load_checkpoint(str(finished_run / LATEST))["config"]
    assert config == TrainConfig.from_dict({**saved, "resume": str(finished_run / LATEST)})
    assert (config.dataset, config.batch, config.lr, config.seed, config.size) == ("procedural", 4, 0.003, 7, 16)
    # Resumed by its folder or file, a run goes on writing where its checkpoint is.
    for resume in (finished_run, finished_run / PREVIOUS):
        config = configure(["--resume", str(resume)])
        assert (config.out, config.resume) == (str(finished_run), str(resume if resume.is_file() else resume / LATEST))


def test_explicit_flags_override_the_checkpoint_and_each_is_printed(copied_run, caplog):
    caplog.set_level(logging.INFO)
    assert run_main(["--resume", "auto", "--out", str(copied_run), "--steps", "3", "--lr", "0.001"]) == 0
    checkpoint = load_checkpoint(str(copied_run / LATEST))
    assert checkpoint["step"] == 3
    assert (checkpoint["config"]["lr"], checkpoint["config"]["seed"], checkpoint["config"]["steps"]) == (0.001, 7, 3)
    assert "--steps 3 overrides the checkpoint's 2" in caplog.text
    assert "--lr 0.001 overrides the checkpoint's 0.003" in caplog.text
    assert "--seed" not in caplog.text  # not given: nothing to say
    assert f"finished at step 3; the checkpoint is {copied_run / LATEST}" in caplog.text


@pytest.mark.parametrize("argv", [["--width", "0.5"], ["--size", "32"], ["--model", "StyleGAN2"]])
def test_an_override_that_changes_the_networks_is_an_error(finished_run, capsys, argv):
    assert run_main(["--resume", "auto", "--out", str(finished_run)] + argv) == 1
    error = capsys.readouterr().err
    assert f"argument {argv[0]}: a resumed run keeps the networks of its checkpoint" in error


def test_a_divergence_stops_the_run_and_keeps_the_good_checkpoints(copied_run, capsys):
    before = {name: (copied_run / name).read_bytes() for name in (LATEST, PREVIOUS)}
    assert run_main(["--resume", "auto", "--out", str(copied_run), "--steps", "6", "--lr", "1e30",
                     "--checkpoint-every", "1"]) == 1
    error = capsys.readouterr().err
    assert "training diverged at step 3" in error and "not finite" in error
    assert f"{copied_run / LATEST} holds the last good weights" in error and "--lr 5e+29" in error
    assert {name: (copied_run / name).read_bytes() for name in before} == before


def test_non_finite_weights_are_never_written(tmp_path):
    trainer = Trainer(tiny_config(tmp_path, steps=3, checkpoint_every=1))
    step = trainer.train_step

    def step_then_break_a_weight():
        losses = step()
        if trainer.step == 2:
            with torch.no_grad():
                next(trainer.g_ema.parameters()).fill_(float("inf"))  # the losses stay finite
        return losses

    trainer.train_step = step_then_break_a_weight
    with pytest.raises(TrainingDiverged, match=r"step 2: g_ema\.\S+ are not finite.*holds the last good weights"):
        trainer.run()
    assert load_checkpoint(str(tmp_path / LATEST))["step"] == 1


@pytest.mark.parametrize("signal_number", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
@pytest.mark.slow
def test_a_signal_saves_at_the_step_reached_and_says_where(tmp_path, monkeypatch, caplog, signal_number):
    step = Trainer.train_step

    def step_then_signal(self):
        losses = step(self)
        if self.step == 2:
            os.kill(os.getpid(), signal_number)
        return losses

    monkeypatch.setattr(Trainer, "train_step", step_then_signal)
    caplog.set_level(logging.INFO)
    handlers = {number: signal.getsignal(number) for number in (signal.SIGINT, signal.SIGTERM)}
    assert run_main(command_line(tmp_path, steps=50)) == 128 + signal_number
    assert load_checkpoint(str(tmp_path / LATEST))["step"] == 2
    name = signal.Signals(signal_number).name
    assert (f"{name}: stopping at the end of this step, after writing a checkpoint (Ctrl-C again to quit at once, "
            "without one)") in [record.getMessage() for record in caplog.records]
    assert f"stopped by {name} at step 2, checkpoint written to {tmp_path / LATEST}" in caplog.text
    assert {number: signal.getsignal(number) for number in handlers} == handlers  # the previous handlers are back


@pytest.mark.slow
def test_a_second_ctrl_c_stops_at_once_without_saving(tmp_path, monkeypatch, capsys):
    step = Trainer.train_step

    def step_then_two_ctrl_c(self):
        losses = step(self)
        if self.step == 2:
            os.kill(os.getpid(), signal.SIGINT)
            os.kill(os.getpid(), signal.SIGINT)
        return losses

    monkeypatch.setattr(Trainer, "train_step", step_then_two_ctrl_c)
    assert run_main(command_line(tmp_path, steps=50)) == 128 + signal.SIGINT
    assert capsys.readouterr().err.endswith(
        "error: interrupted by Ctrl-C: nothing was written since the last checkpoint\n")
    assert not os.path.exists(tmp_path / LATEST)


def test_a_run_removes_the_temporary_files_a_killed_save_left(tmp_path, caplog):
    leftovers = [tmp_path / f".{LATEST}.x1y2.tmp", tmp_path / f".{LATEST}.x1y2.tmp.previous"]
    unrelated = tmp_path / ".notes.tmp"
    for path in leftovers + [unrelated]:
        path.write_bytes(b"\0" * 1024)
    caplog.set_level(logging.INFO)
    Trainer(tiny_config(tmp_path, steps=1))
    assert not any(path.exists() for path in leftovers) and unrelated.exists()
    assert "removed 2 temporary checkpoint file(s)" in caplog.text


def test_a_damaged_latest_checkpoint_falls_back_to_the_previous_one(copied_run, caplog, capsys):
    latest = copied_run / LATEST
    latest.write_bytes(latest.read_bytes()[:5000])
    # Named explicitly, the error shows the way back.
    assert run_main(["--resume", str(latest), "--steps", "3"]) == 1
    assert f"the checkpoint before it is {copied_run / PREVIOUS}" in capsys.readouterr().err
    # As a run folder (or --resume auto), the previous one is used, saying so.
    caplog.set_level(logging.INFO)
    assert run_main(["--resume", "auto", "--out", str(copied_run), "--steps", "3", "--checkpoint-every", "100"]) == 0
    assert f"using {copied_run / PREVIOUS} (step 1) instead" in caplog.text
    assert "resumed from" in caplog.text and "at step 1" in caplog.text
    # The damaged file was replaced, and did not push the good previous checkpoint out.
    assert load_checkpoint(str(latest))["step"] == 3
    assert load_checkpoint(str(copied_run / PREVIOUS))["step"] == 1
    assert generate.load_generator(str(copied_run)).size == 16


@pytest.mark.parametrize("count, more", [(3, ""), (4, " and 1 more"), (5, " and 2 more")])
def test_the_first_three_non_finite_tensors_are_named_and_the_rest_counted(tmp_path, count, more):
    trainer = Trainer(tiny_config(tmp_path, steps=1))
    floating = [name for name, tensor in trainer.g_ema.state_dict().items() if tensor.is_floating_point()]
    with torch.no_grad():
        for name in floating[:count]:
            trainer.g_ema.state_dict()[name].fill_(float("nan"))
    with pytest.raises(TrainingDiverged) as error:
        trainer.save()
    first = ", ".join(f"g_ema.{name}" for name in floating[:3])
    assert str(error.value) == (f"training diverged at step 0: {first}{more} are not finite. No checkpoint was "
                                f"written: start again with a lower --lr (now 0.002; try 0.001).")
    assert not os.path.exists(tmp_path / LATEST)


def test_a_finished_run_resumed_with_the_same_steps_does_nothing_and_says_so(copied_run, monkeypatch, caplog):
    returned = []
    run = Trainer.run
    monkeypatch.setattr(Trainer, "run", lambda trainer: returned.append(run(trainer)))
    caplog.set_level(logging.INFO)
    assert run_main(["--resume", "auto", "--out", str(copied_run)]) == 0
    assert returned == [None]
    assert caplog.records[-1].getMessage() == "the run is at step 2 already, --steps is 2: nothing to do"
    assert "finished at step" not in caplog.text


def test_a_resume_names_each_changed_setting_once_and_warns_of_those_that_change_the_run(finished_run, copied_run,
                                                                                         caplog):
    caplog.set_level(logging.INFO)
    Trainer(configure(["--resume", "auto", "--out", str(copied_run), "--steps", "3", "--mixing", "0.9",
                       "--r1-gamma", "5", "--log-every", "2"]))
    # Changes the checkpoint allows (RESUMABLE_CHANGES) are said; the others are warned of too. The
    # --resume path differs from the checkpoint's (it was a fresh run) and is not a change.
    overrides = [record.getMessage() for record in caplog.records if "overrides the checkpoint's" in record.getMessage()]
    assert sorted(overrides) == ["--log-every 2 overrides the checkpoint's 1", "--mixing 0.9 overrides the checkpoint's 0.5",
                                 f"--out {copied_run} overrides the checkpoint's {finished_run}",
                                 "--r1-gamma 5.0 overrides the checkpoint's 10.0", "--steps 3 overrides the checkpoint's 2"]
    warnings = [record.getMessage() for record in caplog.records if record.levelno == logging.WARNING]
    assert warnings == ["the run will not continue as the original would have: --r1-gamma, --mixing changed"]


def test_a_checkpoint_of_another_number_of_processes_resumes_with_fresh_random_draws(copied_run, caplog):
    state = load_checkpoint(str(copied_run / LATEST))
    state["rng"] = state["rng"] * 2  # as if written by 2 processes
    save_checkpoint(state, str(copied_run))
    caplog.set_level(logging.INFO)
    Trainer(configure(["--resume", "auto", "--out", str(copied_run)]))
    assert [record.getMessage() for record in caplog.records if record.levelno == logging.WARNING] == [
        "the checkpoint was written by 2 processes and this run has 1: its random draws start afresh"]
    drawn = torch.rand(3)
    torch.manual_seed(7)  # the run's seed: what seeding leaves, no checkpoint's state
    assert torch.equal(drawn, torch.rand(3))


def test_stop_requests_outside_the_main_thread_leave_the_signal_handlers_alone():
    handlers = {number: signal.getsignal(number) for number in StopRequests.SIGNALS}
    errors = []

    def enter_and_leave():
        try:
            with StopRequests() as requests:
                assert requests.signal is None
        except Exception as error:  # reported in the main thread
            errors.append(error)
    thread = threading.Thread(target=enter_and_leave)
    thread.start()
    thread.join()
    assert errors == [] and {number: signal.getsignal(number) for number in handlers} == handlers


def test_each_non_finite_weight_and_optimizer_state_is_named_by_its_network(tmp_path):
    trainer = Trainer(tiny_config(tmp_path, steps=1))
    trainer.train_step()  # the optimizers now have state
    broken = []
    with torch.no_grad():
        for network, module in (("g", trainer.g_module), ("d", trainer.d_module), ("g_ema", trainer.g_ema)):
            name, tensor = next((n, t) for n, t in module.state_dict().items() if t.is_floating_point())
            tensor.fill_(float("nan"))
            broken.append(f"{network}.{name}")
        for network, optimizer, state in (("g", trainer.g_optim, "exp_avg"), ("d", trainer.d_optim, "exp_avg_sq")):
            index = next(iter(optimizer.state_dict()["state"]))
            optimizer.state[optimizer.param_groups[0]["params"][index]][state].fill_(float("inf"))
            broken.append(f"{network}_optim.{index}.{state}")
    assert trainer._nonfinite_tensors() == broken


def test_a_loss_that_is_not_finite_stops_the_step_and_names_every_loss(tmp_path):
    trainer = Trainer(tiny_config(tmp_path, steps=1))
    finite = {"d": torch.tensor(0.75), "g": torch.tensor(1.5)}
    assert trainer._agree_on_stop(None, finite) is None
    assert trainer._agree_on_stop(signal.SIGTERM, finite) == signal.SIGTERM
    with pytest.raises(TrainingDiverged) as error:
        trainer._agree_on_stop(None, {"d": torch.tensor(float("nan")), "g": torch.tensor(1.5)})
    assert str(error.value) == ("training diverged at step 0: a loss is not finite (d=nan, g=1.5, in process 0 of 1)."
                                " No checkpoint was written: start again with a lower --lr (now 0.002; try 0.001).")


def test_resume_auto_without_a_checkpoint_starts_afresh(tmp_path):
    assert configure(["--resume", "auto", "--out", str(tmp_path)]).resume is None


def test_a_checkpoint_named_without_a_folder_resumes_into_the_current_folder(copied_run, monkeypatch):
    monkeypatch.chdir(copied_run)
    config = configure(["--resume", LATEST])
    assert (config.resume, config.out, config.lr) == (LATEST, ".", 0.003)
