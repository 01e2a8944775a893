"""The authors' detectron2 checkpoints (facebookresearch/MaskFormer `model_final_*.pkl`) -> ours, and back.

A `.pkl` is read by `ArrayOnlyUnpickler` (numpy arrays and plain containers only), a `.pth` with
`torch.load(weights_only=True)`. The architecture is read from the key shapes (the R101c "deeplab" stem has no
transformers counterpart: refused); the attention heads and processor settings come from the presets.
"""

from __future__ import annotations

import _compat_pickle
import importlib
import math
import os
import pickle
import re
from collections import OrderedDict
from collections.abc import Mapping
from pathlib import Path
from typing import Any, NoReturn

import numpy as np
import torch
from torch import Tensor
from transformers import MaskFormerSwinConfig, ResNetConfig

from ..configuration.backbones import BACKBONE_SHAPES, STAGES, SWIN_DROP_PATH_RATE
from ..configuration.configuration_maskformer import MaskFormerConfig
from ..errors import InvalidInputError, MissingInputError, first_line
from ..image_processing import MaskFormerImageProcessor
from ..modeling_maskformer import MaskFormerForInstanceSegmentation
from ..variants import AUTHORS_CHECKPOINTS, VARIANTS, Variant
from .transformers_weights import Rule, apply_rules, convert_state_dict, drop_keys, renames

_OUR_BACKBONE = "model.backbone.body"
SKIPPED_SOURCE_KEYS = (r"criterion\.empty_weight", r"pixel_mean", r"pixel_std", r".*\.num_batches_tracked")
# Our buffers with no original counterpart: BatchNorm counters, and MaskFormer-Swin's final LayerNorm, which
# its backbone forward never uses (the original has only the per-stage output norms).
_OURS_ONLY = (r".*\.num_batches_tracked", rf"{re.escape(_OUR_BACKBONE)}\.model\.layernorm\.(weight|bias)")
# The released models `preset` names (`modeling_maskformer.variants`): the architecture each must have, and its
# test-time processor settings (what the keys cannot tell).
PRESETS: dict[str, Variant] = {name: VARIANTS[name] for name in AUTHORS_CHECKPOINTS}


class RefusedPickleError(InvalidInputError, pickle.UnpicklingError):
    """A checkpoint file refused before anything in it ran (a user error, and still a `pickle.UnpicklingError`)."""


class ArrayOnlyUnpickler(pickle.Unpickler):
    """Unpickles numpy arrays and plain containers; refuses every other global, object arrays, calls a checkpoint
    never makes, and any size the file cannot back (before allocating). Protocol-2 names are mapped as `pickle` does.
    """

    def __init__(self, file, **kwargs: Any):
        super().__init__(file, **kwargs)
        self.max_bytes = os.fstat(file.fileno()).st_size  # no array may need more bytes than the file has
        self._allowed = {
            ("numpy.core.multiarray", "_reconstruct"): self._reconstruct,
            ("numpy.core.multiarray", "scalar"): self._scalar,
            ("numpy.core.numeric", "_frombuffer"): self._frombuffer,
            ("numpy", "ndarray"): _refused_ndarray,
            ("numpy", "dtype"): self._dtype,
            ("collections", "OrderedDict"): OrderedDict,
            ("builtins", "set"): set,
            ("builtins", "frozenset"): frozenset,
            ("builtins", "bytearray"): self._bytearray,
            ("_codecs", "encode"): self._encode,  # bytes in protocol-2 pickles written by Python 3
        }

    def find_class(self, module: str, name: str) -> Any:
        default = (_compat_pickle.IMPORT_MAPPING.get(module, module), name)
        module, name = _compat_pickle.NAME_MAPPING.get((module, name), default)
        allowed = self._allowed.get((module.replace("numpy._core", "numpy.core", 1), name))
        if allowed is None:
            raise pickle.UnpicklingError(
                f"refusing to load {module}.{name}: a checkpoint may only contain numpy arrays and plain "
                "containers (this pickle would import or call other code)"
            )
        return allowed

    def _refuse(self, what: str) -> NoReturn:
        raise pickle.UnpicklingError(f"refusing {what}: not something a checkpoint of numpy arrays contains")

    def _dtype(self, *args: Any) -> np.dtype:
        dtype = np.dtype(*args)
        if dtype.hasobject:
            self._refuse(f"the object dtype {dtype}")
        return dtype

    def _reconstruct(self, subtype: Any, shape: Any, dtype: Any) -> np.ndarray:
        shape_ok = isinstance(shape, tuple) and all(isinstance(n, int) for n in shape)
        if subtype is not _refused_ndarray or not shape_ok:
            self._refuse(f"_reconstruct({subtype!r}, {shape!r}, ...)")
        num_bytes = math.prod(shape) * (dtype.itemsize if isinstance(dtype, np.dtype) else 1)  # or the dtype b"b"
        if num_bytes > self.max_bytes:
            self._refuse(f"an array of {num_bytes} bytes from a {self.max_bytes}-byte file")
        return _MULTIARRAY._reconstruct(np.ndarray, shape, dtype)

    def _scalar(self, dtype: Any, data: Any = None) -> np.generic:
        if not isinstance(dtype, np.dtype) or not isinstance(data, bytes) or len(data) != dtype.itemsize:
            self._refuse(f"a numpy scalar of {dtype!r} from {type(data).__name__}")
        return _MULTIARRAY.scalar(dtype, data)

    def _frombuffer(self, buffer: Any, dtype: Any, shape: Any, order: str) -> np.ndarray:
        if not isinstance(buffer, (bytes, bytearray, memoryview)) or not isinstance(dtype, np.dtype):
            self._refuse(f"_frombuffer of {type(buffer).__name__}")
        return np.frombuffer(buffer, dtype).reshape(shape, order=order)

    def _bytearray(self, *args: Any) -> bytearray:
        if args and not isinstance(args[0], (bytes, str)):  # bytearray(n) would allocate n bytes
            self._refuse(f"bytearray({args[0]!r})")
        return bytearray(*args)

    def _encode(self, text: Any, encoding: str = "utf-8") -> bytes:
        if not isinstance(text, str) or encoding.replace("-", "").replace("_", "").lower() != "latin1":
            self._refuse(f"_codecs.encode({type(text).__name__}, {encoding!r})")
        return text.encode("latin-1")


