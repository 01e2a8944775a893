"""Conversion between this package and transformers' MaskFormer, by key rules `(foreign template, *our templates)`
with typed placeholders (`{i}` an index, `{p}` weight|bias, `{rest}` anything); several of ours split a fused foreign
tensor along dim 0 (q/k/v). Every conversion is checked against a fresh target model (`CheckpointMismatchError`).

NOTE (transformers 5.23 `models/maskformer/`): 5.x names the decoder attention output `o_proj` and the FFN
`mlp.fc1/fc2`, but its `save_pretrained` writes 4.x's `out_proj` and `fc1/fc2`: both are read, 5.x's written. A
"swin" backbone is built as MaskFormer-Swin; ours is a plain `SwinBackbone` (same numerics) whose keys are mapped.
`decoder_config.auxiliary_loss=True` would put the final LayerNorm in the residual stream: we always write False.
Swin's unused final LayerNorm is skipped when reading and taken from transformers' fresh model when writing.
"""

from __future__ import annotations

import functools
import json
import logging
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from huggingface_hub import snapshot_download
from torch import Tensor
from transformers import MaskFormerForInstanceSegmentation as TransformersMaskFormer

from ..configuration.backbones import STAGES
from ..configuration.configuration_maskformer import MaskFormerConfig, check_local_source
from ..configuration.transformers_format import (  # noqa: F401 (STASH_KEY, config_to_transformers: re-exported)
    STASH_KEY,
    config_to_transformers,
    settings_from_transformers,
)
from ..errors import InvalidInputError, MissingInputError, first_line
from ..image_processing.image_processing_maskformer import MaskFormerImageProcessor
from ..modeling_maskformer import MaskFormerForInstanceSegmentation

logger = logging.getLogger(__name__)

Rule = tuple[str, ...]  # (foreign template, *our templates)
_TF_BACKBONE = "model.pixel_level_module.encoder"
_PLACEHOLDERS = {"i": r"\d+", "j": r"\d+", "k": r"\d+", "p": r"weight|bias", "rest": r".+"}
_PLACEHOLDERS["stat"] = r"weight|bias|running_mean|running_var"


class CheckpointMismatchError(ValueError):
    """A checkpoint does not fit the model it is converted to; the message lists the keys."""


def renames(theirs: str, ours: str, names: Mapping[str, str], suffix: str = ".{p}") -> list[Rule]:
    return [(f"{theirs}.{a}{suffix}", f"{ours}.{b}{suffix}") for a, b in names.items()]


@functools.cache
def _pattern(template: str) -> re.Pattern:
    parts = re.split(r"\{(\w+)\}", template)
    return re.compile(
        "".join(re.escape(p) if i % 2 == 0 else f"(?P<{p}>{_PLACEHOLDERS[p]})" for i, p in enumerate(parts))
    )


def drop_keys(state_dict: Mapping[str, Any], patterns: Iterable[str]) -> tuple[dict[str, Any], list[str]]:
    """(the keys that fully match none of `patterns`, those that match one)."""
    pattern = re.compile("|".join(f"(?:{p})" for p in patterns) or "(?!)")  # (?!) matches nothing
    skipped = [key for key in state_dict if pattern.fullmatch(key)]
    return {key: value for key, value in state_dict.items() if key not in skipped}, skipped


def find_rule(rules: Sequence[Rule], key: str, to_ours: bool) -> tuple[Rule, int, dict[str, str]] | None:
    """(rule, index among ours, groups) of the first rule whose source side matches `key`."""
    for rule in rules:
        for index, template in enumerate(rule[:1] if to_ours else rule[1:]):
            if match := _pattern(template).fullmatch(key):
                return rule, index, match.groupdict()
    return None


def apply_rules(
    state_dict: Mapping[str, Tensor], rules: Sequence[Rule], *, to_ours: bool
) -> tuple[dict[str, Tensor], list[str]]:
    """Rename (split, concatenate) every key by its first rule: (converted, the keys no rule could convert)."""
    converted: dict[str, Tensor] = {}
    problems: list[str] = []
    parts: dict[str, tuple[int, dict[int, Tensor]]] = {}  # fused foreign key -> (count, {index: our part})

    def put(name: str, tensor: Tensor, source: str) -> None:
        if name in converted:
            problems.append(f"{source} (maps to {name}, already converted)")
        converted[name] = tensor

    for key, value in state_dict.items():
        found = find_rule(rules, key, to_ours)
        if found is None:
            problems.append(key)
            continue
        (foreign, *ours), index, groups = found
        if len(ours) == 1:
            put((ours[0] if to_ours else foreign).format(**groups), value, key)
        elif not to_ours:
            parts.setdefault(foreign.format(**groups), (len(ours), {}))[1][index] = value
        elif value.shape[0] % len(ours):
            problems.append(f"{key} (dim 0 of {tuple(value.shape)} does not split in {len(ours)})")
        else:
            for template, chunk in zip(ours, value.chunk(len(ours))):
                put(template.format(**groups), chunk.clone(), key)
    for name, (count, pieces) in parts.items():
        if len(pieces) == count:
            converted[name] = torch.cat([pieces[i] for i in range(count)])
        else:
            problems.append(f"{name} (only parts {sorted(pieces)} of {count} present)")
    return converted, problems


