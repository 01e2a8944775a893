"""The authors' detectron2 checkpoints (facebookresearch/MaskFormer `model_final_*.pkl`) -> ours, and back.

    model, processor = convert_from_original("model_final_abc.pkl", "out/ours", preset="swin-tiny-ade")

A `.pkl` is a pickled dict `{"model": {name: numpy array}, "__author__": ..., ...}`, read by `ArrayOnlyUnpickler`
(numpy arrays and plain containers only: any other global stops the load before it runs); a `.pth` (detectron2's
own checkpointer) with `torch.load(weights_only=True)`. The architecture is read from the key shapes
(`config_from_original`) and the keys are renamed by `original_rules`: detectron2's ResNet (basic 7x7 stem,
FrozenBN; STRIDE_IN_1X1=False, i.e. `downsample_in_bottleneck=False`) and `D2SwinTransformer` (its fused `qkv`
split in thirds) -> transformers' ResNet / MaskFormer-Swin backbones; `BasePixelDecoder` and "+6 Enc"
`TransformerEncoderPixelDecoder`; `TransformerPredictor` (fused `in_proj` split in thirds). The "deeplab" stem of
the R101c models has no transformers counterpart: refused. Skipped source keys: `criterion.empty_weight` (from the
config), `pixel_mean/pixel_std` (read into the processor), `*.num_batches_tracked`. Not in the keys: the number of
attention heads (8 in every released model) and the processor settings: the presets (`modeling_maskformer.variants`).
"""

from __future__ import annotations

import _compat_pickle
import importlib
import io
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
from ..errors import InvalidInputError, MissingInputError
from ..image_processing import MaskFormerImageProcessor
from ..modeling_maskformer import MaskFormerForInstanceSegmentation
from ..variants import AUTHORS_CHECKPOINTS, VARIANTS, Variant
from .transformers_weights import Rule, apply_rules, convert_state_dict, drop_keys

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


# ----------------------------------------------------------------------------------------------------
# Reading pickles safely
# ----------------------------------------------------------------------------------------------------
class ArrayOnlyUnpickler(pickle.Unpickler):
    """Unpickles numpy arrays and plain containers; refuses every other global before anything runs.

    Each allowed global is replaced by a guarded version that refuses, before allocating, any size the pickle
    cannot back with its own bytes (a 66-byte pickle must not make `bytearray(3_000_000_000)`), object arrays,
    and calls a real checkpoint never makes (`numpy.ndarray(shape)` directly). Protocol-2 names
    (`__builtin__.set`, `copy_reg`) are mapped to Python 3's exactly as `pickle` itself does, before the check.
    """

    def __init__(self, file, *, max_bytes: int | None = None, **kwargs: Any):
        """`max_bytes`: the most any one object may allocate (default: the size of `file`)."""
        super().__init__(file, **kwargs)
        self.max_bytes = _stream_size(file) if max_bytes is None else max_bytes
        self._allowed = {
            ("numpy.core.multiarray", "_reconstruct"): self._reconstruct,
            ("numpy.core.multiarray", "scalar"): self._scalar,
            ("numpy.core.numeric", "_frombuffer"): self._frombuffer,
            ("numpy", "ndarray"): _NDARRAY,
            ("numpy", "dtype"): self._dtype,
            ("collections", "OrderedDict"): OrderedDict,
            ("builtins", "set"): set,
            ("builtins", "frozenset"): frozenset,
            ("builtins", "bytearray"): self._bytearray,
            ("_codecs", "encode"): self._encode,  # bytes in protocol-2 pickles written by Python 3
        }

    def find_class(self, module: str, name: str) -> Any:
        module, name = _PROTOCOL_2_NAMES.get((module, name), (_PROTOCOL_2_MODULES.get(module, module), name))
        allowed = self._allowed.get((module.replace("numpy._core", "numpy.core", 1), name))
        if allowed is None:
            raise pickle.UnpicklingError(
                f"refusing to load {module}.{name}: a checkpoint may only contain numpy arrays and plain "
                "containers (this pickle would import or call other code)"
            )
        return allowed

    def _refuse(self, what: str) -> NoReturn:
        raise pickle.UnpicklingError(f"refusing {what}: not something a checkpoint of numpy arrays contains")

    def _check_size(self, num_bytes: int, what: str) -> None:
        if num_bytes > self.max_bytes:
            self._refuse(f"{what} of {num_bytes} bytes from a {self.max_bytes}-byte file")

    def _dtype(self, *args: Any) -> np.dtype:
        dtype = np.dtype(*args)
        if dtype.hasobject:
            self._refuse(f"the object dtype {dtype}")
        return dtype

    def _reconstruct(self, subtype: Any, shape: Any, dtype: Any) -> np.ndarray:
        if subtype is not _NDARRAY or not isinstance(shape, tuple) or not all(isinstance(n, int) for n in shape):
            self._refuse(f"_reconstruct({subtype!r}, {shape!r}, ...)")
        itemsize = dtype.itemsize if isinstance(dtype, np.dtype) else 1  # numpy writes the dtype b"b"
        self._check_size(math.prod(shape) * itemsize, "an array")
        return _NUMPY_RECONSTRUCT(np.ndarray, shape, dtype)

    def _scalar(self, dtype: Any, data: Any = None) -> np.generic:
        if not isinstance(dtype, np.dtype) or not isinstance(data, bytes) or len(data) != dtype.itemsize:
            self._refuse(f"a numpy scalar of {dtype!r} from {type(data).__name__}")
        return _NUMPY_SCALAR(dtype, data)

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


