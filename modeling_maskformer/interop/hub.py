"""Hub plumbing: the model card (the folder's README.md, with Hub metadata), the upload, and `push_to_hub` for our
models (registered by the package face)."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

from huggingface_hub import EvalResult, HfApi, ModelCard, ModelCardData

from ..configuration.transformers_format import transformers_refusals
from ..errors import MissingInputError
from ..modeling_maskformer import FolderFormat
from .transformers_folder import is_transformers_folder

PAPER = "https://arxiv.org/abs/2107.06278"
DEFAULT_WIDGET_IMAGES = [
    "https://huggingface.co/datasets/huggingface/documentation-images/resolve/main/coco_sample.png"
]
_TEMPLATE = """---
{{ card_data }}
---

# {{ title }}

MaskFormer ([Cheng, Schwing, Kirillov, NeurIPS 2021]({{ paper }})) treats segmentation as mask classification:
{{ num_queries }} queries each predict a binary mask and one of {{ num_labels }} classes (or "no object"). One model
serves semantic, instance and panoptic segmentation; the task is chosen at post-processing.

- Backbone: `{{ backbone }}`; pixel decoder: `{{ pixel_decoder }}`; decoder layers: {{ decoder_layers }}.
{% if base_model %}- Fine-tuned from: `{{ base_model }}`.
{% endif %}{% if dataset %}- Trained on: `{{ dataset }}`.
{% endif %}
## Results
{% if metrics %}
| metric | value |
|---|---|
{% for name, value in metrics.items() %}| {{ name }} | {{ value }} |
{% endfor %}{% else %}
No evaluation results recorded.
{% endif %}
## Usage
{% if transformers_native %}
This folder is in transformers' own MaskFormer format: plain transformers, the Hub's inference widget and
`pipeline()` load it with no `trust_remote_code`.

```python
from transformers import pipeline

segmenter = pipeline("image-segmentation", model="{{ repo_id }}")
segments = segmenter("image.jpg", subtask="semantic")
```

The training settings of the `modeling_maskformer` package ride along in config.json (`maskformer_hf_training`,
which transformers ignores): its `MaskFormerForInstanceSegmentation.from_pretrained("{{ repo_id }}")` restores
them to continue training.
{% else %}
transformers' MaskFormer cannot represent this model ({{ refusals }}), so the folder carries its code: it loads
with `trust_remote_code=True`, and the Hub's inference widget (which runs no remote code) does not work.

```python
from transformers import pipeline

segmenter = pipeline("image-segmentation", model="{{ repo_id }}", trust_remote_code=True)
segments = segmenter("image.jpg", subtask="semantic")
```

With the `modeling_maskformer` package installed, its classes' `from_pretrained("{{ repo_id }}")` works without
`trust_remote_code`.
{% endif %}{% if training_args %}
## Training arguments

