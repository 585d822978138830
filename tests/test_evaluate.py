"""The FID Inception-v3 (random weights: the real ones cannot be downloaded here) and training.evaluate
end to end on a tiny generator and a tiny folder of PNGs."""
import json
import math
import os
import zipfile

import numpy as np
import pytest
import torch
from torch import nn

from helpers import our_checkpoint, write_image
from training import evaluate, generate
from training.data import image_names
from training.inception import (WEIGHTS_ENV, WEIGHTS_NAME, FIDInceptionV3, average_pool_3x3, load_inception,
                                weights_path)


@pytest.fixture(scope="module")
def inception_weights(tmp_path_factory):
    """A random FIDInceptionV3 state dict on disk. He-initialised convolutions keep the activations
    from fading to zero over the 94 layers, so features (and metrics) stay informative."""
    torch.manual_seed(0)
    model = FIDInceptionV3()
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
    path = tmp_path_factory.mktemp("inception") / WEIGHTS_NAME
    torch.save(model.state_dict(), path)
    return path


@pytest.fixture
def tiny_checkpoint(tmp_path):
    return our_checkpoint(tmp_path / "run")[0]


@pytest.mark.slow
def test_inception_gives_2048_features_for_any_input_size(inception_weights):
    inception = load_inception(inception_weights)
    with torch.inference_mode():
        features = inception(torch.rand(2, 3, 37, 50) * 2 - 1)
    assert features.shape == (2, 2048)
    assert torch.isfinite(features).all() and features.std() > 0


def test_inception_loads_a_saved_state_dict_strictly(inception_weights):
    saved = torch.load(inception_weights, weights_only=True)
    model = load_inception(inception_weights)
    assert not model.training
    assert model.state_dict().keys() == saved.keys()
    assert "Mixed_7c.branch3x3dbl_3b.bn.running_var" in saved and "fc.weight" in saved
    assert sum(p.numel() for p in model.parameters()) == 23_850_960  # torchvision's count, 1008 classes, no aux head
    del saved["Mixed_6e.branch_pool.conv.weight"]
    with pytest.raises(RuntimeError, match="Missing key"):
        FIDInceptionV3().load_state_dict(saved)


def test_inception_average_pools_leave_padding_out():
    pooled = average_pool_3x3(torch.ones(1, 1, 4, 4))
    torch.testing.assert_close(pooled, torch.ones(1, 1, 4, 4))  # 4/9 in the corners if padding counted


def test_missing_inception_weights_say_what_to_download_and_where(tmp_path, monkeypatch):
    missing = tmp_path / "nowhere" / WEIGHTS_NAME
    with pytest.raises(FileNotFoundError) as error:
        load_inception(missing)
    message = str(error.value)
    assert str(missing) in message and "pt_inception-2015-12-05-6726825d.pth" in message and "--inception" in message
    monkeypatch.delenv(WEIGHTS_ENV, raising=False)
    assert weights_path().endswith(f"/.cache/pixelfolder/{WEIGHTS_NAME}") and "~" not in weights_path()
    monkeypatch.setenv(WEIGHTS_ENV, str(missing))
    assert weights_path() == str(missing)
    with pytest.raises(FileNotFoundError, match="nowhere"):
        load_inception()


def test_image_names_are_recursive_and_filter_extensions_in_folders_and_zips(tmp_path):
    names = ("b.png", "sub/a.JPG", "sub/deeper/c.webp", "d.jpeg", "notes.txt", "e.gif")
    with zipfile.ZipFile(tmp_path / "images.zip", "w") as archive:
        for name in names:
            (tmp_path / "folder" / name).parent.mkdir(parents=True, exist_ok=True)
            (tmp_path / "folder" / name).touch()
            archive.writestr(name, b"")
        archive.writestr("dataset.json", b"{}")
    expected = ["b.png", "d.jpeg", "sub/a.JPG", "sub/deeper/c.webp"]
    assert image_names(str(tmp_path / "folder")) == image_names(str(tmp_path / "images.zip")) == expected
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="holds no images"):
        image_names(str(tmp_path / "empty"))
    with pytest.raises(FileNotFoundError, match="does not exist"):
        image_names(str(tmp_path / "absent"))


