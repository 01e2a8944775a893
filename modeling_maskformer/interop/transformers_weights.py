"""Checkpoint conversion between this package and transformers' MaskFormer (the authors' detectron2 checkpoints:
`authors_checkpoints.py`).

    model, processor = convert_from_transformers("facebook/maskformer-swin-tiny-ade", "out/ours")
    convert_to_transformers("out/ours", "out/transformers")

Weights move by explicit `Rule`s: a template of the foreign key and the template(s) of ours, with typed
placeholders (`{i}` an index, `{p}` weight|bias, `{rest}` anything). Several of ours = the foreign tensor is split
in equal chunks along dim 0 (fused q/k/v); the reverse direction concatenates them. Every conversion is checked
against a freshly built target model: a key no rule covers, a missing or unexpected key or a shape mismatch
raises `CheckpointMismatchError` naming the keys. The only source keys skipped are the buffers listed next to each
format; the only target keys not converted are buffers the target model computes from its config.

transformers facts used here (5.23, `models/maskformer/`):
- 5.x names the decoder attention output `o_proj` and the FFN `mlp.fc1/fc2`; 4.x checkpoints (and 5.x
  `save_pretrained`, which reverts to the old names: `conversion_mapping.py`) use `out_proj` and layer-level
  `fc1/fc2`. Both are read; 5.x names are written.
- A backbone config of type "swin" is built as a MaskFormer-Swin (`MaskFormerPixelLevelModule`). We keep "swin" as
  a plain `SwinBackbone` (same numerics) and map its keys (`swin.*`, `q_proj`, `hidden_states_norms.stageN`) to
  MaskFormer-Swin's (`model.*`, `attention.self.query`, `hidden_states_norms.{N-1}`).
- `decoder_config.auxiliary_loss=True` writes the final LayerNorm into the decoder's residual stream after every
  layer; we always write False (configuration/transformers_format.py holds the config conversion and keeps every
  training setting of ours under `maskformer_hf_training`).
- The Swin backbones' final LayerNorm, which their backbone output never applies, is not built in ours
  (backbone.py): skipped when reading, taken from transformers' fresh model when writing.
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

from ..configuration.configuration_maskformer import MaskFormerConfig, check_local_source
from ..configuration.transformers_format import (  # noqa: F401 (STASH_KEY, config_to_transformers: re-exported)
    STASH_KEY,
    config_to_transformers,
    settings_from_transformers,
)
from ..errors import InvalidInputError, MissingInputError
from ..image_processing.image_processing_maskformer import MaskFormerImageProcessor
from ..modeling_maskformer import MaskFormerForInstanceSegmentation

logger = logging.getLogger(__name__)

_PLACEHOLDERS = {
    "i": r"\d+",
    "j": r"\d+",
    "k": r"\d+",
    "p": r"weight|bias",
    "stat": r"weight|bias|running_mean|running_var",
    "rest": r".+",
}


# ----------------------------------------------------------------------------------------------------
# The rule engine
# ----------------------------------------------------------------------------------------------------
class Rule:
    """`foreign` key template <-> `ours` template(s); several of ours split the foreign tensor along dim 0."""

    def __init__(self, foreign: str, *ours: str):
        self.foreign, self.ours = foreign, ours


class CheckpointMismatchError(ValueError):
    """A checkpoint does not fit the model it is converted to; the message lists the keys."""


@functools.cache
def _pattern(template: str) -> re.Pattern:
    parts = re.split(r"\{(\w+)\}", template)
    return re.compile(
        "".join(
            re.escape(part) if i % 2 == 0 else f"(?P<{part}>{_PLACEHOLDERS[part]})" for i, part in enumerate(parts)
        )
    )


def drop_keys(state_dict: Mapping[str, Any], patterns: Iterable[str]) -> tuple[dict[str, Any], list[str]]:
    """Remove the keys that fully match one of `patterns` (explicitly skipped buffers); returns (kept, skipped)."""
    pattern = re.compile("|".join(f"(?:{p})" for p in patterns) or "(?!)")  # (?!) matches nothing
    skipped = [key for key in state_dict if pattern.fullmatch(key)]
    return {key: value for key, value in state_dict.items() if key not in skipped}, skipped


def find_rule(rules: Sequence[Rule], key: str, to_ours: bool) -> tuple[Rule, int, dict[str, str]] | None:
    """The first rule with a template on the source side that matches `key`: (rule, template index, groups)."""
    for rule in rules:
        for index, template in enumerate((rule.foreign,) if to_ours else rule.ours):
            if match := _pattern(template).fullmatch(key):
                return rule, index, match.groupdict()
    return None


def apply_rules(
    state_dict: Mapping[str, Tensor], rules: Sequence[Rule], *, to_ours: bool
) -> tuple[dict[str, Tensor], list[str]]:
    """Renames (and splits or concatenates) every key by the first rule that matches it.

    Returns the converted dict and the source keys that no rule covers (or that could not be converted:
    a fused tensor whose size does not split, a part of a fused tensor without its siblings, a duplicate).
    """
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
        rule, index, groups = found
        if not to_ours:
            name = rule.foreign.format(**groups)
            if len(rule.ours) == 1:
                put(name, value, key)
            else:
                parts.setdefault(name, (len(rule.ours), {}))[1][index] = value
        elif len(rule.ours) == 1:
            put(rule.ours[0].format(**groups), value, key)
        elif value.shape[0] % len(rule.ours):
            problems.append(f"{key} (dim 0 of {tuple(value.shape)} does not split in {len(rule.ours)})")
        else:
            for template, chunk in zip(rule.ours, value.chunk(len(rule.ours))):
                put(template.format(**groups), chunk.clone(), key)
    for name, (count, pieces) in parts.items():
        if len(pieces) == count:
            converted[name] = torch.cat([pieces[i] for i in range(count)])
        else:
            problems.append(f"{name} (only parts {sorted(pieces)} of {count} present)")
    return converted, problems


def check_state_dict(
    converted: Mapping[str, Tensor],
    expected: Mapping[str, Tensor],
    *,
    unconverted: Sequence[str] = (),
    what: str = "checkpoint",
) -> None:
    """Raise `CheckpointMismatchError` unless `converted` has exactly the keys and shapes of `expected`."""
    missing = sorted(set(expected) - set(converted))
    unexpected = sorted(set(converted) - set(expected))
    mismatched = [
        f"{key} (checkpoint {tuple(converted[key].shape)}, model {tuple(expected[key].shape)})"
        for key in sorted(set(converted) & set(expected))
        if tuple(converted[key].shape) != tuple(expected[key].shape)
    ]
    problems = [
        f"{len(keys)} {title}: {', '.join(keys[:20])}" + (f", ... (+{len(keys) - 20} more)" if len(keys) > 20 else "")
        for title, keys in (
            ("keys no conversion rule covers", list(unconverted)),
            ("missing keys", missing),
            ("unexpected keys", unexpected),
            ("shape mismatches", mismatched),
        )
        if keys
    ]
    if problems:
        raise CheckpointMismatchError(f"{what} does not fit the model: " + "; ".join(problems))


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
    """Skip the listed source buffers, apply the rules, take the listed target buffers from `target` (the
    state dict of a freshly built target model) and check the result against `target`."""
    kept, skipped = drop_keys(state_dict, skipped_source)
    if skipped:
        logger.info("Skipped %d non-parameter buffers: %s", len(skipped), ", ".join(skipped[:20]))
    converted, unconverted = apply_rules(kept, rules, to_ours=to_ours)
    _, computed = drop_keys({key: None for key in target if key not in converted}, computed_target)
    converted.update({key: target[key].clone() for key in computed})
    check_state_dict(converted, target, unconverted=unconverted, what=what)
    return converted


# ----------------------------------------------------------------------------------------------------
# transformers <-> ours: key rules
# ----------------------------------------------------------------------------------------------------
_TF_DECODER = "model.transformer_module.decoder"
_OUR_DECODER = "model.transformer_decoder"
_TF_FPN = "model.pixel_level_module.decoder"
_TF_BACKBONE = "model.pixel_level_module.encoder"
_OUR_BACKBONE = "model.backbone.body"


def _transformers_head_rules() -> list[Rule]:
    """Pixel decoder, transformer decoder and heads; 5.x names first (written), 4.x names after (read)."""
    layer, ours = f"{_TF_DECODER}.layers.{{i}}", f"{_OUR_DECODER}.layers.{{i}}"
    rules = [
        Rule(f"{_TF_FPN}.fpn.stem.{{k}}.{{p}}", "model.pixel_decoder.stem.{k}.{p}"),
        Rule(f"{_TF_FPN}.fpn.layers.{{i}}.proj.{{k}}.{{p}}", "model.pixel_decoder.layers.{i}.lateral.{k}.{p}"),
        Rule(f"{_TF_FPN}.fpn.layers.{{i}}.block.{{k}}.{{p}}", "model.pixel_decoder.layers.{i}.output.{k}.{p}"),
        Rule(f"{_TF_FPN}.mask_projection.{{p}}", "model.pixel_decoder.mask_features.{p}"),
        Rule("model.transformer_module.queries_embedder.weight", f"{_OUR_DECODER}.query_embed.weight"),
        Rule("model.transformer_module.input_projection.{p}", f"{_OUR_DECODER}.input_proj.{{p}}"),
        Rule(f"{_TF_DECODER}.layernorm.{{p}}", f"{_OUR_DECODER}.layernorm.{{p}}"),
        Rule("class_predictor.{p}", "class_head.{p}"),
        Rule("mask_embedder.{i}.0.{p}", "mask_head.layers.{i}.{p}"),
    ]
    for theirs, our in (("self_attn", "self_attn"), ("encoder_attn", "cross_attn")):
        rules += [Rule(f"{layer}.{theirs}.{x}_proj.{{p}}", f"{ours}.{our}.{x}_proj.{{p}}") for x in "qkv"]
        rules.append(Rule(f"{layer}.{theirs}.o_proj.{{p}}", f"{ours}.{our}.out_proj.{{p}}"))
        rules.append(Rule(f"{layer}.{theirs}.out_proj.{{p}}", f"{ours}.{our}.out_proj.{{p}}"))  # 4.x
        rules.append(Rule(f"{layer}.{theirs}_layer_norm.{{p}}", f"{ours}.{our}_norm.{{p}}"))
    rules.append(Rule(f"{layer}.final_layer_norm.{{p}}", f"{ours}.ffn_norm.{{p}}"))
    for fc in ("fc1", "fc2"):
        rules.append(Rule(f"{layer}.mlp.{fc}.{{p}}", f"{ours}.ffn.{fc}.{{p}}"))
        rules.append(Rule(f"{layer}.{fc}.{{p}}", f"{ours}.ffn.{fc}.{{p}}"))  # 4.x
    return rules


def _swin_backbone_rules(num_stages: int) -> list[Rule]:
    """transformers' MaskFormer-Swin (what it builds for "swin") <-> a plain `SwinBackbone` (ours for "swin")."""
    tf, ours = f"{_TF_BACKBONE}.model", f"{_OUR_BACKBONE}.swin"
    block, our_block = f"{tf}.encoder.layers.{{i}}.blocks.{{j}}", f"{ours}.encoder.layers.{{i}}.blocks.{{j}}"
    rules = [
        Rule(f"{tf}.embeddings.{{rest}}", f"{ours}.embeddings.{{rest}}"),
        Rule(f"{tf}.encoder.layers.{{i}}.downsample.{{rest}}", f"{ours}.encoder.layers.{{i}}.downsample.{{rest}}"),
        Rule(
            f"{block}.attention.self.relative_position_bias_table",
            f"{our_block}.attention.relative_position_bias.relative_position_bias_table",
        ),
        Rule(f"{block}.attention.output.dense.{{p}}", f"{our_block}.attention.o_proj.{{p}}"),
        Rule(f"{block}.intermediate.dense.{{p}}", f"{our_block}.mlp.fc1.{{p}}"),
        Rule(f"{block}.output.dense.{{p}}", f"{our_block}.mlp.fc2.{{p}}"),
        Rule(f"{block}.layernorm_before.{{p}}", f"{our_block}.layernorm_before.{{p}}"),
        Rule(f"{block}.layernorm_after.{{p}}", f"{our_block}.layernorm_after.{{p}}"),
    ]
    rules += [
        Rule(f"{block}.attention.self.{name}.{{p}}", f"{our_block}.attention.{name[0]}_proj.{{p}}")
        for name in ("query", "key", "value")
    ]
    rules += [
        Rule(
            f"{_TF_BACKBONE}.hidden_states_norms.{n}.{{p}}",
            f"{_OUR_BACKBONE}.hidden_states_norms.stage{n + 1}.{{p}}",
        )
        for n in range(num_stages)
    ]
    return rules