class _NDArrayMarker:
    """Stands for `numpy.ndarray` as the first argument of `_reconstruct`; calling it is refused."""

    def __call__(self, *args: Any, **kwargs: Any) -> NoReturn:
        raise pickle.UnpicklingError("refusing numpy.ndarray(...): a checkpoint never builds arrays that way")


_NDARRAY = _NDArrayMarker()
_NUMPY_CORE = "numpy._core" if int(np.__version__.split(".")[0]) >= 2 else "numpy.core"
_NUMPY_RECONSTRUCT = importlib.import_module(f"{_NUMPY_CORE}.multiarray")._reconstruct
_NUMPY_SCALAR = importlib.import_module(f"{_NUMPY_CORE}.multiarray").scalar
_PROTOCOL_2_NAMES = _compat_pickle.NAME_MAPPING
_PROTOCOL_2_MODULES = _compat_pickle.IMPORT_MAPPING


def _stream_size(file: Any) -> int:
    try:
        return os.fstat(file.fileno()).st_size
    except (AttributeError, OSError, io.UnsupportedOperation):
        return file.getbuffer().nbytes if isinstance(file, io.BytesIO) else 0


def load_original_checkpoint(path: str | Path) -> dict[str, Tensor]:
    """The model weights of a detectron2 checkpoint (`.pkl` of numpy arrays, or `.pth`), as tensors."""
    path = Path(path)
    if not path.is_file():
        raise MissingInputError(f"{path}: no such file" if not path.exists() else f"{path}: not a file")
    try:
        if path.suffix == ".pkl":
            with open(path, "rb") as file:
                unpickler = ArrayOnlyUnpickler(io.BufferedReader(file), encoding="latin1")
                checkpoint = unpickler.load()
        else:
            checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        if path.suffix != ".pkl":  # torch.load's refusal suggests weights_only=False: never for untrusted files
            raise RefusedPickleError(
                f"{path}: not a PyTorch checkpoint of tensors only (torch.load with weights_only=True refused it)"
            ) from error
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else "unreadable pickle"
        raise RefusedPickleError(f"{path}: {first_line}") from error
    except (EOFError, ValueError, TypeError, KeyError, IndexError, AttributeError, RuntimeError) as error:
        raise InvalidInputError(
            f"{path}: not a readable detectron2 checkpoint (.pkl of numpy arrays, or .pth): "
            f"{type(error).__name__}: {str(error).strip().splitlines()[0] if str(error).strip() else ''}"
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


# ----------------------------------------------------------------------------------------------------
# Architecture from the keys
# ----------------------------------------------------------------------------------------------------
def _indices(state: Mapping[str, Tensor], pattern: str) -> list[int]:
    """Sorted distinct values of the first group of `pattern` over the keys."""
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
    """Our config from the shapes of an original state dict, checked against a preset (a key of `PRESETS`) when
    given. The number of attention heads is not in the shapes: `num_attention_heads`, else the preset's."""
    head, pixel = "sem_seg_head.predictor", "sem_seg_head.pixel_decoder"
    required = [
        f"{head}.query_embed.weight",
        f"{head}.class_embed.weight",
        f"{pixel}.mask_features.weight",
        f"{head}.transformer.decoder.layers.0.linear1.weight",
    ]
    if missing := [key for key in required if key not in state]:
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
        encoder_ffn_dim=state[f"{pixel}.transformer.encoder.layers.0.linear1.weight"].shape[0]
        if encoder_layers
        else 2048,
        num_queries=query_embed.shape[0],
        hidden_size=query_embed.shape[1],
        decoder_layers=len(decoder_layers),
        num_attention_heads=num_attention_heads or expected.num_attention_heads,
        decoder_ffn_dim=state[f"{head}.transformer.decoder.layers.0.linear1.weight"].shape[0],
        num_labels=state[f"{head}.class_embed.weight"].shape[0] - 1,
    )
    if preset is not None:
        _check_preset(config, expected, preset)
    return config


