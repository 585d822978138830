"""Training data: the procedural shapes, image folders and zips, LMDB (prepare_data round trip), the batch stream."""
import json
import logging
import os
import signal
import struct
import warnings
import zipfile

import lmdb
import pytest
import torch

from helpers import write_image
from training.data import (BatchStream, ImageFolderDataset, LMDBDataset, MirroredDataset, ProceduralShapesDataset,
                           ignore_stop_signals, make_dataset)
from training.cli import default_num_workers
from training.prepare_data import main as prepare_data_main


@pytest.fixture
def image_folder(tmp_path):
    """Four readable images (nested, mixed formats and aspect ratios) and a corrupt one."""
    folder = tmp_path / "images"
    write_image(folder / "a.png", 40, 32, seed=1)
    write_image(folder / "nested" / "b.PNG", 32, 48, seed=2)
    write_image(folder / "nested" / "deeper" / "c.jpg", 64, 64, seed=3)
    write_image(folder / "d.webp", 33, 33, seed=4)
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n this is no image")
    (folder / "notes.txt").write_text("not an image")
    return folder


def test_procedural_dataset_is_deterministic_by_seed_at_any_size():
    first, again = ProceduralShapesDataset(16, length=4, seed=3), ProceduralShapesDataset(16, length=4, seed=3)
    for index in range(4):
        assert torch.equal(first[index], again[index])
    assert not torch.equal(first[0], first[1])
    assert not torch.equal(first[0], ProceduralShapesDataset(16, length=4, seed=4)[0])
    image = ProceduralShapesDataset(48, length=1)[0]
    assert image.shape == (3, 48, 48) and image.dtype == torch.float32
    assert image.min() >= -1 and image.max() <= 1 and image.std() > 0.05


def test_mirrored_dataset_adds_the_flipped_images():
    base = ProceduralShapesDataset(16, length=3)
    mirrored = MirroredDataset(base)
    assert len(mirrored) == 6
    assert torch.equal(mirrored[1], base[1]) and torch.equal(mirrored[4], base[1].flip(-1))


def test_folder_dataset_skips_and_counts_unreadable_files(image_folder):
    dataset = ImageFolderDataset(str(image_folder), 32)
    assert len(dataset) == 4
    assert [os.path.basename(path) for path, _ in dataset.skipped] == ["broken.png"]
    for index in range(4):
        image = dataset[index]
        assert image.shape == (3, 32, 32) and -1 <= image.min() and image.max() <= 1