def transformers_rules(config: MaskFormerConfig) -> tuple[list[Rule], list[str]]:
    """Rules for transformers <-> ours, and the transformers buffers that have no counterpart in ours (skipped
    when reading, computed by transformers' model when writing)."""
    rules = _transformers_head_rules()
    tf_buffers = [
        r"criterion\.empty_weight",  # no-object class weight, built from no_object_weight
        # MaskFormer-Swin's final LayerNorm, which its backbone never applies: not built in ours (backbone.py).
        rf"{re.escape(_TF_BACKBONE)}\.model\.layernorm\.(weight|bias)",
    ]
    if config.backbone_config.model_type == "swin":
        rules += _swin_backbone_rules(len(config.backbone_config.depths))
        # MaskFormer-Swin stores the relative position index (a function of the window size); Swin does not.
        tf_buffers.append(r".*\.relative_position_index")
    else:
        rules.append(Rule(f"{_TF_BACKBONE}.{{rest}}", f"{_OUR_BACKBONE}.{{rest}}"))
    return rules, tf_buffers


# ----------------------------------------------------------------------------------------------------
# transformers <-> ours: configs and processors
# ----------------------------------------------------------------------------------------------------
def config_from_transformers(tf_config) -> MaskFormerConfig:
    """Our config from a `transformers.MaskFormerConfig` (its `decoder_config` is a DETR config)."""
    return MaskFormerConfig(**settings_from_transformers(tf_config, MaskFormerConfig))