```json
{{ training_args }}
```
{% endif %}"""
TAGS = ["maskformer", "image-segmentation", "vision", "semantic-segmentation", "panoptic-segmentation"]
# Our metric key -> (name shown, `model-index` metric type).
_METRIC_NAMES = {
    "mean_iou": ("mIoU", "mean_iou"),
    "pixel_accuracy": ("pixel accuracy", "accuracy"),
    "pq": ("PQ", "pq"),
    "mask_ap": ("mask AP", "map"),
}


def build_model_card(
    config,
    *,
    repo_id: str = "your-name/maskformer",
    metrics: dict[str, float | None] | None = None,
    dataset: str | None = None,
    base_model: str | None = None,
    training_args: dict[str, Any] | None = None,
    license: str = "apache-2.0",
    widget_images: list[str] | None = None,
    transformers_native: bool | None = None,
    tags: list[str] | None = None,
) -> ModelCard:
    """A model card with Hub metadata (`library_name`, `pipeline_tag`, tags, license, datasets, base model,
    widget examples, and a `model-index` when metrics are known), validated by huggingface_hub.

    `transformers_native`: whether the folder is in transformers' own format (default: whether transformers
    can represent `config`, which is what `save_pretrained` decides); the usage section says which way the
    folder loads."""
    refusals = transformers_refusals(config)
    if transformers_native is None:
        transformers_native = not refusals
    metrics = {name: value for name, value in (metrics or {}).items() if value is not None}
    eval_results = None
    if metrics and dataset:
        eval_results = [
            EvalResult(
                task_type="image-segmentation",
                dataset_type=dataset,
                dataset_name=dataset,
                metric_name=_METRIC_NAMES.get(name, (name, name))[0],
                metric_type=_METRIC_NAMES.get(name, (name, name))[1],
                metric_value=round(float(value), 4),
            )
            for name, value in metrics.items()
        ]
    card_data = ModelCardData(
        library_name="transformers",
        pipeline_tag="image-segmentation",
        tags=[*TAGS, *(tags or [])],
        license=license,
        datasets=[dataset] if dataset else None,
        base_model=base_model,
        model_name=repo_id.split("/")[-1],
        eval_results=eval_results,
        widget=[{"src": src} for src in (widget_images or DEFAULT_WIDGET_IMAGES)],
    )
    backbone = getattr(config.backbone_config, "model_type", "?")
    if getattr(config.backbone_config, "backbone", None):
        backbone += f" ({config.backbone_config.backbone})"
    card = ModelCard.from_template(
        card_data,
        template_str=_TEMPLATE,
        title=f"MaskFormer: {repo_id.split('/')[-1]}",
        paper=PAPER,
        num_queries=config.num_queries,
        num_labels=config.num_labels,
        backbone=backbone,
        pixel_decoder=config.pixel_decoder_type,
        decoder_layers=config.decoder_layers,
        base_model=base_model,
        dataset=dataset,
        metrics={name: round(float(value), 4) for name, value in metrics.items()},
        repo_id=repo_id,
        transformers_native=transformers_native,
        refusals="; ".join(refusals) or "saved with folder_format='remote_code'",
        training_args=json.dumps(training_args, indent=2, default=str) if training_args else None,
    )
    check_model_card(card)
    return card


def check_model_card(card: ModelCard) -> None:
    """Offline check (`ModelCard.validate` asks the Hub): the metadata parses back unchanged and carries
    what the Hub's widgets and search need."""
    parsed = ModelCard(str(card))
    if parsed.data.to_dict() != card.data.to_dict():
        raise ValueError("model card metadata does not round-trip through huggingface_hub")
    for field in ("library_name", "pipeline_tag", "license", "tags"):
        if not getattr(parsed.data, field, None):
            raise ValueError(f"model card metadata lacks {field!r}")


def push_folder_to_hub(
    folder: str | Path,
    repo_id: str,
    *,
    token: str | None = None,
    private: bool = False,
    commit_message: str = "Upload MaskFormer",
    api: HfApi | None = None,
    **upload: Any,
) -> str:
    """Create the repo if needed and upload the folder (weights, configs, processor, card, code); `upload`:
    `upload_folder`'s `commit_description`, `revision`, `create_pr`. Returns the commit URL."""
    folder = Path(folder)
    if not (folder / "config.json").is_file():
        raise MissingInputError(f"{folder} has no config.json: save the model with save_pretrained first")
    api = api or HfApi(token=token)
    api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
    upload = {key: value for key, value in upload.items() if value}
    commit = api.upload_folder(
        repo_id=repo_id, folder_path=str(folder), commit_message=commit_message, repo_type="model", **upload
    )
    return getattr(commit, "commit_url", str(commit))


def push_to_hub(
    model,
    repo_id: str,
    *,
    processor=None,
    metrics: dict | None = None,
    dataset: str | None = None,
    base_model: str | None = None,
    tags: list[str] | None = None,
    folder_format: FolderFormat = "auto",
    max_shard_size: int | str = "50GB",
    **upload: Any,
) -> str:
    """Upload a Hub-ready folder: weights and config (transformers' own format when it represents the model, see
    `save_pretrained`), processor and a model card with metadata (and `model-index` when `metrics` are given;
    `tags` added to its tags). `upload`: `push_folder_to_hub`'s arguments (`token`, `private`, `commit_message`,
    `commit_description`, `revision`, `create_pr`, `api`), which mean what they mean in transformers. Returns the
    commit URL."""
    with tempfile.TemporaryDirectory() as folder:
        model.save_pretrained(folder, folder_format=folder_format, max_shard_size=max_shard_size)
        if processor is not None:
            processor.save_pretrained(folder)
        card = build_model_card(
            model.config,
            repo_id=repo_id,
            metrics=metrics,
            dataset=dataset,
            base_model=base_model,
            transformers_native=is_transformers_folder(folder),
            tags=tags,
        )
        card.save(f"{folder}/README.md")
        return push_folder_to_hub(folder, repo_id, **upload)