def test_folder_dataset_replaces_an_image_that_fails_to_decode(tmp_path, caplog):
    write_image(tmp_path / "a.png", 32, 32, seed=1)
    write_image(tmp_path / "b.png", 32, 32, seed=2)
    data = (tmp_path / "b.png").read_bytes()
    (tmp_path / "b.png").write_bytes(data[: len(data) // 2])  # the header reads, the pixels do not
    dataset = ImageFolderDataset(str(tmp_path), 32)
    assert len(dataset) == 2 and dataset.skipped == []
    assert torch.equal(dataset[1], dataset[0])
    assert torch.equal(dataset[1], dataset[0])  # drawn again: no second warning
    assert caplog.text.count("b.png: cannot decode the image") == 1


def test_a_damaged_image_is_warned_about_once_by_all_loader_workers(tmp_path):
    write_image(tmp_path / "a.png", 32, 32, seed=1)
    write_image(tmp_path / "b.png", 32, 32, seed=2)
    data = (tmp_path / "b.png").read_bytes()
    (tmp_path / "b.png").write_bytes(data[: len(data) // 2])
    dataset = ImageFolderDataset(str(tmp_path), 32)
    stream = BatchStream(dataset, batch_size=1, seed=0, num_workers=2)
    for _ in range(4):  # both images in two epochs, read by two worker processes
        next(stream)
    # The workers' record of the warning is shared memory: a worker that draws the file later is silent.
    assert dataset.warned.tolist() == [False, True]


def test_the_default_number_of_workers_draws_no_warning_from_pytorch():
    # PyTorch warns when a loader has more workers than the cores this process may use.
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        stream = BatchStream(ProceduralShapesDataset(8, length=4), 2, num_workers=default_num_workers())
        assert next(stream).shape == (2, 3, 8, 8)


def test_loader_workers_leave_ctrl_c_and_sigterm_to_the_training_process():
    previous = {number: signal.getsignal(number) for number in (signal.SIGINT, signal.SIGTERM)}
    try:
        ignore_stop_signals()
        assert signal.getsignal(signal.SIGINT) == signal.getsignal(signal.SIGTERM) == signal.SIG_IGN
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)
    assert BatchStream(ProceduralShapesDataset(8, length=2), 1, num_workers=1).loader.worker_init_fn \
        is ignore_stop_signals


def test_folder_dataset_bad_input_is_a_clear_error(tmp_path, image_folder):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        ImageFolderDataset(str(tmp_path / "missing"), 32)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="holds no images"):
        ImageFolderDataset(str(tmp_path / "empty"), 32)
    with pytest.raises(ValueError, match=r"a\.png is 40x32 px, smaller than the training size 64x64 \(and 2 more"):
        ImageFolderDataset(str(image_folder), 64)
    (tmp_path / "only-broken").mkdir()
    (tmp_path / "only-broken" / "x.jpg").write_bytes(b"garbage")
    with pytest.raises(ValueError, match="none of its 1 image files can be read"):
        ImageFolderDataset(str(tmp_path / "only-broken"), 32)


def test_prepare_data_lmdb_round_trip(tmp_path, image_folder, capsys):
    out = tmp_path / "lmdb"
    prepare_data_main([str(image_folder), "--out", str(out), "--sizes", "16", "32"])
    captured = capsys.readouterr()
    assert "wrote 4 images" in captured.out and "skipped 1 unreadable" in captured.err
    # The official PixelFolder layout: one database per size, 7-digit keys, the count under b"length".
    with lmdb.open(str(out / "32"), readonly=True, lock=False) as env, env.begin() as txn:
        assert txn.get(b"length") == b"4"
        assert sorted(key for key, _ in txn.cursor()) == [b"0000000", b"0000001", b"0000002", b"0000003", b"length"]
    for size in (16, 32):
        stored = LMDBDataset(str(out), size)
        assert len(stored) == 4
        reference = ImageFolderDataset(str(image_folder), size)
        for index in range(4):  # PNG is lossless: the very same pixels
            assert torch.equal(stored[index], reference[index])
    assert isinstance(make_dataset(str(out), 16, hflip=False), LMDBDataset)
    assert isinstance(make_dataset(str(image_folder), 16, hflip=False), ImageFolderDataset)
    with pytest.raises(SystemExit, match="exists already"):
        prepare_data_main([str(image_folder), "--out", str(out), "--sizes", "16"])


def test_lmdb_with_size_prefixed_keys_and_wrong_sizes(tmp_path, image_folder):
    # rosinality's StyleGAN2 layout: every size in one database under "<size>-<index>".
    out = tmp_path / "single"
    prepare_data_main([str(image_folder), "--out", str(tmp_path / "official"), "--sizes", "16", "--format", "jpeg"])
    with lmdb.open(str(tmp_path / "official" / "16"), readonly=True, lock=False) as source, source.begin() as read, \
            lmdb.open(str(out), map_size=1 << 24) as target, target.begin(write=True) as write:
        for index in range(4):
            write.put(f"16-{index:07d}".encode(), read.get(f"{index:07d}".encode()))
        write.put(b"length", b"4")
    dataset = LMDBDataset(str(out), 16)
    assert len(dataset) == 4 and dataset[3].shape == (3, 16, 16)
    with pytest.raises(ValueError, match="holds no images of size 32"):
        LMDBDataset(str(out), 32)
    with pytest.raises(ValueError, match="16x16 px, smaller than the training size 32x32"):
        LMDBDataset(str(tmp_path / "official" / "16"), 32)


def test_a_damaged_or_missing_lmdb_record_is_warned_about_once_and_the_next_stands_in(tmp_path, image_folder,
                                                                                     caplog):
    # Two copies (an LMDB can be opened once per process): one intact, one damaged before it is read.
    for name in ("intact", "damaged"):
        prepare_data_main([str(image_folder), "--out", str(tmp_path / name), "--sizes", "16"])
    intact = [LMDBDataset(str(tmp_path / "intact" / "16"), 16)[index] for index in range(4)]
    path = str(tmp_path / "damaged" / "16")
    with lmdb.open(path, map_size=1 << 24) as env, env.begin(write=True) as txn:
        data = txn.get(b"0000001")
        txn.put(b"0000001", data[: len(data) // 2])  # the header reads, the pixels do not
        txn.delete(b"0000003")
    dataset = LMDBDataset(path, 16)
    for _ in range(2):  # drawn again: no second warning
        assert torch.equal(dataset[1], intact[2]) and torch.equal(dataset[3], intact[0])
    warnings_given = [record.getMessage() for record in caplog.records if record.levelno == logging.WARNING]
    assert warnings_given[0].startswith(f"LMDB {path} record 0000001: cannot decode the image (")
    assert warnings_given[0].endswith("); the next image stands in for it")
    assert warnings_given[1:] == [f"LMDB {path} record 0000003: cannot decode the image (no such record, although "
                                  "the database's length is 4); the next image stands in for it"]
    assert dataset.warned.tolist() == [False, True, False, True]


def test_batch_stream_resumes_with_the_same_batches_and_shards_ranks():
    dataset = ProceduralShapesDataset(8, length=10)
    stream = BatchStream(dataset, batch_size=3, seed=5)
    assert stream.batches_per_epoch == 3
    batches = [next(stream) for _ in range(7)]  # into the third epoch
    resumed = BatchStream(dataset, batch_size=3, seed=5)
    resumed.load_state_dict({"epoch": 0, "batch": 2})
    for expected in batches[2:]:
        assert torch.equal(next(resumed), expected)
    epoch_order = torch.cat(batches[:3]).flatten(1)
    assert not torch.equal(epoch_order, torch.cat(batches[3:6]).flatten(1))  # reshuffled every epoch
    ranks = [BatchStream(dataset, batch_size=5, rank=rank, world_size=2, seed=5) for rank in (0, 1)]
    first, second = (next(rank_stream).flatten(1) for rank_stream in ranks)
    assert not any(torch.equal(a, b) for a in first for b in second)  # disjoint halves of the epoch


def test_batch_stream_with_worker_processes_gives_the_same_batches():
    dataset = ProceduralShapesDataset(8, length=5)
    in_process, with_workers = BatchStream(dataset, 2, seed=1), BatchStream(dataset, 2, seed=1, num_workers=2)
    for _ in range(5):  # two and a half epochs
        assert torch.equal(next(in_process), next(with_workers))
    with_workers.load_state_dict({"epoch": 0, "batch": 1})  # mid-epoch, while workers hold prefetched batches
    in_process.load_state_dict({"epoch": 0, "batch": 1})
    for _ in range(3):
        assert torch.equal(next(in_process), next(with_workers))


def write_stylegan2_ada_zip(path, folder):
    """The images of ``folder`` in a zip, as NVlabs' dataset_tool lays it out (numbered names in
    folders of 1000, a dataset.json of labels), the third member's compressed bytes damaged from its
    start (its header cannot be read). Returns {member name: source file}."""
    sources = sorted(p for p in folder.rglob("*") if p.suffix in (".png", ".PNG", ".jpg", ".webp"))
    members = {f"00000/img{index:08d}{source.suffix}": source for index, source in enumerate(sources)}
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, source in members.items():
            archive.writestr(name, source.read_bytes())
        archive.writestr("dataset.json", json.dumps({"labels": [[name, 0] for name in members]}))
    damaged = sorted(members)[2]
    with zipfile.ZipFile(path) as archive:
        info = archive.getinfo(damaged)
    with open(path, "r+b") as file:
        file.seek(info.header_offset + 26)
        name_length, extra_length = struct.unpack("<HH", file.read(4))
        file.seek(info.header_offset + 30 + name_length + extra_length)
        file.write(b"\xff" * 16)  # deflate block type 3 does not exist
    return members, damaged


def test_zip_dataset_is_read_in_place_like_a_folder(tmp_path, image_folder, caplog):
    path = tmp_path / "dataset.zip"
    members, damaged = write_stylegan2_ada_zip(path, image_folder)
    dataset = make_dataset(str(path), 32, hflip=False)
    assert isinstance(dataset, ImageFolderDataset) and dataset.in_zip
    # The broken file, and the damaged member, are skipped and named; dataset.json is no image.
    broken = next(name for name, source in members.items() if source.name == "broken.png")
    assert [name for name, _ in dataset.skipped] == [f"{path}/{name}" for name in sorted([broken, damaged])]
    assert dataset.files == [name for name in members if name != damaged and members[name].name != "broken.png"]
    folder = ImageFolderDataset(str(image_folder), 32)
    for index, name in enumerate(dataset.files):  # resized as the folder's images are: the very same pixels
        assert torch.equal(dataset[index], folder[folder.files.index(os.path.relpath(members[name], image_folder))])
    dataset.report_skipped()
    assert "skipped 2 unreadable image file(s)" in caplog.text and f"{path}/{damaged} (" in caplog.text
    assert not list(tmp_path.glob("00000"))  # nothing extracted
    # Loader worker processes open the zip themselves.
    in_process, with_workers = BatchStream(dataset, 2, seed=1), BatchStream(dataset, 2, seed=1, num_workers=2)
    for _ in range(2):
        assert torch.equal(next(in_process), next(with_workers))
    with pytest.raises(ValueError, match=r"zip/00000/img00000000\.png is 40x32 px, smaller than the training size "
                                         r"64x64 \(and 1 more"):
        ImageFolderDataset(str(path), 64)