def processor_from_transformers(settings: Mapping[str, Any] | None) -> MaskFormerImageProcessor:
    """Our processor from the dict in a transformers `preprocessor_config.json` (legacy keys accepted)."""
    settings = dict(settings or {})
    settings.setdefault("ignore_index", None)  # transformers' default: no ignore value
    return MaskFormerImageProcessor(**settings)


# ----------------------------------------------------------------------------------------------------
# Entry points
# ----------------------------------------------------------------------------------------------------
def state_dict_from_transformers(
    state_dict: Mapping[str, Tensor], config: MaskFormerConfig, target: Mapping[str, Tensor]
) -> dict[str, Tensor]:
    """transformers (4.x or 5.x names) -> ours, checked against `target` (our fresh model's state dict)."""
    rules, tf_buffers = transformers_rules(config)
    return convert_state_dict(
        state_dict, rules, target, to_ours=True, skipped_source=tf_buffers, what="transformers checkpoint"
    )


def state_dict_to_transformers(
    state_dict: Mapping[str, Tensor], config: MaskFormerConfig, target: Mapping[str, Tensor]
) -> dict[str, Tensor]:
    """ours -> transformers 5.x names, checked against `target` (a fresh transformers model's state dict)."""
    rules, tf_buffers = transformers_rules(config)
    return convert_state_dict(
        state_dict, rules, target, to_ours=False, computed_target=tf_buffers, what="our checkpoint"
    )