def _check_preset(config: MaskFormerConfig, expected: MaskFormerConfig, name: str) -> None:
    """The backbone shape (`BACKBONE_SHAPES`), classes and pixel decoder of the preset, or an error naming each
    difference."""
    shape = BACKBONE_SHAPES[PRESETS[name].backbone]
    wanted = {key: getattr(expected.backbone_config, key) for key in shape}
    found = {key: getattr(config.backbone_config, key, None) for key in shape}
    for key in ("num_labels", "pixel_decoder_type"):
        wanted[key], found[key] = getattr(expected, key), getattr(config, key)
    differences = [
        f"{key}: checkpoint {found[key]!r}, preset {value!r}" for key, value in wanted.items() if found[key] != value
    ]
    if differences:
        raise InvalidInputError(f"the checkpoint does not match preset {name!r}: " + "; ".join(differences))


# ----------------------------------------------------------------------------------------------------
# Key rules
# ----------------------------------------------------------------------------------------------------
def _backbone_rules(config: MaskFormerConfig) -> list[Rule]:
    ours = _OUR_BACKBONE
    if config.backbone_config.model_type == "resnet":
        rules = [
            Rule("backbone.stem.conv1.weight", f"{ours}.embedder.embedder.convolution.weight"),
            Rule("backbone.stem.conv1.norm.{stat}", f"{ours}.embedder.embedder.normalization.{{stat}}"),
        ]
        for s in range(len(config.backbone_config.depths)):
            block, our_block = f"backbone.res{s + 2}.{{i}}", f"{ours}.encoder.stages.{s}.layers.{{i}}"
            rules += [
                Rule(f"{block}.shortcut.weight", f"{our_block}.shortcut.convolution.weight"),
                Rule(f"{block}.shortcut.norm.{{stat}}", f"{our_block}.shortcut.normalization.{{stat}}"),
            ]
            for c in range(3):
                rules += [
                    Rule(f"{block}.conv{c + 1}.weight", f"{our_block}.layer.{c}.convolution.weight"),
                    Rule(f"{block}.conv{c + 1}.norm.{{stat}}", f"{our_block}.layer.{c}.normalization.{{stat}}"),
                ]
        return rules
    block, our_block = "backbone.layers.{i}.blocks.{j}", f"{ours}.model.encoder.layers.{{i}}.blocks.{{j}}"
    return [
        Rule("backbone.patch_embed.proj.{p}", f"{ours}.model.embeddings.patch_embeddings.projection.{{p}}"),
        Rule("backbone.patch_embed.norm.{p}", f"{ours}.model.embeddings.norm.{{p}}"),
        Rule(f"{block}.norm1.{{p}}", f"{our_block}.layernorm_before.{{p}}"),
        Rule(f"{block}.attn.qkv.{{p}}", *(f"{our_block}.attention.self.{x}.{{p}}" for x in ("query", "key", "value"))),
        Rule(f"{block}.attn.relative_position_bias_table", f"{our_block}.attention.self.relative_position_bias_table"),
        Rule(f"{block}.attn.relative_position_index", f"{our_block}.attention.self.relative_position_index"),
        Rule(f"{block}.attn.proj.{{p}}", f"{our_block}.attention.output.dense.{{p}}"),
        Rule(f"{block}.norm2.{{p}}", f"{our_block}.layernorm_after.{{p}}"),
        Rule(f"{block}.mlp.fc1.{{p}}", f"{our_block}.intermediate.dense.{{p}}"),
        Rule(f"{block}.mlp.fc2.{{p}}", f"{our_block}.output.dense.{{p}}"),
        Rule("backbone.layers.{i}.downsample.{rest}", f"{ours}.model.encoder.layers.{{i}}.downsample.{{rest}}"),
        Rule("backbone.norm{k}.{p}", f"{ours}.hidden_states_norms.{{k}}.{{p}}"),
    ]


