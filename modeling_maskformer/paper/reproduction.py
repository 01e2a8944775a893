"""Reproduce one row of the model zoo (`modeling_maskformer.paper.zoo`): convert its transformers checkpoint, evaluate
it on its dataset with the authors' settings, and compare with the paper. `scripts/reproduce.py` is the command
line.

    from modeling_maskformer.paper.reproduction import reproduce

    report = reproduce("swin-large-ade", tta=True, download=True)   # the network (or local folders), in full a GPU
    report["measured"]["value"], report["paper"]["value"], report["difference"]
"""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path
from typing import Any

import torch

from ..data import build_dataset
from ..data.prepare import default_data_root, get_spec, prepare, prepared_folder
from ..evaluation import evaluate_model
from ..interop.hub import build_model_card, check_model_card
from ..interop.transformers_weights import convert_from_transformers
from .zoo import AUTHORS_REPOSITORY, MODEL_ZOO_SOURCE, ZooEntry, get_entry

logger = logging.getLogger(__name__)


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return f"{type(error).__name__}: {text.splitlines()[0] if text else ''}"


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
    """The device to run on, or an error naming what is missing or wrong, before anything is downloaded."""
    if tta and entry.task != "semantic":
        raise ValueError(
            f"row {entry.name}: test-time augmentation applies to semantic rows ({entry.dataset} is "
            f"evaluated by PQ, single-scale)"
        )
    if tta and entry.tta is None:
        reason = entry.notes[0] if entry.notes else "the authors' config gives no test-time augmentation sizes"
        raise ValueError(f"row {entry.name}: no multi-scale setting to reproduce ({reason})")
    if limit is not None and limit < 1:
        raise ValueError(f"--limit must be >= 1, got {limit}")
    if dataset is None:
        check_row_data(entry, download=download, data_root=data_root)
    if device is not None:
        return torch.device(device)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if limit is None:
        views = entry.tta.num_views if tta else 1
        raise ValueError(
            f"no GPU: evaluating all {entry.num_images} {entry.dataset} images ({views} view(s) each) with "
            f"{entry.hub_id} needs one; use --limit N for a quick look on the CPU, or --device cpu to run it anyway"
        )
    return torch.device("cpu")


def check_row_data(entry: ZooEntry, *, download: bool, data_root: str | Path | None) -> None:
    """Without --dataset: the row's data must be prepared under `data_root`, or `download` must be able to prepare
    it; otherwise an error naming the command that does."""
    if entry.prepare is None:
        raise FileNotFoundError(
            f"row {entry.name} needs the {entry.dataset} data, which prepare_data.py does not "
            f"fetch: pass --dataset FOLDER ({entry.layout})"
        )
    if prepared_folder(entry.prepare, data_root, entry.split) is not None:
        return
    root = Path(data_root or default_data_root()).expanduser()
    command = entry.prepare_command.replace("DIR", str(root))
    if all(archive.url is None for archive in get_spec(entry.prepare).archives.values()):
        raise FileNotFoundError(
            f"row {entry.name} needs the {entry.dataset} data, which needs a login to download, "
            f"so --download cannot fetch it: download the archives, then run `{command}`"
        )
    if not download:
        raise FileNotFoundError(
            f"row {entry.name} needs the {entry.dataset} {entry.split} data, not prepared in {root}: add --download "
            f"(it runs `{command}`), or pass --data_root or --dataset FOLDER ({entry.layout})"
        )


def row_data_source(
    entry: ZooEntry, dataset: str | None, *, data_root: str | Path | None, mirror: str | None, progress: bool
) -> str:
    """`dataset`, else the row's prepared folder under `data_root`, prepared now when missing (check_row_data has
    allowed it)."""
    if dataset is not None:
        return dataset
    folder = prepared_folder(entry.prepare, data_root, entry.split)
    if folder is None:
        result = prepare(entry.prepare, data_root, splits=[entry.split], mirror=mirror, progress=progress)
        logger.warning(result.summary())
        folder = result.folder
    return str(folder)


def load_row_dataset(entry: ZooEntry, source: str, id2label: dict[int, str] | None):
    """The row's evaluation split from `source` (a local folder or `datasets` name), with an error that says what
    to pass when it cannot be read."""
    kwargs: dict[str, Any] = {}
    if entry.task == "semantic":
        kwargs = {"reduce_labels": entry.label_convention == "ade", "ignore_index": entry.ignore_index}
        if id2label is not None:  # NOTE: the model's class names; without them the loader scans every annotation
            kwargs["id2label"] = id2label
    local = Path(source).expanduser().exists() or str(source).startswith((".", "/", "~"))
    try:
        return build_dataset(source, entry.split, **kwargs)
    except (OSError, ValueError, ConnectionError) as error:
        if local:
            raise
        raise OSError(
            f"dataset {source!r} could not be loaded ({_first_line(error)}); without network access pass --dataset "
            f"FOLDER ({entry.layout})"
        ) from error