def resolve_source(source: str | Path) -> Path:
    """A local folder, or a Hub id downloaded with `huggingface_hub.snapshot_download`."""
    path = Path(source)
    if path.is_dir():
        return path
    if path.exists():
        raise InvalidInputError(f"{source}: expected a folder (config.json + weights), got a file")
    try:
        check_local_source(str(source))  # a path that cannot be a Hub id: "no such file or folder"
    except FileNotFoundError as error:
        raise MissingInputError(str(error)) from None
    try:
        return Path(snapshot_download(str(source), allow_patterns=["*.json", "*.safetensors", "*.bin"]))
    except Exception as error:  # offline, unknown repo, gated repo: many exception types
        first_line = (str(error).strip().splitlines() or [""])[0]
        raise MissingInputError(
            f"{source}: no such local folder, and it could not be downloaded from the Hugging Face Hub "
            f"({type(error).__name__}: {first_line}). Without network access, pass a local folder."
        ) from error


def _check_model_type(folder: Path, source: str | Path, expected: tuple[str, ...]) -> None:
    config_file = folder / "config.json"
    if not config_file.is_file():
        raise MissingInputError(f"{source} has no config.json: not a saved model folder")
    try:
        model_type = json.loads(config_file.read_text()).get("model_type")
    except json.JSONDecodeError as error:
        raise InvalidInputError(f"{config_file}: not valid JSON ({error})") from error
    if model_type not in expected:
        raise InvalidInputError(
            f"{source}: config.json has model_type {model_type!r}, expected {' or '.join(map(repr, expected))} "
            "(a MaskFormer folder)"
        )


