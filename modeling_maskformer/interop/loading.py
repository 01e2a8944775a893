"""`from_pretrained` for our models (registered by the package face): transformers' loading, plus a
`MaskFormerLoadError` naming the config field when the weights do not fit config.json (checked from the safetensors
header before loading, and from transformers' loading info after)."""

from __future__ import annotations

import copy
import logging
import os
import re
from collections.abc import Callable, Mapping
from pathlib import Path

import torch
from safetensors import safe_open

from ..errors import MissingInputError, UserError, first_line
from ..modeling_maskformer import MaskFormerModel
from .transformers_folder import checkpoint_files, is_transformers_source, read_transformers_state_dict

logger = logging.getLogger(__name__)
Shapes = Mapping[str, tuple[int, ...]]
HEADS = ("class_head.", "mask_head.")
_BACKBONE = "model.backbone."
HUB_KWARGS = ("cache_dir", "force_download", "local_files_only", "token", "revision", "subfolder")


class MaskFormerLoadError(UserError):
    """A folder of this package that cannot give the model: its weights do not fit its config, or are damaged.

    NOTE: deliberately not a ValueError, OSError, RuntimeError or TypeError. transformers' `pipeline()` catches
    those from one model class and tries the next, and `architectures` in config.json names a class transformers
    also has (`MaskFormerForInstanceSegmentation`), which would then build its own model with random weights.
    """


# Config fields readable from tensor shapes (full-model names): a dimension of a tensor, or a number of layers.
_FIELDS_FROM_DIMS = {
    "num_labels (entries of id2label)": ("class_head.weight", 0),
    "hidden_size": ("model.transformer_decoder.query_embed.weight", 1),
    "num_queries": ("model.transformer_decoder.query_embed.weight", 0),
    "mask_feature_size": ("model.pixel_decoder.mask_features.weight", 0),
    "fpn_feature_size": ("model.pixel_decoder.mask_features.weight", 1),
    "decoder_ffn_dim": ("model.transformer_decoder.layers.0.ffn.fc1.weight", 0),
}
_FIELDS_FROM_LAYERS = {
    "decoder_layers": r"model\.transformer_decoder\.layers\.(\d+)\.",
    "encoder_layers": r"model\.pixel_decoder\.encoder\.layers\.(\d+)\.",
}


def fields_from_shapes(shapes: Shapes) -> dict[str, int]:
    fields = {field: shapes[key][dim] for field, (key, dim) in _FIELDS_FROM_DIMS.items() if key in shapes}
    if "num_labels (entries of id2label)" in fields:
        fields["num_labels (entries of id2label)"] -= 1  # the "no object" class
    for field, pattern in _FIELDS_FROM_LAYERS.items():
        if layers := {m.group(1) for key in shapes if (m := re.match(pattern, key))}:
            fields[field] = len(layers)
    return fields


def checkpoint_shapes(source: str, hub_kwargs: Mapping) -> tuple[str, dict[str, tuple[int, ...]]] | None:
    found = checkpoint_files(source, hub_kwargs)
    if found is None:
        return None
    shapes = {}
    for path in found[1]:
        try:
            with safe_open(path, framework="pt") as file:
                shapes.update({key: tuple(file.get_slice(key).get_shape()) for key in file.keys()})
        except Exception as error:  # safetensors raises its own error types for damaged headers
            raise MaskFormerLoadError(f"{path}: not a readable safetensors file ({error})") from error
    return found[0], shapes


def check_weights_fit(
    source: str, file: str, checkpoint: Shapes, expected: Shapes, *, prefix: str, skip_class_head: bool
) -> None:
    """`MaskFormerLoadError` naming the config fields the shapes contradict."""
    checkpoint, expected = (
        shapes
        if any(key.startswith(f"{prefix}.") for key in shapes)
        else {f"{prefix}.{k}": v for k, v in shapes.items()}
        for shapes in (checkpoint, expected)  # a base model's names lack the prefix
    )
    skipped = ("class_head.",) if skip_class_head else ()
    has_heads = [any(key.startswith(HEADS) for key in shapes) for shapes in (checkpoint, expected)]
    if not all(has_heads):  # base model <-> full checkpoint: the heads are not compared
        skipped = HEADS

    ours = {k: v for k, v in expected.items() if not k.startswith(skipped)}
    theirs = {k: v for k, v in checkpoint.items() if not k.startswith(skipped)}
    # Backbone names may differ (transformers renames some on load): compare those by shape where names agree.
    named = {k for k in set(ours) ^ set(theirs) if not k.startswith(_BACKBONE)}
    differing = sorted(named) + sorted(k for k in set(ours) & set(theirs) if ours[k] != theirs[k])
    if not differing:
        return
    in_config, in_weights = fields_from_shapes(expected), fields_from_shapes(checkpoint)
    fields = [
        f"{field} is {value} in the config but {in_weights[field]} in the weights"
        for field, value in in_config.items()
        if in_weights.get(field, value) != value and not (field.startswith("num_labels") and skip_class_head)
    ]
    key = differing[0]
    example = f"{key}: weights {theirs.get(key, 'absent')}, config {ours.get(key, 'absent')}"
    reason = "; ".join(fields) if fields else f"{len(differing)} tensors differ (e.g. {example})"
    raise MaskFormerLoadError(
        f"{source}: the weights ({file}) do not fit config.json: {reason}. Was config.json edited? Restore the "
        "value the model was trained with."
    )