def _attention_rules(theirs: str, ours: str) -> list[Rule]:
    """torch.nn.MultiheadAttention (fused in_proj) <-> our separate q/k/v projections."""
    return [
        Rule(f"{theirs}.in_proj_weight", *(f"{ours}.{x}_proj.weight" for x in "qkv")),
        Rule(f"{theirs}.in_proj_bias", *(f"{ours}.{x}_proj.bias" for x in "qkv")),
        Rule(f"{theirs}.out_proj.{{p}}", f"{ours}.out_proj.{{p}}"),
    ]


def original_rules(config: MaskFormerConfig) -> list[Rule]:
    """All original <-> ours rules for this architecture."""
    pixel, head = "sem_seg_head.pixel_decoder", "sem_seg_head.predictor"
    num_features = len(config.backbone_config.out_features)
    rules = _backbone_rules(config)
    # FPN: ours runs coarse to fine (layers.0 = res4); the original numbers fine to coarse (adapter_1 = res2).
    rules.append(Rule(f"{pixel}.layer_{num_features}.weight", "model.pixel_decoder.stem.0.weight"))
    rules.append(Rule(f"{pixel}.layer_{num_features}.norm.{{p}}", "model.pixel_decoder.stem.1.{p}"))
    for index in range(num_features - 1):
        level, ours = num_features - 1 - index, f"model.pixel_decoder.layers.{index}"
        rules += [
            Rule(f"{pixel}.adapter_{level}.weight", f"{ours}.lateral.0.weight"),
            Rule(f"{pixel}.adapter_{level}.norm.{{p}}", f"{ours}.lateral.1.{{p}}"),
            Rule(f"{pixel}.layer_{level}.weight", f"{ours}.output.0.weight"),
            Rule(f"{pixel}.layer_{level}.norm.{{p}}", f"{ours}.output.1.{{p}}"),
        ]
    rules.append(Rule(f"{pixel}.mask_features.{{p}}", "model.pixel_decoder.mask_features.{p}"))
    encoder, our_encoder = (
        f"{pixel}.transformer.encoder.layers.{{i}}",
        "model.pixel_decoder.encoder.layers.{i}",
    )
    rules.append(Rule(f"{pixel}.input_proj.{{p}}", "model.pixel_decoder.encoder.input_proj.{p}"))
    rules += _attention_rules(f"{encoder}.self_attn", f"{our_encoder}.self_attn")
    rules += [
        Rule(f"{encoder}.linear1.{{p}}", f"{our_encoder}.ffn.fc1.{{p}}"),
        Rule(f"{encoder}.linear2.{{p}}", f"{our_encoder}.ffn.fc2.{{p}}"),
        Rule(f"{encoder}.norm1.{{p}}", f"{our_encoder}.self_attn_norm.{{p}}"),
        Rule(f"{encoder}.norm2.{{p}}", f"{our_encoder}.ffn_norm.{{p}}"),
    ]
    decoder, our_decoder = f"{head}.transformer.decoder.layers.{{i}}", "model.transformer_decoder.layers.{i}"
    rules += _attention_rules(f"{decoder}.self_attn", f"{our_decoder}.self_attn")
    rules += _attention_rules(f"{decoder}.multihead_attn", f"{our_decoder}.cross_attn")
    rules += [
        Rule(f"{decoder}.linear1.{{p}}", f"{our_decoder}.ffn.fc1.{{p}}"),
        Rule(f"{decoder}.linear2.{{p}}", f"{our_decoder}.ffn.fc2.{{p}}"),
        Rule(f"{decoder}.norm1.{{p}}", f"{our_decoder}.self_attn_norm.{{p}}"),
        Rule(f"{decoder}.norm2.{{p}}", f"{our_decoder}.cross_attn_norm.{{p}}"),
        Rule(f"{decoder}.norm3.{{p}}", f"{our_decoder}.ffn_norm.{{p}}"),
        Rule(f"{head}.transformer.decoder.norm.{{p}}", "model.transformer_decoder.layernorm.{p}"),
        Rule(f"{head}.query_embed.weight", "model.transformer_decoder.query_embed.weight"),
        Rule(f"{head}.input_proj.{{p}}", "model.transformer_decoder.input_proj.{p}"),
        Rule(f"{head}.class_embed.{{p}}", "class_head.{p}"),
        Rule(f"{head}.mask_embed.layers.{{i}}.{{p}}", "mask_head.layers.{i}.{p}"),
    ]
    return rules