def _refused_ndarray(*args: Any, **kwargs: Any) -> NoReturn:  # numpy.ndarray, for `_reconstruct` only
    raise pickle.UnpicklingError("refusing numpy.ndarray(...): a checkpoint never builds arrays that way")


_MULTIARRAY = importlib.import_module(
    f"numpy.{'_core' if int(np.__version__.split('.')[0]) >= 2 else 'core'}.multiarray"
)


def load_original_checkpoint(path: str | Path) -> dict[str, Tensor]:
    """The model weights of a detectron2 checkpoint (`.pkl` of numpy arrays, or `.pth`), as tensors."""
    path = Path(path)
    if not path.is_file():
        raise MissingInputError(f"{path}: no such file" if not path.exists() else f"{path}: not a file")
    try:
        if path.suffix == ".pkl":
            with open(path, "rb") as file:
                checkpoint = ArrayOnlyUnpickler(file, encoding="latin1").load()
        else:
            checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        if path.suffix != ".pkl":  # torch.load's refusal suggests weights_only=False: never for untrusted files
            raise RefusedPickleError(
                f"{path}: not a PyTorch checkpoint of tensors only (torch.load with weights_only=True refused it)"
            ) from error
        raise RefusedPickleError(f"{path}: {first_line(error, 'unreadable pickle')}") from error
    except (EOFError, ValueError, TypeError, KeyError, IndexError, AttributeError, RuntimeError) as error:
        raise InvalidInputError(
            f"{path}: not a readable detectron2 checkpoint (.pkl of numpy arrays, or .pth): "
            f"{type(error).__name__}: {first_line(error)}"
        ) from error
    weights = checkpoint.get("model", checkpoint) if isinstance(checkpoint, Mapping) else None
    if not isinstance(weights, Mapping):
        raise InvalidInputError(
            f"{path}: expected a dict with a 'model' dict of arrays, got {type(checkpoint).__name__}"
        )
    state = {}
    for key, value in weights.items():
        if isinstance(value, np.ndarray | np.generic):
            value = torch.from_numpy(np.ascontiguousarray(value))
        if not isinstance(value, Tensor):
            raise InvalidInputError(f"{path}: weight {key!r} is a {type(value).__name__}, not an array")
        state[key] = value
    return state


def _indices(state: Mapping[str, Tensor], pattern: str) -> list[int]:
    compiled = re.compile(pattern)
    return sorted({int(m.group(1)) for key in state if (m := compiled.fullmatch(key))})


