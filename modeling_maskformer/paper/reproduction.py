"""Reproduce one model-zoo row (`paper.zoo`): convert its transformers checkpoint, evaluate it with the authors'
settings, compare with the paper (`reproduce("swin-large-ade", tta=True, download=True)`; `scripts/reproduce.py`)."""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path
from typing import Any

import torch
from huggingface_hub import EvalResult

from ..data import build_dataset
from ..data.prepare import get_spec, prepare
from ..data.registry import default_data_root, prepare_command, prepared_folder
from ..errors import InvalidInputError, MissingInputError, first_line
from ..evaluation import evaluate_model
from ..interop.hub import build_model_card
from ..interop.transformers_weights import convert_from_transformers
from .zoo import AUTHORS_REPOSITORY, MODEL_ZOO_SOURCE, ZooEntry, get_entry

logger = logging.getLogger(__name__)


def check_request(
    entry: ZooEntry,
    *,
    tta: bool,
    limit: int | None,
    device: str | None,
    dataset: str | None,
    download: bool = False,
    data_root: str | Path | None = None,
) -> torch.device:
    """The device to run on, or a user error before anything is downloaded."""
    if tta and entry.task != "semantic":
        raise InvalidInputError(
            f"row {entry.name}: test-time augmentation applies to semantic rows ({entry.dataset} is evaluated by "
            "PQ, single-scale)"
        )
    if tta and entry.tta is None:
        reason = entry.notes[0] if entry.notes else "the authors' config gives no test-time augmentation sizes"
        raise InvalidInputError(f"row {entry.name}: no multi-scale setting to reproduce ({reason})")
    if limit is not None and limit < 1:
        raise InvalidInputError(f"--limit must be >= 1, got {limit}")
    if dataset is None:
        check_row_data(entry, download=download, data_root=data_root)
    if device is not None:
        return torch.device(device)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if limit is None:
        raise InvalidInputError(
            f"no GPU: evaluating all {entry.num_images} {entry.dataset} images ({entry.tta.num_views if tta else 1} "
            f"view(s) each) with {entry.hub_id} needs one; use --limit N for a quick look on the CPU, or --device cpu "
            "to run it anyway"
        )
    return torch.device("cpu")


def check_row_data(entry: ZooEntry, *, download: bool, data_root: str | Path | None) -> None:
    if entry.prepare is None:
        raise MissingInputError(
            f"row {entry.name} needs the {entry.dataset} data, which prepare_data.py does not fetch: pass --dataset "
            f"FOLDER ({entry.layout})"
        )
    if prepared_folder(entry.prepare, data_root, entry.split) is not None:
        return
    root = Path(data_root or default_data_root()).expanduser()
    command = prepare_command(entry.prepare, root, [entry.split])
    if all(archive.url is None for archive in get_spec(entry.prepare).archives.values()):
        raise MissingInputError(
            f"row {entry.name} needs the {entry.dataset} data, which needs a login to download, so --download "
            f"cannot fetch it: download the archives, then run `{command}`"
        )
    if not download:
        raise MissingInputError(
            f"row {entry.name} needs the {entry.dataset} {entry.split} data, not prepared in {root}: add --download "
            f"(it runs `{command}`), or pass --data_root or --dataset FOLDER ({entry.layout})"
        )


def load_row_dataset(entry: ZooEntry, source: str, id2label: dict[int, str] | None):
    """The row's evaluation split from `source` (a folder or `datasets` name)."""
    kwargs: dict[str, Any] = {}
    if entry.task == "semantic":
        processor = entry.variant.processor
        kwargs = {"reduce_labels": bool(processor.get("do_reduce_labels")), "ignore_index": processor["ignore_index"]}
        if id2label is not None:  # NOTE: the model's class names; without them the loader scans every annotation
            kwargs["id2label"] = id2label
    try:
        return build_dataset(source, entry.split, **kwargs)
    except (OSError, ValueError, ConnectionError) as error:
        if Path(source).expanduser().exists() or str(source).startswith((".", "/", "~")):
            raise
        raise MissingInputError(
            f"dataset {source!r} could not be loaded ({type(error).__name__}: {first_line(error)}); without network "
            f"access pass --dataset FOLDER ({entry.layout})"
        ) from error