def convert_state_dict(
    state_dict: Mapping[str, Tensor],
    rules: Sequence[Rule],
    target: Mapping[str, Tensor],
    *,
    to_ours: bool,
    skipped_source: Sequence[str] = (),
    computed_target: Sequence[str] = (),
    what: str = "checkpoint",
) -> dict[str, Tensor]:
    """Apply the rules (skipping `skipped_source`, taking `computed_target` from `target`, a fresh model's state
    dict); `CheckpointMismatchError` unless the keys and shapes are `target`'s."""
    kept, skipped = drop_keys(state_dict, skipped_source)
    if skipped:
        logger.info("Skipped %d non-parameter buffers: %s", len(skipped), ", ".join(skipped[:20]))
    converted, unconverted = apply_rules(kept, rules, to_ours=to_ours)
    _, computed = drop_keys({key: None for key in target if key not in converted}, computed_target)
    converted.update({key: target[key].clone() for key in computed})
    shared = sorted(set(converted) & set(target))
    problems = {
        "keys no conversion rule covers": unconverted,
        "missing keys": sorted(set(target) - set(converted)),
        "unexpected keys": sorted(set(converted) - set(target)),
        "shape mismatches": [
            f"{key} (checkpoint {tuple(converted[key].shape)}, model {tuple(target[key].shape)})"
            for key in shared
            if converted[key].shape != target[key].shape
        ],
    }
    listing = [
        f"{len(keys)} {title}: {', '.join(keys[:20])}" + (f", ... (+{len(keys) - 20} more)" if len(keys) > 20 else "")
        for title, keys in problems.items()
        if keys
    ]
    if listing:
        raise CheckpointMismatchError(f"{what} does not fit the model: " + "; ".join(listing))
    return converted


def transformers_rules(config: MaskFormerConfig) -> tuple[list[Rule], list[str]]:
    """Rules for transformers <-> ours (5.x names first: written; 4.x after: read), and transformers' buffers that
    ours lacks."""
    tf_layer, layer = "model.transformer_module.decoder.layers.{i}", "model.transformer_decoder.layers.{i}"
    fpn, tf_backbone, backbone = "model.pixel_level_module.decoder", _TF_BACKBONE, "model.backbone.body"
    rules: list[Rule] = [
        (f"{fpn}.fpn.stem.{{k}}.{{p}}", "model.pixel_decoder.stem.{k}.{p}"),
        (f"{fpn}.fpn.layers.{{i}}.proj.{{k}}.{{p}}", "model.pixel_decoder.layers.{i}.lateral.{k}.{p}"),
        (f"{fpn}.fpn.layers.{{i}}.block.{{k}}.{{p}}", "model.pixel_decoder.layers.{i}.output.{k}.{p}"),
        (f"{fpn}.mask_projection.{{p}}", "model.pixel_decoder.mask_features.{p}"),
        ("model.transformer_module.queries_embedder.weight", "model.transformer_decoder.query_embed.weight"),
        ("model.transformer_module.input_projection.{p}", "model.transformer_decoder.input_proj.{p}"),
        ("model.transformer_module.decoder.layernorm.{p}", "model.transformer_decoder.layernorm.{p}"),
        ("class_predictor.{p}", "class_head.{p}"),
        ("mask_embedder.{i}.0.{p}", "mask_head.layers.{i}.{p}"),
    ]
    for theirs, ours in (("self_attn", "self_attn"), ("encoder_attn", "cross_attn")):
        names = {"q_proj": "q_proj", "k_proj": "k_proj", "v_proj": "v_proj", "o_proj": "out_proj"}
        rules += renames(f"{tf_layer}.{theirs}", f"{layer}.{ours}", {**names, "out_proj": "out_proj"})  # 4.x last
        rules.append((f"{tf_layer}.{theirs}_layer_norm.{{p}}", f"{layer}.{ours}_norm.{{p}}"))
    ffn = {"final_layer_norm": "ffn_norm", "mlp.fc1": "ffn.fc1", "mlp.fc2": "ffn.fc2", "fc1": "ffn.fc1"}
    rules += renames(tf_layer, layer, {**ffn, "fc2": "ffn.fc2"})  # 4.x: fc1/fc2 without "mlp."
    tf_buffers = [
        r"criterion\.empty_weight",  # no-object class weight, built from no_object_weight
        rf"{re.escape(tf_backbone)}\.model\.layernorm\.(weight|bias)",  # MaskFormer-Swin's unused final LayerNorm
    ]
    if config.backbone_config.model_type != "swin":
        return [*rules, (f"{tf_backbone}.{{rest}}", f"{backbone}.{{rest}}")], tf_buffers
    # transformers' MaskFormer-Swin (what it builds for "swin") <-> a plain `SwinBackbone` (ours for "swin").
    tf, ours = f"{tf_backbone}.model", f"{backbone}.swin"
    block, our_block = f"{tf}.encoder.layers.{{i}}.blocks.{{j}}", f"{ours}.encoder.layers.{{i}}.blocks.{{j}}"
    rules += [
        (f"{tf}.embeddings.{{rest}}", f"{ours}.embeddings.{{rest}}"),
        (f"{tf}.encoder.layers.{{i}}.downsample.{{rest}}", f"{ours}.encoder.layers.{{i}}.downsample.{{rest}}"),
        (
            f"{block}.attention.self.relative_position_bias_table",
            f"{our_block}.attention.relative_position_bias.relative_position_bias_table",
        ),
    ]
    names = {"attention.output.dense": "attention.o_proj", "intermediate.dense": "mlp.fc1", "output.dense": "mlp.fc2"}
    names |= {"layernorm_before": "layernorm_before", "layernorm_after": "layernorm_after"}
    names |= {f"attention.self.{x}": f"attention.{x[0]}_proj" for x in ("query", "key", "value")}
    rules += renames(block, our_block, names)
    norms = {f"hidden_states_norms.{n}": f"hidden_states_norms.stage{n + 1}" for n in range(len(STAGES))}
    rules += renames(tf_backbone, backbone, norms)
    # MaskFormer-Swin stores the relative position index (a function of the window size); Swin does not.
    return rules, [*tf_buffers, r".*\.relative_position_index"]


