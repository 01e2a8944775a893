"""Transformers-native folders: what `save_pretrained` writes when transformers' MaskFormer represents the model
exactly (our training settings under `STASH_KEY` in config.json), and how our classes read any of them back."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

import torch
from safetensors.torch import load_file
from torch import Tensor
from transformers import MaskFormerForInstanceSegmentation as TransformersFull
from transformers import MaskFormerModel as TransformersBase
from transformers.utils import cached_file

from ..configuration.remote_code import (
    TRANSFORMERS_MODEL_TYPE,
    folder_model_type,
    mark_processor_config,
    remote_code_modules,
)
from ..configuration.transformers_format import transformers_refusals, write_transformers_config
from ..errors import InvalidInputError, MissingInputError
from ..modeling_maskformer import FolderFormat, MaskFormerForInstanceSegmentation
from .transformers_weights import (
    config_to_transformers,
    convert_state_dict,
    find_rule,
    state_dict_from_transformers,
    transformers_rules,
)

_PREFIX = "model."
SAFETENSORS_FILES = ("model.safetensors", "model.safetensors.index.json")
TRANSFORMERS_WEIGHT_FILES = (*SAFETENSORS_FILES, "pytorch_model.bin", "pytorch_model.bin.index.json")


def is_transformers_folder(folder: str | Path) -> bool:
    return folder_model_type(folder) == TRANSFORMERS_MODEL_TYPE


def _cached(source: str, name: str, hub_kwargs: Mapping) -> str | None:  # None when the folder or repo has none
    return cached_file(
        source,
        name,
        _raise_exceptions_for_missing_entries=False,
        _raise_exceptions_for_connection_errors=False,
        **hub_kwargs,
    )


def is_transformers_source(source: str, hub_kwargs: Mapping) -> bool:
    if Path(source).is_dir():
        return is_transformers_folder(source)
    try:
        config_file = _cached(source, "config.json", hub_kwargs)
    except (OSError, ValueError):  # not a repo id: our config loading names the problem
        return False
    return config_file is not None and is_transformers_folder(Path(config_file).parent)


def checkpoint_files(
    source: str, hub_kwargs: Mapping, names: tuple[str, ...] = SAFETENSORS_FILES
) -> tuple[str, list[str]] | None:
    """(the file to name in errors, the weight files) for the first of `names` (file, sharded index) that exists."""
    for single_name, index_name in zip(names[::2], names[1::2]):
        if (single := _cached(source, single_name, hub_kwargs)) is not None:
            return single, [single]
        if (index := _cached(source, index_name, hub_kwargs)) is not None:
            shard_names = sorted(set(json.loads(Path(index).read_text())["weight_map"].values()))
            files = [_cached(source, name, hub_kwargs) for name in shard_names]
            return (index, files) if all(path is not None for path in files) else None
    return None


def native_refusals(model, folder_format: FolderFormat) -> list[str]:
    """Why `model` is not written in transformers' own format (an error if `folder_format` insists on it)."""
    if folder_format not in ("auto", "transformers", "remote_code"):
        raise InvalidInputError(f"folder_format={folder_format!r}: must be 'auto', 'transformers' or 'remote_code'")
    if folder_format == "remote_code":
        return ["folder_format='remote_code'"]
    refusals = transformers_refusals(model.config)
    if not refusals:
        # NOTE: a module the config does not reveal (say, another head) has weights no key rule places.
        rules, _ = transformers_rules(model.config)
        prefix = "" if hasattr(model, "class_head") else _PREFIX
        unplaced = [key for key in model.state_dict() if find_rule(rules, prefix + key, to_ours=False) is None]
        if unplaced:
            refusals.append(
                f"{len(unplaced)} weights with no place in its checkpoint (e.g. {', '.join(unplaced[:3])})"
            )
        if hasattr(model, "mask_head") and len(model.mask_head.layers) != 3:
            refusals.append(f"a {len(model.mask_head.layers)}-layer mask MLP (transformers' is 3 layers)")
    if refusals and folder_format == "transformers":
        raise InvalidInputError("transformers' MaskFormer cannot represent this model: " + "; ".join(refusals))
    return refusals


def save_transformers_folder(model, folder: str | Path, **save_kwargs) -> None:
    full = hasattr(model, "class_head")
    state = model.state_dict()
    if not full:  # the key rules name full-model keys
        state = {f"{_PREFIX}{key}": value for key, value in state.items()}
    tf_config = config_to_transformers(model.config)
    # NOTE: building transformers' model initialises it at random; the global RNG must not move (a checkpoint
    # saved mid-run would change the rest of the run's random numbers).
    with torch.random.fork_rng(devices=[]):
        tf_model = (TransformersFull if full else TransformersBase)(tf_config)
    target = tf_model.state_dict()
    if not full:
        target = {f"{_PREFIX}{key}": value for key, value in target.items()}
    rules, tf_buffers = transformers_rules(model.config)
    converted = convert_state_dict(
        state, rules, target, to_ours=False, computed_target=tf_buffers, what="our checkpoint"
    )
    if not full:
        converted = {key.removeprefix(_PREFIX): value for key, value in converted.items()}
    tf_model.to(next(model.parameters()).dtype).load_state_dict(converted, strict=True)
    tf_model.save_pretrained(folder, **save_kwargs)
    if not save_kwargs.get("is_main_process", True):
        return
    folder = Path(folder)
    architectures = json.loads((folder / "config.json").read_text()).get("architectures")
    write_transformers_config(model.config, folder, architectures)
    # A folder saved before in the remote-code format: its code files would only mislead.
    for name in remote_code_modules():
        (folder / name).unlink(missing_ok=True)
    mark_processor_config(folder)


def read_transformers_state_dict(
    source: str, config, hub_kwargs: Mapping, *, skip_class_head: bool, heads: bool = True
) -> dict[str, Tensor]:
    """Our full-model state dict (without the heads when `heads` is False) from a transformers folder or Hub repo,
    checked against the model `config` builds. A `.bin` is read with `weights_only=True`."""
    found = checkpoint_files(source, hub_kwargs, TRANSFORMERS_WEIGHT_FILES)
    if found is None:
        raise MissingInputError(f"{source}: no model.safetensors or pytorch_model.bin (or a sharded index)")
    state: dict[str, Tensor] = {}
    for file in found[1]:
        if file.endswith(".safetensors"):
            state.update(load_file(file))
        else:
            state.update(torch.load(file, map_location="cpu", weights_only=True))
    if not any(key.startswith(_PREFIX) for key in state):  # transformers' MaskFormerModel: no heads, no prefix
        state = {f"{_PREFIX}{key}": value for key, value in state.items()}
    with torch.device("meta"):
        target = MaskFormerForInstanceSegmentation(config).state_dict()
    has_heads = any(not key.startswith(_PREFIX) for key in state if not key.startswith("criterion."))
    skipped = () if has_heads and heads else ("class_head.", "mask_head.")
    if not heads:
        state = {key: value for key, value in state.items() if key.startswith((_PREFIX, "criterion."))}
    if skip_class_head:  # a new class head (another num_labels): initialised, not loaded
        skipped = (*skipped, "class_head.")
        state = {key: value for key, value in state.items() if not key.startswith("class_predictor.")}
    target = {key: value for key, value in target.items() if not key.startswith(skipped)}
    return state_dict_from_transformers(state, config, target)