def test_dataset_images_that_cannot_be_read_are_skipped_as_in_training(tmp_path, caplog):
    for index in range(2):
        write_image(tmp_path / f"{index}.png", 24, 24, seed=index)
    (tmp_path / "broken.jpg").write_bytes(b"garbage")
    data = (tmp_path / "1.png").read_bytes()
    (tmp_path / "truncated.png").write_bytes(data[: len(data) // 2])
    images = evaluate.ImageFiles(str(tmp_path), image_names(str(tmp_path)), 16)
    images.report_skipped()
    assert "skipped 1 unreadable image file(s)" in caplog.text and "broken.jpg" in caplog.text
    assert len(images) == 3
    pixels = [images[index] for index in range(3)]
    assert all(image.dtype == torch.uint8 and image.shape == (3, 16, 16) for image in pixels)
    assert torch.equal(pixels[2], pixels[0])  # the truncated image: the next readable one stands in
    assert "truncated.png: cannot decode the image" in caplog.text


def test_dataset_images_smaller_than_the_resolution_are_refused(tmp_path):
    write_image(tmp_path / "small.png", 12, 12)
    with pytest.raises(ValueError, match=r"small\.png is 12x12 px, smaller than the evaluation resolution 16x16.*"
                                         r"--resolution"):
        evaluate.ImageFiles(str(tmp_path), ["small.png"], 16)


def test_equal_sized_subsamples_the_larger_set():
    real, fake = np.arange(10)[:, None], np.arange(4)[:, None]
    real_subset, fake_subset = evaluate.equal_sized(real, fake)
    assert len(real_subset) == 4 and len(set(real_subset.ravel())) == 4
    assert fake_subset is fake


def test_cache_key_covers_files_resolution_samples_and_inception(tmp_path, monkeypatch):
    base = ("data", ["a.png", "b.png"], 256, 50000, "digest", str(tmp_path))
    paths = {evaluate.statistics_cache_path(*base)}
    for index, changed in ((1, ["a.png"]), (2, 128), (3, 10000), (4, "other digest")):
        arguments = list(base)
        arguments[index] = changed
        paths.add(evaluate.statistics_cache_path(*arguments))
    assert len(paths) == 5
    assert evaluate.statistics_cache_path(*base) == evaluate.statistics_cache_path(*base)
    assert os.path.basename(evaluate.statistics_cache_path(*base)).startswith("data-256px-50000-")
    # The built-in digits are keyed by name, not by a path under the working directory.
    digits = evaluate.statistics_cache_path("digits", None, 32, 1797, "digest", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    assert evaluate.statistics_cache_path("digits", None, 32, 1797, "digest", str(tmp_path)) == digits
    assert os.path.basename(digits).startswith("digits-32px-1797-")


def test_statistics_files_with_and_without_features(tmp_path):
    evaluate.save_statistics(str(tmp_path / "full.npz"), np.zeros(3), np.eye(3), np.ones((5, 3), np.float32))
    full = evaluate.load_statistics(tmp_path / "full.npz")
    assert full["features"].shape == (5, 3) and not (tmp_path / "full.npz.partial").exists()
    np.savez(tmp_path / "mu_sigma.npz", mu=np.zeros(3), sigma=np.eye(3))  # as pytorch-fid writes them
    statistics, path = evaluate.dataset_statistics(str(tmp_path / "mu_sigma.npz"), 16, 10, None, None)
    assert statistics["features"] is None and path == str(tmp_path / "mu_sigma.npz")
    np.savez(tmp_path / "other.npz", x=np.zeros(3))
    with pytest.raises(ValueError, match="'mu' and 'sigma'"):
        evaluate.load_statistics(tmp_path / "other.npz")


def test_cli_names_missing_inception_weights(tmp_path, tiny_checkpoint, capsys):
    with pytest.raises(SystemExit, match="1"):
        evaluate.main([tiny_checkpoint, "--dataset", str(tmp_path), "--inception", str(tmp_path / "absent.pth")])
    assert capsys.readouterr().err.startswith(f"error: FID Inception weights not found at '{tmp_path / 'absent.pth'}'")


@pytest.mark.slow
def test_evaluate_end_to_end_writes_and_reuses_the_dataset_cache(tmp_path, inception_weights, tiny_checkpoint,
                                                                 monkeypatch, capsys):
    dataset = tmp_path / "dataset"
    generate.main([tiny_checkpoint, "--outdir", str(dataset / "nested"), "--seeds", "100-103"])
    cache_dir = tmp_path / "cache"
    arguments = [tiny_checkpoint, "--dataset", str(dataset), "--num-samples", "4", "--batch-size", "4",
                 "--workers", "0", "--kid-subsets", "3", "--inception", str(inception_weights),
                 "--cache-dir", str(cache_dir), "--device", "cpu"]

    def run():
        capsys.readouterr()
        evaluate.main(arguments)
        return json.loads(capsys.readouterr().out)

    first = run()
    for name in ("fid", "kid", "kid_std", "precision", "recall"):
        assert math.isfinite(first[name]), name
    assert first["fid"] > 0 and 0 <= first["precision"] <= 1 and 0 <= first["recall"] <= 1
    assert first["num_generated"] == first["num_real"] == 4
    cache_files = list(cache_dir.iterdir())
    assert [p.name for p in cache_files] == [first["statistics"].rsplit("/", 1)[-1]]
    assert np.load(cache_files[0])["features"].shape == (4, 2048)

    # A second run reads the cache instead of the images.
    monkeypatch.setattr(evaluate.ImageFiles, "__getitem__", lambda *_: pytest.fail("read the dataset again"))
    second = run()
    assert second == first
