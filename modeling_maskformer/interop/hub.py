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

WIDGET_IMAGE = "https://huggingface.co/datasets/huggingface/documentation-images/resolve/main/coco_sample.png"
_TEMPLATE = """---
{{ card_data }}
---

# {{ title }}

MaskFormer ([Cheng, Schwing, Kirillov, NeurIPS 2021](https://arxiv.org/abs/2107.06278)) treats segmentation as
mask classification: {{ num_queries }} queries each predict a binary mask and one of {{ num_labels }} classes (or
"no object"); the task (semantic, instance, panoptic) is chosen at post-processing.

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
`pipeline()` load it with no `trust_remote_code`. The `modeling_maskformer` package's `from_pretrained` also restores
its training settings (config.json's `maskformer_hf_training`, which transformers ignores) to continue training.
{% else %}
transformers' MaskFormer cannot represent this model ({{ refusals }}), so the folder carries its code: it loads
with `trust_remote_code=True` (or with the `modeling_maskformer` package's classes), and the Hub's inference widget
(which runs no remote code) does not work.
{% endif %}
```python
from transformers import pipeline

segmenter = pipeline("image-segmentation", model="{{ repo_id }}"{{ "" if transformers_native else ", trust_remote_code=True" }})
segments = segmenter("image.jpg", subtask="semantic")
```
{% if training_args %}
## Training arguments

```json
{{ training_args }}
```
{% endif %}"""
TAGS = ["maskformer", "image-segmentation", "vision", "semantic-segmentation", "panoptic-segmentation"]
# Our metric key -> (name shown, `model-index` metric type).
_METRIC_NAMES = {"mean_iou": ("mIoU", "mean_iou"), "pixel_accuracy": ("pixel accuracy", "accuracy")}
_METRIC_NAMES |= {"pq": ("PQ", "pq"), "mask_ap": ("mask AP", "map")}


def build_model_card(
    config,
    *,
    repo_id: str = "your-name/maskformer",
    metrics: dict[str, float | None] | None = None,
    dataset: str | None = None,
    base_model: str | None = None,
    training_args: dict[str, Any] | None = None,
    transformers_native: bool | None = None,
    tags: list[str] | None = None,
) -> ModelCard:
    """A model card with Hub metadata (a `model-index` when metrics and dataset are known); the usage
    section says how the folder loads (`transformers_native`, default: whether transformers represents `config`)."""
    refusals = transformers_refusals(config)
    metrics = {name: round(float(value), 4) for name, value in (metrics or {}).items() if value is not None}
    eval_results = [
        EvalResult(
            task_type="image-segmentation",
            dataset_type=dataset,
            dataset_name=dataset,
            metric_name=_METRIC_NAMES.get(name, (name, name))[0],
            metric_type=_METRIC_NAMES.get(name, (name, name))[1],
            metric_value=value,
        )
        for name, value in metrics.items()
    ]
    card_data = ModelCardData(
        library_name="transformers",
        pipeline_tag="image-segmentation",
        tags=[*TAGS, *(tags or [])],
        license="apache-2.0",
        datasets=[dataset] if dataset else None,
        base_model=base_model,
        model_name=repo_id.split("/")[-1],
        eval_results=eval_results if dataset else None,
        widget=[{"src": WIDGET_IMAGE}],
    )
    backbone = getattr(config.backbone_config, "model_type", "?")
    if getattr(config.backbone_config, "backbone", None):
        backbone += f" ({config.backbone_config.backbone})"
    card = ModelCard.from_template(
        card_data,
        template_str=_TEMPLATE,
        title=f"MaskFormer: {repo_id.split('/')[-1]}",
        num_queries=config.num_queries,
        num_labels=config.num_labels,
        backbone=backbone,
        pixel_decoder=config.pixel_decoder_type,
        decoder_layers=config.decoder_layers,
        base_model=base_model,
        dataset=dataset,
        metrics=metrics,
        repo_id=repo_id,
        transformers_native=not refusals if transformers_native is None else transformers_native,
        refusals="; ".join(refusals) or "saved with folder_format='remote_code'",
        training_args=json.dumps(training_args, indent=2, default=str) if training_args else None,
    )
    return card


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
    """Create the repo if needed and upload the folder (`upload`: `upload_folder`'s arguments); the commit URL."""
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
    """Upload `save_pretrained`'s folder, the processor and a model card; returns the commit URL."""
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