# ----------------------------------------------------------------------------------------------------
# Entry points
# ----------------------------------------------------------------------------------------------------
def state_dict_from_original(
    state: Mapping[str, Tensor], config: MaskFormerConfig, target: Mapping[str, Tensor]
) -> dict[str, Tensor]:
    """Original -> ours, checked against `target` (our fresh model's state dict)."""
    return convert_state_dict(
        state,
        original_rules(config),
        target,
        to_ours=True,
        skipped_source=SKIPPED_SOURCE_KEYS,
        computed_target=_OURS_ONLY,
        what="original checkpoint",
    )


def to_original_state_dict(model: MaskFormerForInstanceSegmentation) -> dict[str, np.ndarray]:
    """Our weights under the authors' key names, as numpy arrays (the inverse of `state_dict_from_original`),
    plus the `criterion.empty_weight` buffer their model carries."""
    state, _ = drop_keys(model.state_dict(), _OURS_ONLY)
    converted, unconverted = apply_rules(state, original_rules(model.config), to_ours=False)
    if unconverted:
        raise InvalidInputError(f"no original-format name for {len(unconverted)} keys: {', '.join(unconverted[:20])}")
    empty_weight = torch.ones(model.config.num_labels + 1)
    empty_weight[-1] = model.config.no_object_weight
    converted["criterion.empty_weight"] = empty_weight
    return {key: value.detach().cpu().numpy() for key, value in converted.items()}


def processor_from_original(state: Mapping[str, Tensor], preset: str | None) -> MaskFormerImageProcessor:
    """Test-time settings of the preset (else our defaults); mean/std from the checkpoint when it has them."""
    settings = dict(PRESETS[preset].processor) if preset is not None else {}
    if "pixel_mean" in state and "pixel_std" in state:  # detectron2 keeps them in 0..255 units
        settings["image_mean"] = [float(v) / 255 for v in state["pixel_mean"].flatten()]
        settings["image_std"] = [float(v) / 255 for v in state["pixel_std"].flatten()]
    if preset is not None:
        settings["num_labels"] = PRESETS[preset].num_labels
    return MaskFormerImageProcessor(**settings)


def convert_from_original(
    source: str | Path,
    destination: str | Path | None = None,
    preset: str | None = None,
    num_attention_heads: int | None = None,
) -> tuple[MaskFormerForInstanceSegmentation, MaskFormerImageProcessor]:
    """Read an original checkpoint and return our model (eval mode) and processor; with `destination`, also
    `save_pretrained` both there. `preset` (a key of `PRESETS`) checks the architecture and sets the
    processor; the architecture itself is inferred from the key shapes, except the number of attention heads
    (`num_attention_heads`, else the preset's, else 8: every released model)."""
    if preset is not None and preset not in PRESETS:
        raise InvalidInputError(f"unknown preset {preset!r}; choose from {sorted(PRESETS)}")
    state = load_original_checkpoint(source)
    try:
        config = config_from_original(state, preset, num_attention_heads)
    except ValueError as error:
        raise InvalidInputError(f"{source}: {error}") from error
    model = MaskFormerForInstanceSegmentation(config)
    model.load_state_dict(state_dict_from_original(state, config, model.state_dict()), strict=True)
    model.eval()
    processor = processor_from_original(state, preset)
    if destination is not None:
        model.save_pretrained(destination)
        processor.save_pretrained(destination)
    return model, processor