def check_loading_info(source: str, info: Mapping) -> None:
    """`MaskFormerLoadError` for a tensor transformers left missing or unused outside the heads."""
    problems = [
        f"{len(keys)} {kind.replace('_', ' ')} (e.g. {', '.join(keys[:3])})"
        for kind in ("missing_keys", "unexpected_keys")
        if (keys := sorted(key for key in info.get(kind, ()) if not key.startswith(HEADS)))
    ]
    if problems:
        raise MaskFormerLoadError(
            f"{source}: the weights do not fit config.json: {'; '.join(problems)}. Was config.json edited, or the "
            "folder saved by another architecture?"
        )


def from_pretrained(cls, load: Callable, pretrained_model_name_or_path, *model_args, **kwargs):
    """`load` (transformers' `from_pretrained`), plus: no backbone download; transformers folders converted on the
    fly; another `num_labels` re-initialises the class head (a warning); weights that do not fit the config raise
    `MaskFormerLoadError`, an unknown Hub repo `MissingInputError`."""
    if torch.get_default_device().type == "meta":
        # NOTE: transformers refuses this (weights cannot load onto meta tensors) and says what to use instead
        # (`ModelClass(config)` / `from_config` under the meta device, or `device_map`): its error, unchanged.
        return load(pretrained_model_name_or_path, *model_args, **kwargs)
    source = str(pretrained_model_name_or_path)
    hub_kwargs = {key: kwargs[key] for key in HUB_KWARGS if key in kwargs}
    config = kwargs.pop("config", None)
    try:
        if config is None or isinstance(config, (str, os.PathLike)):
            config, kwargs = cls.config_class.from_pretrained(
                config or pretrained_model_name_or_path, return_unused_kwargs=True, **kwargs
            )
            kwargs.update(hub_kwargs)
        else:
            config = copy.deepcopy(config)
        checkpoint_labels = cls.config_class.from_pretrained(source, **hub_kwargs).num_labels
    except OSError as error:
        if isinstance(error, UserError) or Path(source).exists():
            raise
        # NOTE: transformers' "not a local folder and not a valid model identifier" (or offline) report.
        reason = first_line(error)
        message = reason if reason.startswith(source) else f"{source}: no such local folder or Hub repo ({reason})"
        raise MissingInputError(message) from error
    config.use_pretrained_backbone = False
    new_class_head = config.num_labels != checkpoint_labels
    if new_class_head:
        logger.warning(
            "The checkpoint at %s has %d classes but the model is built with num_labels=%d: the class head "
            "(class_head) is newly initialised and must be trained before use.",
            source,
            checkpoint_labels,
            config.num_labels,
        )
    native = is_transformers_source(source, hub_kwargs)
    if native:  # a transformers MaskFormer folder: its weights converted on the fly (transformers_folder.py)
        try:
            state_dict = read_transformers_state_dict(
                source, config, hub_kwargs, skip_class_head=new_class_head, heads=cls is not MaskFormerModel
            )
        except ValueError as error:  # CheckpointMismatchError: not swallowed by pipeline() (see MaskFormerLoadError)
            raise MaskFormerLoadError(f"{source}: {error}") from error
        kwargs = {key: value for key, value in kwargs.items() if key not in hub_kwargs}
        kwargs.pop("ignore_mismatched_sizes", None)
        kwargs["state_dict"] = state_dict
        pretrained_model_name_or_path, model_args = None, ()
    found = None if native or kwargs.get("ignore_mismatched_sizes") else checkpoint_shapes(source, hub_kwargs)
    if found is not None:
        with torch.device("meta"):
            expected = {key: tuple(value.shape) for key, value in cls(config).state_dict().items()}
        check_weights_fit(source, *found, expected, prefix=cls.base_model_prefix, skip_class_head=new_class_head)
    if new_class_head:
        kwargs["ignore_mismatched_sizes"] = True
    return_info = kwargs.pop("output_loading_info", False)
    try:
        model, info = load(
            pretrained_model_name_or_path, *model_args, config=config, output_loading_info=True, **kwargs
        )
    except RuntimeError as error:  # transformers' size-mismatch and conversion errors
        raise MaskFormerLoadError(f"{source}: {first_line(error)}") from error
    check_loading_info(source, info)
    if native:  # loaded from a state dict: say where it came from, as for any folder (labels.py reads it)
        model.config.name_or_path = source
        model.name_or_path = source
    return (model, info) if return_info else model