def reproduce(
    row: str | ZooEntry,
    *,
    tta: bool = False,
    limit: int | None = None,
    model: str | None = None,
    dataset: str | None = None,
    output_dir: str | Path | None = None,
    device: str | None = None,
    batch_size: int = 1,
    model_card: bool = False,
    download: bool = False,
    data_root: str | Path | None = None,
    mirror: str | None = None,
) -> dict[str, Any]:
    """Evaluate a zoo row, single-scale or with its TEST.AUG (`tta`), on the first `limit` images, against the paper.
    `model`/`dataset` replace the Hub id / the row's prepared folder under `data_root` (prepared with `download`,
    from `mirror`); `device`: a GPU, the CPU only with `limit`. The report is also written to
    `output_dir/reproduction.json` (default `outputs/reproduce/<row>`), with `model_card` a README.md."""
    entry = row if isinstance(row, ZooEntry) else get_entry(row)
    run_device = check_request(
        entry, tta=tta, limit=limit, device=device, dataset=dataset, download=download, data_root=data_root
    )
    output_dir = Path(output_dir or Path("outputs") / "reproduce" / entry.name)
    source = model or entry.hub_id
    net, processor = convert_from_transformers(source, output_dir)
    if dataset is None:
        folder = prepared_folder(entry.prepare, data_root, entry.split)
        if folder is None:  # check_row_data has allowed the download
            result = prepare(entry.prepare, data_root, splits=[entry.split], mirror=mirror, progress=True)
            logger.warning(result.summary())
            folder = result.folder
        dataset = str(folder)
    id2label = {int(k): v for k, v in net.config.id2label.items()} if entry.task == "semantic" else None
    data = load_row_dataset(entry, dataset, id2label)
    if data.num_labels != net.config.num_labels:
        raise InvalidInputError(
            f"{source} predicts {net.config.num_labels} classes but the dataset has {data.num_labels}"
        )
    # The authors' single-scale test size and padding for this row (the Hub's preprocessor_config may differ).
    processor.size = {"shortest_edge": entry.test_size, "longest_edge": entry.max_test_size}
    processor.size_divisor, processor.do_resize = entry.size_divisor, True
    augmentation = entry.tta if tta else None
    results = evaluate_model(
        net.to(run_device),
        processor,
        data,
        batch_size=batch_size,
        max_items=limit,
        tta=augmentation,
        panoptic_threshold=entry.threshold or 0.5,
        overlap_threshold=entry.overlap_threshold or 0.8,
    )
    evaluated = len(data) if limit is None else min(limit, len(data))
    measured = 100 * (results["panoptic"]["pq"] if entry.task == "panoptic" else results["semantic"]["mean_iou"])
    paper = entry.paper_multi_scale if tta else entry.paper_single_scale
    report = {
        "row": entry.name,
        "hub_id": entry.hub_id,
        "checkpoint": str(source),
        "converted_folder": str(output_dir),
        "dataset": {
            "name": entry.dataset,
            "source": str(dataset),
            "split": entry.split,
            "images_evaluated": evaluated,
            "images_in_split": entry.num_images,
        },
        "settings": {
            "test_size": entry.test_size,
            "max_test_size": entry.max_test_size,
            "size_divisor": entry.size_divisor,
            "test_time_augmentation": augmentation and json.loads(json.dumps(dataclasses.asdict(augmentation))),
            "threshold": entry.threshold,
            "overlap_threshold": entry.overlap_threshold,
            "authors_config": f"{AUTHORS_REPOSITORY}/blob/main/{entry.config}",
        },
        "metric": entry.metric,
        "paper": {
            "value": paper,
            "setting": "multi-scale + flip" if tta else "single-scale",
            "source": MODEL_ZOO_SOURCE,
        },
        "measured": {
            "value": round(measured, 2),
            "where": "measured here (modeling_maskformer)",
            "device": str(run_device),
            "complete": evaluated == entry.num_images,
        },
        "difference": None if paper is None else round(measured - paper, 2),
        "results": results,
    }
    output_dir.mkdir(parents=True, exist_ok=True)
    (output_dir / "reproduction.json").write_text(json.dumps(report, indent=2, allow_nan=False) + "\n")
    if model_card:
        write_model_card(net.config, report, output_dir / "README.md")
    return report


def summary_line(report: dict[str, Any]) -> str:
    paper, measured, data = report["paper"], report["measured"], report["dataset"]
    paper_text = "not reported" if paper["value"] is None else f"{paper['value']:.1f}"
    difference = "" if report["difference"] is None else f", difference {report['difference']:+.2f}"
    partial = "" if measured["complete"] else " (a partial evaluation: not comparable with the paper)"
    return (
        f"{report['row']}: {report['metric']} ({paper['setting']}) paper {paper_text} vs measured "
        f"{measured['value']:.2f} on {data['images_evaluated']}/{data['images_in_split']} images{difference}{partial}"
    )


def write_model_card(config, report: dict[str, Any], path: Path) -> None:
    """The model card, with `model-index` entries for the measured and the paper's figure."""
    entry = get_entry(report["row"])
    setting, metric, data = report["paper"]["setting"], report["metric"], report["dataset"]
    common = {
        "task_type": "image-segmentation",
        "dataset_type": entry.datasets_name or entry.dataset,
        "dataset_name": data["name"],
        "dataset_split": data["split"],
        "metric_type": metric.lower(),
        "verified": False,
    }
    names = {
        "measured": f"{metric} ({setting}), measured here on {data['images_evaluated']} images with modeling_maskformer",
        "paper": f"{metric} ({setting}), from the paper: {MODEL_ZOO_SOURCE}",
    }
    results = [
        EvalResult(**common, metric_value=report[key]["value"], metric_config=key, metric_name=name)
        for key, name in names.items()
        if report[key]["value"] is not None
    ]
    metric_key = "pq" if metric == "PQ" else "mean_iou"
    card = build_model_card(config, repo_id=report["hub_id"], metrics={metric_key: report["measured"]["value"] / 100})
    card.data.eval_results = results
    card.data.model_name = report["hub_id"].split("/")[-1]
    card.text += (
        f"\n## Reproduction\n\nConverted from the transformers checkpoint `{report['checkpoint']}`.\n\n"
        f"| {metric} ({setting}) | value | source |\n|---|---|---|\n"
        f"| paper | {report['paper']['value']} | {MODEL_ZOO_SOURCE} |\n"
        f"| measured | {report['measured']['value']} | here, {data['images_evaluated']} of "
        f"{data['images_in_split']} images, `scripts/reproduce.py` |\n"
    )
    card.save(path)
