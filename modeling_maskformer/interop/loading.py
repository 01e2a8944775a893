"""Loading a saved folder: its weights must fit its config, or `MaskFormerLoadError` says which field differs.

Two checks around `PreTrainedModel.from_pretrained`:
- before loading, the tensor names and shapes of the safetensors header against those of the model the config
  builds (on the meta device, no memory), for everything outside the backbone (whose checkpoint names
  transformers renames on load): a config.json edited by hand (`hidden_size`, `id2label`, `num_queries`, ...)
  is named without transformers' long load report;
- after loading, transformers' loading info: a missing or unexpected tensor (the backbone included) is an error,
  never a silently re-initialised layer.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping

import torch

from ..errors import UserError

Shapes = Mapping[str, tuple[int, ...]]
HEADS = ("class_head.", "mask_head.")
_BACKBONE = "model.backbone."
_WEIGHTS_FILES = ("model.safetensors", "model.safetensors.index.json")


class MaskFormerLoadError(UserError):
    """A folder of this package that cannot give the model: its weights do not fit its config, or are damaged.

    NOTE: deliberately not a ValueError, OSError, RuntimeError or TypeError. transformers' `pipeline()` catches
    those from one model class and tries the next, and `architectures` in config.json names a class transformers
    also has (`MaskFormerForInstanceSegmentation`), which would then build its own model with random weights.
    """


def _count(pattern: str) -> Callable[[Shapes], int | None]:
    compiled = re.compile(pattern)

    def count(shapes: Shapes) -> int | None:
        found = {m.group(1) for key in shapes if (m := compiled.fullmatch(key))}
        return len(found) or None

    return count


def _dim(key: str, dim: int, offset: int = 0) -> Callable[[Shapes], int | None]:
    return lambda shapes: shapes[key][dim] + offset if key in shapes else None


# Config fields readable from tensor shapes (full-model key names), to name the field that was edited.
FIELDS_FROM_SHAPES: dict[str, Callable[[Shapes], int | None]] = {
    "num_labels (entries of id2label)": _dim("class_head.weight", 0, offset=-1),
    "hidden_size": _dim("model.transformer_decoder.query_embed.weight", 1),
    "num_queries": _dim("model.transformer_decoder.query_embed.weight", 0),
    "mask_feature_size": _dim("model.pixel_decoder.mask_features.weight", 0),
    "fpn_feature_size": _dim("model.pixel_decoder.mask_features.weight", 1),
    "decoder_ffn_dim": _dim("model.transformer_decoder.layers.0.ffn.fc1.weight", 0),
    "decoder_layers": _count(r"model\.transformer_decoder\.layers\.(\d+)\..*"),
    "encoder_layers": _count(r"model\.pixel_decoder\.encoder\.layers\.(\d+)\..*"),
}


def checkpoint_files(
    source: str, hub_kwargs: Mapping, names: tuple[str, ...] = _WEIGHTS_FILES
) -> tuple[str, list[str]] | None:
    """(what to name in errors, the weight files) of a folder or cached Hub repo, for the first of `names` (a
    single file, then its sharded index) that exists; None when none does."""
    import json

    from transformers.utils import cached_file

    def resolve(name: str) -> str | None:
        return cached_file(
            source,
            name,
            _raise_exceptions_for_missing_entries=False,
            _raise_exceptions_for_connection_errors=False,
            **hub_kwargs,
        )

    for single_name, index_name in zip(names[::2], names[1::2]):
        if (single := resolve(single_name)) is not None:
            return single, [single]
        if (index := resolve(index_name)) is not None:
            with open(index) as file:
                shard_names = sorted(set(json.load(file)["weight_map"].values()))
            files = [resolve(name) for name in shard_names]
            return (index, files) if all(path is not None for path in files) else None
    return None


def checkpoint_shapes(source: str, hub_kwargs: Mapping) -> tuple[str, dict[str, tuple[int, ...]]] | None:
    """(file, {name: shape}) from the safetensors header(s) of a folder or cached Hub repo; None when there is
    no safetensors file to read (a `.bin` checkpoint, or a Hub repo not downloaded yet: transformers decides)."""
    from safetensors import safe_open

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


def model_shapes(model_class, config) -> dict[str, tuple[int, ...]]:
    """{name: shape} of the model `config` builds, under full-model names; built on the meta device."""
    with torch.device("meta"):
        model = model_class(config)
    shapes = {key: tuple(value.shape) for key, value in model.state_dict().items()}
    if not hasattr(model, model_class.base_model_prefix):  # the base model: names without the "model." prefix
        shapes = {f"{model_class.base_model_prefix}.{key}": shape for key, shape in shapes.items()}
    return shapes


def check_weights_fit(
    source: str, file: str, checkpoint: Shapes, expected: Shapes, *, prefix: str, skip_class_head: bool
) -> None:
    """Raise `MaskFormerLoadError` when a tensor outside the backbone is missing, unexpected or of another shape,
    naming the config fields whose values the shapes contradict."""
    if not any(key.startswith(f"{prefix}.") for key in checkpoint):  # a base-model checkpoint
        checkpoint = {f"{prefix}.{key}": shape for key, shape in checkpoint.items()}
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
    fields = []
    for field, read in FIELDS_FROM_SHAPES.items():
        if field.startswith("num_labels") and skip_class_head:
            continue
        in_config, in_weights = read(expected), read(checkpoint)
        if in_config is not None and in_weights is not None and in_config != in_weights:
            fields.append(f"{field} is {in_config} in the config but {in_weights} in the weights")
    key = differing[0]
    example = f"{key}: weights {theirs.get(key, 'absent')}, config {ours.get(key, 'absent')}"
    reason = "; ".join(fields) if fields else f"{len(differing)} tensors differ (e.g. {example})"
    raise MaskFormerLoadError(
        f"{source}: the weights ({file}) do not fit config.json: {reason}. Was config.json edited? Restore the "
        "value the model was trained with."
    )


def check_loading_info(source: str, info: Mapping) -> None:
    """Raise `MaskFormerLoadError` for a tensor transformers left missing or unused outside the heads (those are
    legitimately absent when a base model and a full checkpoint meet)."""
    problems = {
        kind: sorted(key for key in info.get(kind, ()) if not key.startswith(HEADS))
        for kind in ("missing_keys", "unexpected_keys")
    }
    problems = {kind: keys for kind, keys in problems.items() if keys}
    if problems:
        listing = "; ".join(
            f"{len(keys)} {kind.replace('_', ' ')} (e.g. {', '.join(keys[:3])})" for kind, keys in problems.items()
        )
        raise MaskFormerLoadError(
            f"{source}: the weights do not fit config.json: {listing}. Was config.json edited, or the folder "
            "saved by another architecture?"
        )