def _swin_config(state: Mapping[str, Tensor]) -> MaskFormerSwinConfig:
    proj = state["backbone.patch_embed.proj.weight"]  # (C, 3, patch, patch)
    stages = _indices(state, r"backbone\.layers\.(\d+)\..*")
    depths = [len(_indices(state, rf"backbone\.layers\.{i}\.blocks\.(\d+)\..*")) for i in stages]
    tables = [state[f"backbone.layers.{i}.blocks.0.attn.relative_position_bias_table"] for i in stages]
    window = (math.isqrt(tables[0].shape[0]) + 1) // 2  # the table has (2w - 1)^2 rows
    return MaskFormerSwinConfig(
        image_size=384 if window == 12 else 224,  # pretraining size; no effect without absolute embeddings
        patch_size=proj.shape[-1],
        num_channels=proj.shape[1],
        embed_dim=proj.shape[0],
        depths=depths,
        num_heads=[table.shape[1] for table in tables],
        window_size=window,
        mlp_ratio=state["backbone.layers.0.blocks.0.mlp.fc1.weight"].shape[0] / proj.shape[0],
        qkv_bias="backbone.layers.0.blocks.0.attn.qkv.bias" in state,
        drop_path_rate=SWIN_DROP_PATH_RATE,
        out_features=STAGES[: len(stages)],
    )


def _resnet_config(state: Mapping[str, Tensor]) -> ResNetConfig:
    if "backbone.stem.conv2.weight" in state:
        raise InvalidInputError(
            "this checkpoint has detectron2's 'deeplab' ResNet stem (three 3x3 convs, the R101c models): "
            "transformers' ResNet has a single 7x7 stem conv, so it cannot be converted"
        )
    stages = _indices(state, r"backbone\.res(\d+)\..*")
    bottleneck = "backbone.res2.0.conv3.weight" in state
    last_conv = "conv3" if bottleneck else "conv2"
    stem = state["backbone.stem.conv1.weight"]  # (C, 3, 7, 7)
    return ResNetConfig(
        num_channels=stem.shape[1],
        embedding_size=stem.shape[0],
        hidden_sizes=[state[f"backbone.res{n}.0.{last_conv}.weight"].shape[0] for n in stages],
        depths=[len(_indices(state, rf"backbone\.res{n}\.(\d+)\..*")) for n in stages],
        layer_type="bottleneck" if bottleneck else "basic",
        downsample_in_bottleneck=False,  # MaskFormer's configs: STRIDE_IN_1X1=False
        out_features=STAGES[: len(stages)],
    )


def config_from_original(
    state: Mapping[str, Tensor], preset: str | None = None, num_attention_heads: int | None = None
) -> MaskFormerConfig:
    """Our config from the key shapes, checked against `preset` when given (heads: the argument, else the preset's)."""
    head, pixel = "sem_seg_head.predictor", "sem_seg_head.pixel_decoder"
    decoder_ffn = f"{head}.transformer.decoder.layers.0.linear1.weight"
    encoder_ffn = f"{pixel}.transformer.encoder.layers.0.linear1.weight"
    required = [f"{head}.query_embed.weight", f"{head}.class_embed.weight", f"{pixel}.mask_features.weight"]
    if missing := [key for key in [*required, decoder_ffn] if key not in state]:
        raise InvalidInputError(f"not a MaskFormer checkpoint in the authors' layout: no {', '.join(missing)}")
    if "backbone.patch_embed.proj.weight" in state:
        backbone_config = _swin_config(state)
    elif "backbone.stem.conv1.weight" in state:
        backbone_config = _resnet_config(state)
    else:
        raise InvalidInputError(
            "unknown backbone: neither a Swin (backbone.patch_embed) nor a ResNet (backbone.stem) key"
        )
    if any(key.startswith("sem_seg_head.predictor.transformer.encoder.") for key in state):
        raise InvalidInputError(
            "this checkpoint has a transformer encoder (or its pre-norm LayerNorm) inside the predictor "
            "(TRANSFORMER.ENC_LAYERS > 0 or PRE_NORM=True): not supported by this model"
        )
    decoder_layers = _indices(state, rf"{re.escape(head)}\.transformer\.decoder\.layers\.(\d+)\..*")
    encoder_layers = _indices(state, rf"{re.escape(pixel)}\.transformer\.encoder\.layers\.(\d+)\..*")
    query_embed = state[f"{head}.query_embed.weight"]  # (Q, d)
    mask_features = state[f"{pixel}.mask_features.weight"]  # (C_mask, C, 3, 3)
    expected = PRESETS[preset].config() if preset is not None else MaskFormerConfig()
    config = MaskFormerConfig(
        backbone_config=backbone_config,
        pixel_decoder_type="fpn_transformer_encoder" if encoder_layers else "fpn",
        fpn_feature_size=mask_features.shape[1],
        mask_feature_size=mask_features.shape[0],
        encoder_layers=len(encoder_layers),
        encoder_ffn_dim=state[encoder_ffn].shape[0] if encoder_layers else 2048,
        num_queries=query_embed.shape[0],
        hidden_size=query_embed.shape[1],
        decoder_layers=len(decoder_layers),
        num_attention_heads=num_attention_heads or expected.num_attention_heads,
        decoder_ffn_dim=state[decoder_ffn].shape[0],
        num_labels=state[f"{head}.class_embed.weight"].shape[0] - 1,
    )
    if preset is None:
        return config
    # The preset's backbone shape (`BACKBONE_SHAPES`), classes and pixel decoder, or an error naming each difference.
    shape = BACKBONE_SHAPES[PRESETS[preset].backbone]
    wanted = {key: getattr(expected.backbone_config, key) for key in shape}
    found = {key: getattr(config.backbone_config, key, None) for key in shape}
    for key in ("num_labels", "pixel_decoder_type"):
        wanted[key], found[key] = getattr(expected, key), getattr(config, key)
    differences = [
        f"{key}: checkpoint {found[key]!r}, preset {value!r}" for key, value in wanted.items() if found[key] != value
    ]
    if differences:
        raise InvalidInputError(f"the checkpoint does not match preset {preset!r}: " + "; ".join(differences))
    return config