def set_row_processing(processor, entry: ZooEntry) -> None:
    """The authors' single-scale test size and padding for this row (the Hub's preprocessor_config may differ)."""
    processor.size = {"shortest_edge": entry.test_size, "longest_edge": entry.max_test_size}
    processor.size_divisor = entry.size_divisor
    processor.do_resize = True


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
    show_progress: bool = True,
    download: bool = False,
    data_root: str | Path | None = None,
    mirror: str | None = None,
) -> dict[str, Any]:
    """Evaluate a model-zoo row and compare with the paper. Returns the report (also written to
    `output_dir/reproduction.json`; with `model_card`, `model-index` entries go into `output_dir/README.md`).

    Args:
        row: A zoo row name, repo name or Hub id (`zoo.get_entry`).
        tta: Multi-scale + flip (the row's TEST.AUG sizes) instead of single-scale; semantic rows only.
        limit: Evaluate only the first `limit` images.
        model: The transformers checkpoint to convert, when not the row's Hub id (a local folder).
        dataset: A local folder or `datasets` name, when not the row's prepared folder (`zoo.ZooEntry.prepare`
            under `data_root`, default `data.prepare.default_data_root()`).
        download: Prepare the row's data when it is missing (`data.prepare.prepare`), without asking.
        mirror: With `download`: a base URL serving the official archive paths.
        output_dir: Where the converted model, the JSON and the model card go (default
            `outputs/reproduce/<row>`).
        device: "cuda", "cpu", ... (default: a GPU; without one only with `limit`).
    """
    entry = row if isinstance(row, ZooEntry) else get_entry(row)
    run_device = check_request(
        entry, tta=tta, limit=limit, device=device, dataset=dataset, download=download, data_root=data_root
    )
    output_dir = Path(output_dir or Path("outputs") / "reproduce" / entry.name)
    source = model or entry.hub_id
    net, processor = convert_from_transformers(source, output_dir)
    id2label = {int(k): v for k, v in net.config.id2label.items()}
    dataset = row_data_source(entry, dataset, data_root=data_root, mirror=mirror, progress=show_progress)
    data = load_row_dataset(entry, dataset, id2label if entry.task == "semantic" else None)
    if data.num_labels != net.config.num_labels:
        raise ValueError(f"{source} predicts {net.config.num_labels} classes but the dataset has {data.num_labels}")
    set_row_processing(processor, entry)
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
        show_progress=show_progress,
    )
    evaluated = len(data) if limit is None else min(limit, len(data))
    measured = 100 * (results["panoptic"]["pq"] if entry.task == "panoptic" else results["semantic"]["mean_iou"])
    paper = entry.paper_value(tta)
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
            "test_time_augmentation": json.loads(json.dumps(dataclasses.asdict(augmentation)))
            if augmentation
            else None,
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
    """`<row>: <metric> paper P (setting) vs measured M on n/N images: difference D`."""
    paper, measured = report["paper"], report["measured"]
    data = report["dataset"]
    paper_text = "not reported" if paper["value"] is None else f"{paper['value']:.1f}"
    difference = "" if report["difference"] is None else f", difference {report['difference']:+.2f}"
    partial = "" if measured["complete"] else " (a partial evaluation: not comparable with the paper)"
    return (
        f"{report['row']}: {report['metric']} ({paper['setting']}) paper {paper_text} vs measured "
        f"{measured['value']:.2f} on {data['images_evaluated']}/{data['images_in_split']} images{difference}"
        f"{partial}"
    )


def write_model_card(config, report: dict[str, Any], path: Path) -> None:
    """The converted folder's model card with `model-index` entries for the paper's figure and the measured one,
    each named by where it comes from."""
    from huggingface_hub import EvalResult

    entry = get_entry(report["row"])
    setting = report["paper"]["setting"]
    common = {
        "task_type": "image-segmentation",
        "dataset_type": entry.datasets_name or entry.dataset,
        "dataset_name": report["dataset"]["name"],
        "dataset_split": report["dataset"]["split"],
        "metric_type": report["metric"].lower(),
        "verified": False,
    }
    results = [
        EvalResult(
            **common,
            metric_value=report["measured"]["value"],
            metric_config="measured",
            metric_name=f"{report['metric']} ({setting}), measured here on {report['dataset']['images_evaluated']} "
            f"images with modeling_maskformer",
        )
    ]
    if report["paper"]["value"] is not None:
        results.append(
            EvalResult(
                **common,
                metric_value=report["paper"]["value"],
                metric_config="paper",
                metric_name=f"{report['metric']} ({setting}), from the paper: {MODEL_ZOO_SOURCE}",
            )
        )
    metric_key = "pq" if report["metric"] == "PQ" else "mean_iou"
    card = build_model_card(config, repo_id=report["hub_id"], metrics={metric_key: report["measured"]["value"] / 100})
    card.data.eval_results = results
    card.data.model_name = report["hub_id"].split("/")[-1]
    card.text += (
        f"\n## Reproduction\n\nConverted from the transformers checkpoint `{report['checkpoint']}`.\n\n"
        f"| {report['metric']} ({setting}) | value | source |\n|---|---|---|\n"
        f"| paper | {report['paper']['value']} | {MODEL_ZOO_SOURCE} |\n"
        f"| measured | {report['measured']['value']} | here, {report['dataset']['images_evaluated']} of "
        f"{report['dataset']['images_in_split']} images, `scripts/reproduce.py` |\n"
    )
    check_model_card(card)
    card.save(path)
