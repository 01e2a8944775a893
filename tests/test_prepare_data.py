"""scripts/prepare_data.py and `modeling_maskformer.data.prepare` against archives in the official layouts (a few tiny
images, made in `dataset_server.py`) served from 127.0.0.1 by an HTTP server that honours Range requests and can drop a
connection (the other faults a server or a user causes: test_prepare_faults.py):
the real download, checksum, resume, extraction and layout checks, then the project's loaders, a training run and
reproduce.py on the result. Also the dead Hub names (`scene_parse_150`) and `datasets`' refusal of loading scripts."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import re
import zipfile
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np
import pytest
from PIL import Image

from modeling_maskformer.data import build_dataset, load_coco_panoptic_folder, load_hf_dataset
from modeling_maskformer.data.download import DataPreparationError, DownloadPolicy
from modeling_maskformer.data.prepare import DATASETS, MARKER, prepare
from modeling_maskformer.data.registry import SCRIPT_DATASETS

from builders import save_transformers_checkpoint
from dataset_server import (
    ADE_COUNTS,
    PREPARE,
    ROOT,
    ade_zip,
    encoded,
    leftovers,
    one_line_error,
    pinned,
    run_script,
    serve,
    serve_ade,
    serve_coco_val,
    zip_bytes,
)

REPRODUCE = ROOT / "scripts" / "reproduce.py"


@pytest.fixture
def site():
    with serve() as site:
        yield site


@pytest.fixture
def served_ade(site, monkeypatch):
    return serve_ade(site, monkeypatch)


# ----------------------------------------------------------------------------------------------------------
# The registry.
# ----------------------------------------------------------------------------------------------------------
def test_registry_shape():
    assert set(DATASETS) == {"ade20k", "coco_panoptic", "cityscapes"}
    for spec in DATASETS.values():
        assert spec.archives and all(count > 0 for count in spec.split_counts.values()) and spec.counts_source
        for archive in spec.archives.values():
            assert archive.source and archive.filename.endswith(".zip")
            if archive.url is None:  # a local archive: the reason is stated
                assert archive.unpinned and "login" in archive.unpinned
                continue
            assert urlsplit(archive.url).scheme in ("http", "https") and archive.url.endswith("/" + archive.filename)
            assert isinstance(archive.size, int) and archive.size > 0
            assert (re.fullmatch(r"[0-9a-f]{64}", archive.sha256 or "") is not None) or bool(archive.unpinned)
    assert set(SCRIPT_DATASETS.values()) <= set(DATASETS)


def test_list_prints_every_archive(capsys):
    assert run_script(PREPARE, "--list") is None
    out = capsys.readouterr().out
    for spec in DATASETS.values():
        assert all(archive.filename in out for archive in spec.archives.values())


# ----------------------------------------------------------------------------------------------------------
# ADE20K end to end, then a rerun.
# ----------------------------------------------------------------------------------------------------------
def test_ade20k_end_to_end_then_the_loaders_and_a_rerun(site, served_ade, tmp_path, capsys):
    root = tmp_path / "data"
    result = run_script(PREPARE, "ade20k", "--root", str(root), "--mirror", site.mirror, "--no_progress")
    out = capsys.readouterr().out
    folder = root / "ADEChallengeData2016"
    assert result.folder == folder and result.splits == ADE_COUNTS and not result.already_prepared
    assert f"--dataset {folder} --label_convention ade" in out
    assert site.requests == [("/places/ADEchallenge/ADEChallengeData2016.zip", None)]
    with zipfile.ZipFile(io.BytesIO(served_ade)) as archive:  # every file of the archive, byte for byte
        for name in (n for n in archive.namelist() if not n.endswith("/")):
            assert (root / name).read_bytes() == archive.read(name)
    assert json.loads((folder / MARKER).read_text())["splits"] == ADE_COUNTS
    assert not (root / "downloads" / "ADEChallengeData2016.zip").exists() and leftovers(root) == []

    # the loaders read it: by folder, and by the dead Hub name through --data_root
    train = build_dataset(str(folder), "train", reduce_labels=True)
    assert len(train) == 3 and train.num_labels == 150 and train.id2label[0] == "class1"
    item = build_dataset("scene_parse_150", "validation", data_root=root, reduce_labels=True)[1]
    assert set(np.unique(item["semantic"]).tolist()) == {5, 7, 255}  # ADE 6 and 8 -> 5 and 7, 0 -> ignored

    # a second run: no request, says so
    site.requests.clear()
    again = run_script(PREPARE, "ade20k", "--root", str(root), "--mirror", site.mirror)
    assert again.already_prepared and site.requests == []
    assert "already prepared" in capsys.readouterr().out and "nothing to do" in again.summary()


def test_the_readme_training_command_runs_on_the_prepared_folder(site, served_ade, tmp_path):
    """The README's ADE20K commands, shrunk (demo preset, 64 px crops, 2 steps): prepared folder in, model out, then
    evaluated."""
    from modeling_maskformer.training import train

    root = tmp_path / "data"
    prepare("ade20k", root, mirror=site.mirror, progress=False)
    out = tmp_path / "run"
    train(
        [
            "--dataset",
            str(root / "ADEChallengeData2016"),
            "--label_convention",
            "ade",
            "--model_preset",
            "demo",
            "--crop_size",
            "64",
            "--per_device_train_batch_size",
            "2",
            "--max_train_steps",
            "2",
            "--eval_steps",
            "2",
            "--max_eval_items",
            "1",
            "--output_dir",
            str(out),
        ]
    )
    config = json.loads((out / "config.json").read_text())
    assert len(config["id2label"]) == 150 and config["id2label"]["0"] == "class1"
    history = json.loads((out / "training_history.json").read_text())
    assert history[-1]["step"] == 2 and np.isfinite(history[-1]["loss"])
    # the evaluation program on the same data, named by the dead Hub name + --data_root
    results = run_script(
        ROOT / "scripts" / "evaluate_maskformer.py",
        "--model",
        str(out),
        "--dataset",
        "scene_parse_150",
        "--data_root",
        str(root),
        "--label_convention",
        "ade",
        "--max_items",
        "2",
        "--batch_size",
        "1",
    )
    assert 0 <= results["semantic"]["mean_iou"] <= 1


# ----------------------------------------------------------------------------------------------------------
# Failures: checksum, dropped connection, unsafe archives, disk full, truncated archive.
# ----------------------------------------------------------------------------------------------------------
def test_wrong_checksum_leaves_nothing_and_a_rerun_after_the_fix_works(
    site, served_ade, tmp_path, monkeypatch, capsys
):
    root = tmp_path / "data"
    good = DATASETS["ade20k"]
    wrong = dataclasses.replace(good.archives["all"], sha256="0" * 64)
    monkeypatch.setitem(DATASETS, "ade20k", dataclasses.replace(good, archives={"all": wrong}))
    line = one_line_error(monkeypatch, capsys, PREPARE, "ade20k", "--root", str(root), "--mirror", site.mirror)
    assert "SHA-256 mismatch" in line and "0" * 64 in line and hashlib.sha256(served_ade).hexdigest() in line
    assert not (root / "ADEChallengeData2016").exists() and not any((root / "downloads").iterdir())
    assert leftovers(root) == []
    monkeypatch.setitem(DATASETS, "ade20k", good)  # the fix
    assert prepare("ade20k", root, mirror=site.mirror, progress=False).splits == ADE_COUNTS


def test_a_dropped_connection_resumes_with_range(site, served_ade, tmp_path):
    path = urlsplit(DATASETS["ade20k"].archives["all"].url).path
    half = len(served_ade) // 2
    site.drop_after[path] = half
    result = prepare("ade20k", tmp_path, mirror=site.mirror, progress=False, download_policy=DownloadPolicy(retries=1))
    assert site.requests == [(path, None), (path, f"bytes={half}-")]
    assert result.splits == ADE_COUNTS and (tmp_path / "ADEChallengeData2016" / MARKER).is_file()


def test_an_interrupted_download_is_one_line_and_a_rerun_finishes(site, served_ade, tmp_path, monkeypatch, capsys):
    path = urlsplit(DATASETS["ade20k"].archives["all"].url).path
    site.always_drop[path] = 1000
    line = one_line_error(
        monkeypatch, capsys, PREPARE, "ade20k", "--root", str(tmp_path), "--mirror", site.mirror, "--retries", "0"
    )
    assert f"interrupted at 1,000 of {len(served_ade):,} bytes" in line and "run the same command again" in line
    assert (tmp_path / "downloads" / "ADEChallengeData2016.zip.part").stat().st_size == 1000
    assert not (tmp_path / "ADEChallengeData2016").exists()
    del site.always_drop[path]
    site.requests.clear()
    assert prepare("ade20k", tmp_path, mirror=site.mirror, progress=False).splits == ADE_COUNTS
    assert site.requests == [(path, "bytes=1000-")]


@pytest.mark.parametrize(
    "entry", ["../evil.txt", "ADEChallengeData2016/../../evil.txt", "/tmp/evil-absolute.txt", "symlink"]
)
def test_unsafe_archives_are_refused_and_nothing_is_written(site, tmp_path, monkeypatch, entry):
    good = ade_zip()
    buffer = io.BytesIO(good)
    with zipfile.ZipFile(buffer, "a") as archive:
        if entry == "symlink":
            info = zipfile.ZipInfo("ADEChallengeData2016/link")
            info.external_attr = 0o120777 << 16  # S_IFLNK
            archive.writestr(info, "../../outside")
        else:
            archive.writestr(zipfile.ZipInfo(entry), b"owned")
    payload = buffer.getvalue()
    spec = DATASETS["ade20k"]
    site.add(spec.archives["all"].url, payload)
    monkeypatch.setitem(
        DATASETS,
        "ade20k",
        dataclasses.replace(spec, archives={"all": pinned(spec.archives["all"], payload)}, split_counts=ADE_COUNTS),
    )
    root = tmp_path / "deep" / "root"
    with pytest.raises(
        DataPreparationError,
        match="refusing to extract: entry .* is (a '..' component|an absolute path|a symbolic link)",
    ):
        prepare("ade20k", root, mirror=site.mirror, progress=False)
    assert not (root / "ADEChallengeData2016").exists() and leftovers(root) == []
    assert not list(tmp_path.rglob("evil*")) and not Path("/tmp/evil-absolute.txt").exists()


@pytest.mark.parametrize("change", ["missing annotation", "extra image"])
def test_the_layout_is_verified_before_anything_moves_into_place(site, tmp_path, monkeypatch, change):
    with zipfile.ZipFile(io.BytesIO(ade_zip())) as archive:
        entries = {name: archive.read(name) for name in archive.namelist()}
    if change == "missing annotation":
        del entries["ADEChallengeData2016/annotations/validation/ADE_val_00000002.png"]
        expected = "1 file(s) without their pair, e.g. ADE_val_00000002 has no annotation"
    else:
        entries["ADEChallengeData2016/images/training/ADE_train_00000009.jpg"] = b"x"
        expected = "holds 4 images, expected 3"
    payload = zip_bytes(entries)
    spec = DATASETS["ade20k"]
    site.add(spec.archives["all"].url, payload)
    monkeypatch.setitem(
        DATASETS,
        "ade20k",
        dataclasses.replace(spec, archives={"all": pinned(spec.archives["all"], payload)}, split_counts=ADE_COUNTS),
    )
    with pytest.raises(DataPreparationError, match=re.escape(expected)):
        prepare("ade20k", tmp_path, mirror=site.mirror, progress=False)
    assert not (tmp_path / "ADEChallengeData2016").exists() and leftovers(tmp_path) == []


def test_disk_full_is_one_line_and_leaves_nothing(site, served_ade, tmp_path, monkeypatch, capsys):
    from modeling_maskformer.data import prepare as prepare_module
    from modeling_maskformer.data import progress as progress_module

    real = progress_module.shutil.disk_usage
    monkeypatch.setattr(progress_module.shutil, "disk_usage", lambda path: real(path)._replace(free=10))
    line = one_line_error(monkeypatch, capsys, PREPARE, "ade20k", "--root", str(tmp_path), "--mirror", site.mirror)
    assert "disk full" in line and f"{len(served_ade):,} bytes needed" in line and "run the same command again" in line
    monkeypatch.undo()
    monkeypatch.setitem(
        DATASETS,
        "ade20k",
        dataclasses.replace(
            DATASETS["ade20k"],
            archives={"all": pinned(DATASETS["ade20k"].archives["all"], served_ade)},
            split_counts=ADE_COUNTS,
        ),
    )

    # ENOSPC in the middle of the extraction: nothing half-extracted in place, the verified download is kept
    calls = []

    def copy_then_fail(src, dst, length=0):
        calls.append(1)
        if len(calls) == 3:
            raise OSError(28, "No space left on device")
        dst.write(src.read())

    monkeypatch.setattr(prepare_module.shutil, "copyfileobj", copy_then_fail)
    with pytest.raises(DataPreparationError, match="disk full"):
        prepare("ade20k", tmp_path, mirror=site.mirror, progress=False, keep_archives=True)
    assert not (tmp_path / "ADEChallengeData2016").exists() and leftovers(tmp_path) == []
    assert (tmp_path / "downloads" / "ADEChallengeData2016.zip").is_file()
    monkeypatch.undo()
    monkeypatch.setitem(
        DATASETS,
        "ade20k",
        dataclasses.replace(
            DATASETS["ade20k"],
            archives={"all": pinned(DATASETS["ade20k"].archives["all"], served_ade)},
            split_counts=ADE_COUNTS,
        ),
    )
    site.requests.clear()
    assert prepare("ade20k", tmp_path, mirror=site.mirror, progress=False).splits == ADE_COUNTS
    assert site.requests == []  # the kept, verified archive was used


def test_a_run_killed_while_moving_into_place_is_cleaned_up(site, served_ade, tmp_path):
    """What a process killed between its journal and its marker leaves: the next run removes it and redoes it. Killed
    after the marker, before removing the journal: the next run keeps the data and does nothing else."""
    (tmp_path / "ADEChallengeData2016" / "images").mkdir(parents=True)  # half moved
    journal = {"splits": ["train", "validation"], "items": ["ADEChallengeData2016"]}
    (tmp_path / ".ade20k.moving.json").write_text(json.dumps(journal))
    (tmp_path / ".ade20k-x.tmp").mkdir()
    assert prepare("ade20k", tmp_path, mirror=site.mirror, progress=False).splits == ADE_COUNTS
    assert leftovers(tmp_path) == [] and len(site.requests) == 1
    (tmp_path / ".ade20k.moving.json").write_text(json.dumps(journal))
    assert prepare("ade20k", tmp_path, mirror=site.mirror, progress=False).already_prepared
    assert leftovers(tmp_path) == [] and (tmp_path / "ADEChallengeData2016" / MARKER).is_file()
    assert len(site.requests) == 1


def test_a_folder_that_is_not_ours_is_not_touched(site, served_ade, tmp_path):
    mine = tmp_path / "ADEChallengeData2016" / "images"
    mine.mkdir(parents=True)
    (mine / "notes.txt").write_text("mine")
    with pytest.raises(DataPreparationError, match="exists but was not prepared here: move it away"):
        prepare("ade20k", tmp_path, mirror=site.mirror, progress=False)
    assert (mine / "notes.txt").read_text() == "mine" and site.requests == []


# ----------------------------------------------------------------------------------------------------------
# COCO panoptic, val only.
# ----------------------------------------------------------------------------------------------------------
def test_coco_panoptic_val_only(site, tmp_path, monkeypatch):
    serve_coco_val(site, monkeypatch)
    result = run_script(
        PREPARE, "coco_panoptic", "--splits", "val", "--root", str(tmp_path), "--mirror", site.mirror, "--no_progress"
    )
    assert result.splits == {"validation": 2}
    assert sorted(path for path, _ in site.requests) == [
        "/annotations/panoptic_annotations_trainval2017.zip",
        "/zips/val2017.zip",
    ]  # no train2017.zip
    coco = tmp_path / "coco"
    assert sorted(p.name for p in (coco / "annotations").iterdir()) == [
        "panoptic_val2017",
        "panoptic_val2017.json",
    ]
    dataset = load_coco_panoptic_folder(coco, "validation")
    item = dataset[0]
    assert len(dataset) == 2 and dataset.id2label == {0: "person", 1: "tree-merged"}
    assert set(np.unique(item["semantic"]).tolist()) == {0, 1, 255}
    assert build_dataset("coco_panoptic", "validation", data_root=tmp_path).num_labels == 2
    with pytest.raises(FileNotFoundError, match="prepare_data.py coco_panoptic --splits train"):
        build_dataset("coco_panoptic", "train", data_root=tmp_path)
    site.requests.clear()
    assert prepare("coco_panoptic", tmp_path, splits=["val"], mirror=site.mirror).already_prepared
    assert site.requests == []


# ----------------------------------------------------------------------------------------------------------
# Cityscapes from local archives.
# ----------------------------------------------------------------------------------------------------------
def cityscapes_archives(folder: Path) -> list[str]:
    """gtFine_trainvaltest.zip (gtFine/{split}/{city}/*_gtFine_{labelIds,color,instanceIds}.png, *_polygons.json)
    and leftImg8bit_trainvaltest.zip (leftImg8bit/{split}/{city}/*_leftImg8bit.png), as published."""
    rng = np.random.default_rng(2)
    gt, left = {"README": b"", "license.txt": b""}, {"README": b"", "license.txt": b""}
    for split, city, count in (("train", "aachen", 2), ("val", "frankfurt", 1), ("test", "berlin", 1)):
        for i in range(count):
            stem = f"{city}/{city}_{i:06d}_000019"
            ids = np.zeros((16, 32), np.uint8)
            ids[:, 8:] = [7, 26, 0, 33][i % 4]  # road -> 0, car -> 13, unlabeled -> 255, bicycle -> 18
            ids[0, 0] = 24  # person -> 11
            gt[f"gtFine/{split}/{stem}_gtFine_labelIds.png"] = encoded(ids, "PNG")
            gt[f"gtFine/{split}/{stem}_gtFine_color.png"] = encoded(np.zeros((16, 32, 3), np.uint8), "PNG")
            gt[f"gtFine/{split}/{stem}_gtFine_polygons.json"] = b"{}"
            left[f"leftImg8bit/{split}/{stem}_leftImg8bit.png"] = encoded(
                rng.integers(0, 255, (16, 32, 3), dtype=np.uint8), "PNG"
            )
    paths = [folder / "gtFine_trainvaltest.zip", folder / "leftImg8bit_trainvaltest.zip"]
    paths[0].write_bytes(zip_bytes(gt))
    paths[1].write_bytes(zip_bytes(left))
    return [str(p) for p in paths]


def test_cityscapes_from_local_archives(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(
        DATASETS, "cityscapes", dataclasses.replace(DATASETS["cityscapes"], split_counts={"train": 2, "validation": 1})
    )
    archives = cityscapes_archives(tmp_path)
    line = one_line_error(monkeypatch, capsys, PREPARE, "cityscapes", "--root", str(tmp_path / "data"))
    assert "gtFine_trainvaltest.zip not given" in line and "--archives" in line and "login" in line
    result = run_script(
        PREPARE, "cityscapes", "--archives", *archives, "--root", str(tmp_path / "data"), "--no_progress"
    )
    assert result.splits == {"train": 2, "validation": 1}
    assert all(Path(p).is_file() for p in archives)  # the user's archives stay
    folder = tmp_path / "data" / "cityscapes"
    dataset = build_dataset(str(folder), "train", reduce_labels=False)
    assert dataset.num_labels == 19 and dataset.id2label[13] == "car"
    # trainIds from cityscapesScripts' table: road 7 -> 0, car 26 -> 13, person 24 -> 11, unlabeled 0 -> 255
    first, second = (
        np.array(Image.open(folder / "annotations/training" / f"aachen_{i:06d}_000019.png")) for i in (0, 1)
    )
    assert (
        first[0, 0] == 11
        and (first[:, 8:] == 0).all()
        and (first[1:, :8] == 255).all()
        and (second[:, 8:] == 13).all()
    )
    assert sorted(p.name for p in (folder / "images/validation").iterdir()) == ["frankfurt_000000_000019.png"]


def test_a_truncated_local_archive_is_one_line(tmp_path, monkeypatch, capsys):
    archives = cityscapes_archives(tmp_path)
    data = Path(archives[1]).read_bytes()
    Path(archives[1]).write_bytes(data[: len(data) // 2])
    line = one_line_error(
        monkeypatch, capsys, PREPARE, "cityscapes", "--archives", *archives, "--root", str(tmp_path / "data")
    )
    assert "damaged or truncated zip archive" in line
    assert not (tmp_path / "data" / "cityscapes").exists() and leftovers(tmp_path / "data") == []


# ----------------------------------------------------------------------------------------------------------
# Dead Hub names and loading scripts.
# ----------------------------------------------------------------------------------------------------------
def test_dead_hub_names_name_the_prepare_command(tmp_path, monkeypatch):
    monkeypatch.setenv("MASKFORMER_DATA", str(tmp_path / "empty"))
    with pytest.raises(FileNotFoundError) as error:
        build_dataset("scene_parse_150", "train", reduce_labels=True)
    message = str(error.value)
    assert (
        "loading-script dataset" in message
        and f"python scripts/prepare_data.py ade20k --root {tmp_path / 'empty'}" in message
    )


def test_a_loading_script_dataset_gets_a_clear_error(tmp_path, monkeypatch):
    """The installed `datasets` refuses loading scripts with a RuntimeError (checked here, on a local folder holding
    one); build_dataset turns it into a ValueError that says what to do instead."""
    import datasets

    folder = tmp_path / "my_script_dataset"
    folder.mkdir()
    (folder / "my_script_dataset.py").write_text("import datasets\n")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(RuntimeError, match="Dataset scripts are no longer supported"):
        datasets.load_dataset("my_script_dataset", split="train")
    with pytest.raises(ValueError, match="is a loading script, which datasets .* no longer runs.*prepare_data.py"):
        load_hf_dataset("my_script_dataset", "train")


# ----------------------------------------------------------------------------------------------------------
# reproduce.py --download.
# ----------------------------------------------------------------------------------------------------------
def test_reproduce_download_prepares_the_row_data_then_runs(site, served_ade, tmp_path, monkeypatch, capsys):
    checkpoint = tmp_path / "checkpoint"
    save_transformers_checkpoint(checkpoint, num_labels=150, predicted=7)
    data_root = tmp_path / "data"
    common = (
        "resnet50-ade",
        "--model",
        str(checkpoint),
        "--limit",
        "2",
        "--device",
        "cpu",
        "--data_root",
        str(data_root),
        "--output_dir",
        str(tmp_path / "out"),
    )
    line = one_line_error(monkeypatch, capsys, REPRODUCE, *common)
    assert "not prepared in" in line and "--download" in line and "prepare_data.py ade20k" in line
    assert site.requests == []
    report = run_script(REPRODUCE, *common, "--download", "--mirror", site.mirror)
    assert report["dataset"]["source"] == str(data_root / "ADEChallengeData2016")
    assert report["dataset"]["images_evaluated"] == 2 and report["measured"]["value"] >= 0
    assert len(site.requests) == 1
    again = run_script(REPRODUCE, *common, "--download", "--mirror", site.mirror)  # prepared: no new request
    assert again["measured"] == report["measured"] and len(site.requests) == 1


# ----------------------------------------------------------------------------------------------------------
# Long loads show progress.
# ----------------------------------------------------------------------------------------------------------
def test_the_class_counting_pass_shows_progress_when_it_is_long(tmp_path, capsys):
    """A pass over 4 annotations that takes over 2 s (each read slowed down) shows a bar on stderr; a quick one
    shows none."""
    import time

    from modeling_maskformer.data.decoding import scan_num_labels

    paths = []
    for i in range(4):
        paths.append(tmp_path / f"{i}.png")
        Image.fromarray(np.full((4, 4), i + 1, np.uint8)).save(paths[-1])

    class Slow(list):
        def __iter__(self):
            for path in super().__iter__():
                time.sleep(0.8)
                yield path

    assert scan_num_labels(paths, True, 255) == 4 and "counting classes" not in capsys.readouterr().err
    assert scan_num_labels(Slow(paths), True, 255) == 4
    assert re.search(r"counting classes: +\d+%", capsys.readouterr().err)