def _backbone_rules(config: MaskFormerConfig) -> list[Rule]:
    ours = _OUR_BACKBONE
    if config.backbone_config.model_type == "resnet":
        convs = {"stem.conv1": "embedder.embedder"}  # each a conv and its FrozenBN
        for s in range(len(config.backbone_config.depths)):
            names = {"shortcut": "shortcut"} | {f"conv{c + 1}": f"layer.{c}" for c in range(3)}
            convs |= {f"res{s + 2}.{{i}}.{a}": f"encoder.stages.{s}.layers.{{i}}.{b}" for a, b in names.items()}
        rules = renames("backbone", ours, {f"{a}.weight": f"{b}.convolution.weight" for a, b in convs.items()}, "")
        return rules + renames(
            "backbone", ours, {f"{a}.norm": f"{b}.normalization" for a, b in convs.items()}, ".{stat}"
        )
    block, our_block = "backbone.layers.{i}.blocks.{j}", f"{ours}.model.encoder.layers.{{i}}.blocks.{{j}}"
    names = {"norm1": "layernorm_before", "attn.proj": "attention.output.dense", "norm2": "layernorm_after"}
    names |= {"mlp.fc1": "intermediate.dense", "mlp.fc2": "output.dense"}
    tables = ("relative_position_bias_table", "relative_position_index")
    return [
        ("backbone.patch_embed.proj.{p}", f"{ours}.model.embeddings.patch_embeddings.projection.{{p}}"),
        ("backbone.patch_embed.norm.{p}", f"{ours}.model.embeddings.norm.{{p}}"),
        (f"{block}.attn.qkv.{{p}}", *(f"{our_block}.attention.self.{x}.{{p}}" for x in ("query", "key", "value"))),
        *renames(block, our_block, {f"attn.{table}": f"attention.self.{table}" for table in tables}, suffix=""),
        *renames(block, our_block, names),
        ("backbone.layers.{i}.downsample.{rest}", f"{ours}.model.encoder.layers.{{i}}.downsample.{{rest}}"),
        ("backbone.norm{k}.{p}", f"{ours}.hidden_states_norms.{{k}}.{{p}}"),
    ]


def _detr_layer_rules(theirs: str, ours: str, attentions: dict[str, str], norms: dict[str, str]) -> list[Rule]:
    # torch.nn.MultiheadAttention's fused in_proj <-> our separate q/k/v projections, and the FFN.
    rules = renames(theirs, ours, {"linear1": "ffn.fc1", "linear2": "ffn.fc2"} | norms)
    for attention, our_attention in attentions.items():
        for p in ("weight", "bias"):
            rules.append(
                (f"{theirs}.{attention}.in_proj_{p}", *(f"{ours}.{our_attention}.{x}_proj.{p}" for x in "qkv"))
            )
        rules += renames(f"{theirs}.{attention}", f"{ours}.{our_attention}", {"out_proj": "out_proj"})
    return rules