def convert_from_transformers(
    source: str | Path, destination: str | Path | None = None
) -> tuple[MaskFormerForInstanceSegmentation, MaskFormerImageProcessor]:
    """Read a transformers MaskFormer folder (or Hub id) and return our model (eval mode) and processor;
    with `destination`, also `save_pretrained` both there."""
    folder = resolve_source(source)
    _check_model_type(folder, source, ("maskformer",))
    model = MaskFormerForInstanceSegmentation.from_pretrained(folder).eval()
    processor_file = folder / "preprocessor_config.json"
    settings = json.loads(processor_file.read_text()) if processor_file.is_file() else None
    if settings is None:
        logger.warning("%s has no preprocessor_config.json: transformers' default processor settings", source)
    processor = processor_from_transformers(settings)
    if destination is not None:
        model.save_pretrained(destination)
        processor.save_pretrained(destination)
    return model, processor


def convert_to_transformers(
    source: str | Path | MaskFormerForInstanceSegmentation,
    destination: str | Path,
    processor: MaskFormerImageProcessor | None = None,
):
    """Write our model (a folder or an instance) as a transformers MaskFormer folder (`save_pretrained`'s
    transformers-native format) that `transformers.MaskFormerForInstanceSegmentation.from_pretrained` and
    `AutoImageProcessor.from_pretrained` load. Returns the transformers model (eval mode)."""
    model = source
    if not isinstance(source, MaskFormerForInstanceSegmentation):
        folder = resolve_source(source)
        _check_model_type(folder, source, (MaskFormerConfig.model_type, "maskformer"))
        model = MaskFormerForInstanceSegmentation.from_pretrained(folder)
        if processor is None and (folder / "preprocessor_config.json").is_file():
            processor = MaskFormerImageProcessor.from_pretrained(folder)
    model.save_pretrained(destination, folder_format="transformers")
    (processor or MaskFormerImageProcessor()).save_pretrained(destination)
    return TransformersMaskFormer.from_pretrained(destination).eval()