def config_from_transformers(tf_config) -> MaskFormerConfig:
    return MaskFormerConfig(**settings_from_transformers(tf_config, MaskFormerConfig))


def state_dict_from_transformers(
    state_dict: Mapping[str, Tensor], config: MaskFormerConfig, target: Mapping[str, Tensor]
) -> dict[str, Tensor]:
    rules, tf_buffers = transformers_rules(config)
    return convert_state_dict(
        state_dict, rules, target, to_ours=True, skipped_source=tf_buffers, what="transformers checkpoint"
    )


def resolve_source(source: str | Path, model_types: tuple[str, ...] = ()) -> Path:
    """A local folder, or a Hub id's snapshot; with `model_types`, its config.json must name one of them."""
    folder = Path(source)
    if folder.exists() and not folder.is_dir():
        raise InvalidInputError(f"{source}: expected a folder (config.json + weights), got a file")
    if not folder.exists():
        check_local_source(str(source))  # a path that cannot be a Hub id: "no such file or folder"
        try:
            folder = Path(snapshot_download(str(source), allow_patterns=["*.json", "*.safetensors", "*.bin"]))
        except Exception as error:  # offline, unknown repo, gated repo: many exception types
            raise MissingInputError(
                f"{source}: no such local folder, and it could not be downloaded from the Hugging Face Hub "
                f"({type(error).__name__}: {first_line(error)}). Without network access, pass a local folder."
            ) from error
    config_file = folder / "config.json"
    if not model_types:
        return folder
    if not config_file.is_file():
        raise MissingInputError(f"{source} has no config.json: not a saved model folder")
    try:
        model_type = json.loads(config_file.read_text()).get("model_type")
    except json.JSONDecodeError as error:
        raise InvalidInputError(f"{config_file}: not valid JSON ({error})") from error
    if model_type not in model_types:
        raise InvalidInputError(
            f"{source}: config.json has model_type {model_type!r}, expected {' or '.join(map(repr, model_types))} "
            "(a MaskFormer folder)"
        )
    return folder


def convert_from_transformers(
    source: str | Path, destination: str | Path | None = None
) -> tuple[MaskFormerForInstanceSegmentation, MaskFormerImageProcessor]:
    """Our model (eval mode) and processor from a transformers MaskFormer folder or Hub id, saved to `destination`."""
    folder = resolve_source(source, ("maskformer",))
    model = MaskFormerForInstanceSegmentation.from_pretrained(folder).eval()
    processor_file = folder / "preprocessor_config.json"
    settings = json.loads(processor_file.read_text()) if processor_file.is_file() else {}
    if not processor_file.is_file():
        logger.warning("%s has no preprocessor_config.json: transformers' default processor settings", source)
    processor = MaskFormerImageProcessor(**{"ignore_index": None, **settings})  # transformers' default: no ignore
    if destination is not None:
        model.save_pretrained(destination)
        processor.save_pretrained(destination)
    return model, processor


def convert_to_transformers(
    source: str | Path | MaskFormerForInstanceSegmentation,
    destination: str | Path,
    processor: MaskFormerImageProcessor | None = None,
):
    """Write our model (a folder or an instance) as a transformers MaskFormer folder; returns transformers' model."""
    model = source
    if not isinstance(source, MaskFormerForInstanceSegmentation):
        folder = resolve_source(source, (MaskFormerConfig.model_type, "maskformer"))
        model = MaskFormerForInstanceSegmentation.from_pretrained(folder)
        if processor is None and (folder / "preprocessor_config.json").is_file():
            processor = MaskFormerImageProcessor.from_pretrained(folder)
    model.save_pretrained(destination, folder_format="transformers")
    (processor or MaskFormerImageProcessor()).save_pretrained(destination)
    return TransformersMaskFormer.from_pretrained(destination).eval()