def original_rules(config: MaskFormerConfig) -> list[Rule]:
    pixel, head = "sem_seg_head.pixel_decoder", "sem_seg_head.predictor"
    num_features = len(config.backbone_config.out_features)
    # FPN: ours runs coarse to fine (layers.0 = res4); the original numbers fine to coarse (adapter_1 = res2).
    fpn = {f"layer_{num_features}": "stem"}
    for index in range(num_features - 1):
        level = num_features - 1 - index
        fpn |= {f"adapter_{level}": f"layers.{index}.lateral", f"layer_{level}": f"layers.{index}.output"}
    rules = _backbone_rules(config)
    for theirs, ours in fpn.items():
        rules.append((f"{pixel}.{theirs}.weight", f"model.pixel_decoder.{ours}.0.weight"))
        rules.append((f"{pixel}.{theirs}.norm.{{p}}", f"model.pixel_decoder.{ours}.1.{{p}}"))
    rules += [
        (f"{pixel}.mask_features.{{p}}", "model.pixel_decoder.mask_features.{p}"),
        (f"{pixel}.input_proj.{{p}}", "model.pixel_decoder.encoder.input_proj.{p}"),
        (f"{head}.transformer.decoder.norm.{{p}}", "model.transformer_decoder.layernorm.{p}"),
        (f"{head}.query_embed.weight", "model.transformer_decoder.query_embed.weight"),
        (f"{head}.input_proj.{{p}}", "model.transformer_decoder.input_proj.{p}"),
        (f"{head}.class_embed.{{p}}", "class_head.{p}"),
        (f"{head}.mask_embed.layers.{{i}}.{{p}}", "mask_head.layers.{i}.{p}"),
    ]
    rules += _detr_layer_rules(
        f"{pixel}.transformer.encoder.layers.{{i}}",
        "model.pixel_decoder.encoder.layers.{i}",
        {"self_attn": "self_attn"},
        {"norm1": "self_attn_norm", "norm2": "ffn_norm"},
    )
    rules += _detr_layer_rules(
        f"{head}.transformer.decoder.layers.{{i}}",
        "model.transformer_decoder.layers.{i}",
        {"self_attn": "self_attn", "multihead_attn": "cross_attn"},
        {"norm1": "self_attn_norm", "norm2": "cross_attn_norm", "norm3": "ffn_norm"},
    )
    return rules


def to_original_state_dict(model: MaskFormerForInstanceSegmentation) -> dict[str, np.ndarray]:
    """Our weights under the authors' key names (numpy), plus their model's `criterion.empty_weight`."""
    state, _ = drop_keys(model.state_dict(), _OURS_ONLY)
    converted, unconverted = apply_rules(state, original_rules(model.config), to_ours=False)
    if unconverted:
        raise InvalidInputError(f"no original-format name for {len(unconverted)} keys: {', '.join(unconverted[:20])}")
    empty_weight = torch.ones(model.config.num_labels + 1)
    empty_weight[-1] = model.config.no_object_weight
    converted["criterion.empty_weight"] = empty_weight
    return {key: value.detach().cpu().numpy() for key, value in converted.items()}


def convert_from_original(
    source: str | Path,
    destination: str | Path | None = None,
    preset: str | None = None,
    num_attention_heads: int | None = None,
) -> tuple[MaskFormerForInstanceSegmentation, MaskFormerImageProcessor]:
    """Our model (eval mode) and processor from an original checkpoint, saved to `destination` if given. `preset` (a
    key of `PRESETS`) checks the architecture and sets the processor; heads: `num_attention_heads`, the preset's, 8."""
    if preset is not None and preset not in PRESETS:
        raise InvalidInputError(f"unknown preset {preset!r}; choose from {sorted(PRESETS)}")
    state = load_original_checkpoint(source)
    try:
        config = config_from_original(state, preset, num_attention_heads)
    except ValueError as error:
        raise InvalidInputError(f"{source}: {error}") from error
    model = MaskFormerForInstanceSegmentation(config)
    converted = convert_state_dict(
        state,
        original_rules(config),
        model.state_dict(),
        to_ours=True,
        skipped_source=SKIPPED_SOURCE_KEYS,
        computed_target=_OURS_ONLY,
        what="original checkpoint",
    )
    model.load_state_dict(converted, strict=True)
    model.eval()
    settings = {**PRESETS[preset].processor, "num_labels": PRESETS[preset].num_labels} if preset else {}
    if "pixel_mean" in state and "pixel_std" in state:  # detectron2 keeps them in 0..255 units
        settings["image_mean"] = [float(v) / 255 for v in state["pixel_mean"].flatten()]
        settings["image_std"] = [float(v) / 255 for v in state["pixel_std"].flatten()]
    processor = MaskFormerImageProcessor(**settings)
    if destination is not None:
        model.save_pretrained(destination)
        processor.save_pretrained(destination)
    return model, processor
