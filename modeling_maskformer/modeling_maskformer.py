"""MaskFormer models: backbone -> pixel decoder -> transformer decoder -> class and mask heads (paper Fig. 2).

Shapes: B batch, Q queries, K classes (+1 "no object"), C channels, H×W the padded input size.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from contextlib import nullcontext
from typing import ClassVar, Literal, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from transformers import PreTrainedModel

from .backbone import build_backbone
from .configuration.configuration_maskformer import MaskFormerConfig
from .configuration.remote_code import HubFolderMixin
from .inference.fast_path import native_bf16
from .loss import MaskFormerLoss
from .matcher import HungarianMatcher
from .outputs import MaskFormerForInstanceSegmentationOutput, MaskFormerModelOutput, check_output_attentions
from .pixel_decoder import PixelDecoder, Res5TransformerEncoder
from .transformer_decoder import TransformerDecoder

logger = logging.getLogger(__name__)

FolderFormat = Literal["auto", "transformers", "remote_code"]


class FolderIO(NamedTuple):
    """How the models read and write folders: interop's functions, each given the model class (or model) and
    transformers' own method first; registered by the package face."""

    from_pretrained: Callable
    save_pretrained: Callable
    push_to_hub: Callable


class MaskHead(nn.Module):
    """Mask embedding MLP: `num_layers` Linear layers with ReLU in between (256 -> 256 -> 256 -> C_mask)."""

    def __init__(self, *, hidden_size: int, output_size: int, num_layers: int = 3):
        super().__init__()
        sizes = [hidden_size] * num_layers + [output_size]
        self.layers = nn.ModuleList(nn.Linear(n_in, n_out) for n_in, n_out in zip(sizes[:-1], sizes[1:]))

    def forward(self, hidden_states: Tensor) -> Tensor:
        for layer in self.layers[:-1]:
            hidden_states = F.relu(layer(hidden_states))
        return self.layers[-1](hidden_states)


class MaskFormerPreTrainedModel(HubFolderMixin, PreTrainedModel):
    config_class = MaskFormerConfig
    config: MaskFormerConfig
    base_model_prefix = "model"
    main_input_name = "pixel_values"
    input_modalities = ("image",)
    supports_gradient_checkpointing = True
    _supports_sdpa = True
    _no_split_modules = ["TransformerLayer"]
    # The Swin backbones' unused final LayerNorm, no longer built (backbone.py), in folders saved before.
    _keys_to_ignore_on_load_unexpected = [r"backbone\.body\.(swin|model)\.layernorm\.(weight|bias)"]

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        """The original's initialisation: Xavier for the transformer (DETR), c2_xavier_fill for the FPN
        (Kaiming-uniform, a=1), PyTorch defaults for the heads, N(0, 1) for the query embeddings."""
        if isinstance(module, (TransformerDecoder, Res5TransformerEncoder)):
            for name, param in module.named_parameters():
                if param.dim() > 1 and not name.startswith("query_embed"):
                    nn.init.xavier_uniform_(param, gain=self.config.init_xavier_std)
                elif name.endswith("bias") and "norm" not in name:
                    nn.init.zeros_(param)
            if isinstance(module, TransformerDecoder):
                nn.init.normal_(module.query_embed.weight)
            for norm in (m for m in module.modules() if isinstance(m, nn.LayerNorm)):
                nn.init.ones_(norm.weight)
                nn.init.zeros_(norm.bias)
        elif isinstance(module, PixelDecoder):
            for conv in (m for m in module.modules() if isinstance(m, nn.Conv2d)):
                if module.encoder is not None and any(conv is m for m in module.encoder.modules()):
                    continue
                nn.init.kaiming_uniform_(conv.weight, a=1)
                if conv.bias is not None:
                    nn.init.zeros_(conv.bias)
        elif isinstance(module, nn.GroupNorm) and module.affine:
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Linear) and getattr(module, "_maskformer_head", False):
            module.reset_parameters()

    # NOTE: folder I/O lives in interop/, plugged in by `__init__.py`, so this module never imports interop and
    # remote-code folders carry none of it (there, transformers' own methods stay).
    folder_io: ClassVar[FolderIO | None] = None

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *model_args, **kwargs):
        """Also reads transformers' MaskFormer folders; a new `num_labels` re-initialises the class head (with a
        warning); weights that do not fit raise `MaskFormerLoadError` (`interop/loading.py`)."""
        if cls.folder_io is None:
            return super().from_pretrained(pretrained_model_name_or_path, *model_args, **kwargs)
        return cls.folder_io.from_pretrained(
            cls, super().from_pretrained, pretrained_model_name_or_path, *model_args, **kwargs
        )

    def save_pretrained(self, save_directory, *args, folder_format: FolderFormat = "auto", **kwargs):
        """transformers' own MaskFormer format whenever it represents the model exactly ("auto"; "transformers"
        insists), else a remote-code folder ("remote_code" forces it) (`interop/saving.py`)."""
        if self.folder_io is None:
            if folder_format == "transformers":
                raise ValueError("folder_format='transformers' needs the modeling_maskformer package")
            return super().save_pretrained(save_directory, *args, **kwargs)
        return self.folder_io.save_pretrained(
            self, super().save_pretrained, save_directory, *args, folder_format=folder_format, **kwargs
        )

    def push_to_hub(self, repo_id: str, **kwargs) -> str:
        """Upload the folder, its processor and a model card (`interop/hub.py`); returns the commit URL."""
        if self.folder_io is None:
            return super().push_to_hub(repo_id, **kwargs)
        return self.folder_io.push_to_hub(self, repo_id, **kwargs)


def transformer_layer_settings(config: MaskFormerConfig) -> dict:
    """The `TransformerLayer` arguments the "+6 Enc" encoder and the transformer decoder share."""
    return {
        "hidden_size": config.hidden_size,
        "num_heads": config.num_attention_heads,
        "dropout": config.dropout,
        "attention_dropout": config.attention_dropout,
        "activation": config.activation_function,
        "pre_norm": config.pre_norm,
    }


def build_pixel_level_module(config: MaskFormerConfig) -> tuple[nn.Module, PixelDecoder]:
    """The backbone and the pixel decoder (paper Fig. 2's pixel-level module), shared with the per-pixel baseline."""
    backbone = build_backbone(
        config.backbone_config, pretrained_source=config.backbone, use_pretrained=config.use_pretrained_backbone
    )
    encoder = None
    if config.pixel_decoder_type == "fpn_transformer_encoder":
        encoder = Res5TransformerEncoder(
            in_channels=backbone.channels[-1],
            num_layers=config.encoder_layers,
            ffn_dim=config.encoder_ffn_dim,
            **transformer_layer_settings(config),
        )
    pixel_decoder = PixelDecoder(
        in_channels=backbone.channels,
        feature_size=config.fpn_feature_size,
        mask_feature_size=config.mask_feature_size,
        encoder=encoder,
    )
    return backbone, pixel_decoder


class MaskFormerModel(MaskFormerPreTrainedModel):
    """Backbone, pixel decoder and transformer decoder: per-pixel embeddings and Q query embeddings."""

    def __init__(self, config: MaskFormerConfig):
        super().__init__(config)
        self.backbone, self.pixel_decoder = build_pixel_level_module(config)
        self.transformer_decoder = TransformerDecoder(
            in_channels=self.pixel_decoder.memory_channels,
            num_queries=config.num_queries,
            num_layers=config.decoder_layers,
            ffn_dim=config.decoder_ffn_dim,
            **transformer_layer_settings(config),
        )
        self.post_init()

    def forward(
        self,
        pixel_values: Tensor,
        pixel_mask: Tensor | None = None,
        output_hidden_states: bool | None = None,
        output_attentions: bool | None = None,
        return_dict: bool | None = None,
        return_intermediate: bool = False,
    ) -> MaskFormerModelOutput | tuple:
        """pixel_values (B, 3, H, W) -> `MaskFormerModelOutput`. `pixel_mask` is accepted for transformers'
        signature: padding is bottom/right and the network sees it (as transformers')."""
        check_pixel_values(pixel_values, self.config.backbone_config)
        check_output_attentions(output_attentions, self.config)
        output_hidden_states = (
            output_hidden_states if output_hidden_states is not None else self.config.output_hidden_states
        )
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        attn_implementation = "eager" if self.config._attn_implementation == "eager" else "sdpa"
        features = self.backbone(pixel_values)  # res2..res5, each (B, C_i, H_i, W_i)
        mask_features, memory, fpn_maps = self.pixel_decoder(features, attn_implementation)
        queries, intermediate, decoder_states = self.transformer_decoder(
            memory,
            attn_implementation=attn_implementation,
            return_intermediate=return_intermediate,
            return_hidden_states=bool(output_hidden_states),
        )
        hidden = {}
        if output_hidden_states:
            hidden = {
                "encoder_hidden_states": tuple(features),
                "pixel_decoder_hidden_states": tuple(fpn_maps),
                "transformer_decoder_hidden_states": tuple(decoder_states),
                "hidden_states": (*features, *fpn_maps, *decoder_states),
            }
        output = MaskFormerModelOutput(
            encoder_last_hidden_state=features[-1],
            pixel_decoder_last_hidden_state=mask_features,
            transformer_decoder_last_hidden_state=queries,
            transformer_decoder_intermediate_states=tuple(intermediate) if return_intermediate else None,
            **hidden,
        )
        return output if return_dict else output.to_tuple()


class MaskFormerForInstanceSegmentation(MaskFormerPreTrainedModel):
    """MaskFormer with its class and mask heads and loss; serves semantic, instance and panoptic segmentation
    (the task is chosen at post-processing)."""

    def __init__(self, config: MaskFormerConfig):
        super().__init__(config)
        self.model = MaskFormerModel(config)
        self.class_head = nn.Linear(config.hidden_size, config.num_labels + 1)
        self.mask_head = MaskHead(hidden_size=config.hidden_size, output_size=config.mask_feature_size)
        for linear in (self.class_head, *self.mask_head.layers):
            linear._maskformer_head = True
        shared = {"focal_alpha": config.focal_alpha, "focal_gamma": config.focal_gamma}
        shared["num_points"] = config.train_num_points if config.mask_loss_mode == "point" else None
        self.criterion = MaskFormerLoss(
            num_labels=config.num_labels,
            matcher=HungarianMatcher(cost_weights=config.loss_weights, **shared),
            weight_dict=config.loss_weights,
            no_object_weight=config.no_object_weight,
            oversample_ratio=config.oversample_ratio,
            importance_sample_ratio=config.importance_sample_ratio,
            **shared,
        )
        self.post_init()

    def enable_fast_inference(self, bf16: bool | None = None) -> MaskFormerForInstanceSegmentation:
        """Channels-last weights and inputs and, when `bf16` (default: the device computes bf16 natively, see
        `inference/fast_path.py`), bf16 autocast for inference; outputs stay float32, training is unaffected.
        Returns the model; `disable_fast_inference()` undoes it."""
        self.to(memory_format=torch.channels_last)
        self._fast_inference_bf16 = native_bf16(self.device) if bf16 is None else bool(bf16)
        return self

    def disable_fast_inference(self) -> MaskFormerForInstanceSegmentation:
        self.to(memory_format=torch.contiguous_format)
        self._fast_inference_bf16 = None
        return self

    @property
    def fast_inference(self) -> dict | None:
        """None when off, else {"channels_last": True, "bf16": bool}."""
        bf16 = getattr(self, "_fast_inference_bf16", None)
        return None if bf16 is None else {"channels_last": True, "bf16": bf16}

    def predict(self, queries: Tensor, mask_features: Tensor) -> tuple[Tensor, Tensor]:
        """queries (B, Q, C), mask_features (B, C_mask, h, w) -> class logits (B, Q, K+1), mask logits (B, Q, h, w)."""
        mask_embeddings = self.mask_head(queries)  # (B, Q, C_mask)
        mask_logits = torch.einsum("bqc,bchw->bqhw", mask_embeddings, mask_features)
        return self.class_head(queries), mask_logits

    def get_logits(self, outputs: MaskFormerModelOutput) -> tuple[Tensor, Tensor, list[dict[str, Tensor]]]:
        """transformers' `get_logits`: class logits (B, Q, K+1), mask logits (B, Q, h, w) and per deep-supervision
        layer a dict of both (empty unless the outputs carry `transformer_decoder_intermediate_states`)."""
        mask_features = outputs.pixel_decoder_last_hidden_state
        class_logits, mask_logits = self.predict(outputs.transformer_decoder_last_hidden_state, mask_features)
        auxiliary = [
            dict(zip(("class_queries_logits", "masks_queries_logits"), self.predict(queries, mask_features)))
            for queries in outputs.transformer_decoder_intermediate_states or ()
        ]
        return class_logits, mask_logits, auxiliary

    def get_loss_dict(
        self,
        masks_queries_logits: Tensor,
        class_queries_logits: Tensor,
        mask_labels: list[Tensor],
        class_labels: list[Tensor],
        auxiliary_logits: list[dict[str, Tensor]] | None,
    ) -> dict[str, Tensor]:
        """transformers' `get_loss_dict` (its argument order): the weighted terms, deep supervision's `_{layer}`."""
        auxiliary = [(a["class_queries_logits"], a["masks_queries_logits"]) for a in auxiliary_logits or ()]
        return self.criterion(class_queries_logits, masks_queries_logits, class_labels, mask_labels, auxiliary)[1]

    def get_loss(self, loss_dict: dict[str, Tensor]) -> Tensor:
        """transformers' `get_loss`: the total, the sum of the weighted terms."""
        return sum(loss_dict.values())

    def forward(
        self,
        pixel_values: Tensor,
        mask_labels: list[Tensor] | None = None,
        class_labels: list[Tensor] | None = None,
        pixel_mask: Tensor | None = None,
        output_auxiliary_logits: bool | None = None,
        output_hidden_states: bool | None = None,
        output_attentions: bool | None = None,
        return_dict: bool | None = None,
    ) -> MaskFormerForInstanceSegmentationOutput | tuple:
        """pixel_values (B, 3, H, W); per image mask_labels (N, H, W) and class_labels (N,) to get a loss.
        `return_dict=False`: a tuple in transformers' order (without our `loss_dict` and `pixel_mask`)."""
        if (mask_labels is None) != (class_labels is None):
            raise ValueError("pass both mask_labels and class_labels to compute the loss, or neither")
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        compute_loss = mask_labels is not None
        if self.training and not compute_loss:  # NOTE: once per process (transformers' `warning_once`)
            logger.warning_once(
                "MaskFormerForInstanceSegmentation is called in training mode without labels: dropout is active and "
                "BatchNorm uses the batch's statistics, so predictions are noisy and depend on the batch. Call "
                "model.eval() before inference."
            )
        fast = self.fast_inference if not compute_loss and not self.training else None
        if fast is not None:
            pixel_values = pixel_values.contiguous(memory_format=torch.channels_last)
        output_auxiliary_logits = (
            output_auxiliary_logits if output_auxiliary_logits is not None else self.config.output_auxiliary_logits
        )
        use_auxiliary = self.config.use_auxiliary_loss and (compute_loss or bool(output_auxiliary_logits))
        with (
            torch.autocast(pixel_values.device.type, dtype=torch.bfloat16) if fast and fast["bf16"] else nullcontext()
        ):
            outputs = self.model(
                pixel_values,
                pixel_mask=pixel_mask,
                output_hidden_states=output_hidden_states,
                output_attentions=output_attentions,
                return_intermediate=use_auxiliary,
                return_dict=True,
            )
            class_logits, mask_logits, auxiliary = self.get_logits(outputs)
        if fast is not None:  # outputs stay float32
            class_logits, mask_logits = class_logits.float(), mask_logits.float()
        loss, loss_dict = None, None
        if compute_loss:
            device = mask_logits.device
            # NOTE: bool masks (`MaskFormerCollator(mask_dtype=torch.bool)`) travel small and become float here
            mask_labels = [
                labels.to(device) if labels.is_floating_point() else labels.to(device).float()
                for labels in mask_labels
            ]
            class_labels = [labels.to(device) for labels in class_labels]
            self._check_label_sizes(mask_labels, pixel_values)
            loss_dict = self.get_loss_dict(mask_logits, class_logits, mask_labels, class_labels, auxiliary)
            loss = self.get_loss(loss_dict)
        model_outputs = {k: v for k, v in outputs.items() if k != "transformer_decoder_intermediate_states"}
        outputs = MaskFormerForInstanceSegmentationOutput(
            loss=loss,
            loss_dict=loss_dict,
            class_queries_logits=class_logits,
            masks_queries_logits=mask_logits,
            auxiliary_logits=auxiliary if output_auxiliary_logits else None,
            pixel_mask=pixel_mask,
            **model_outputs,
        )
        return outputs if return_dict else outputs.to_transformers_tuple()

    @staticmethod
    def _check_label_sizes(mask_labels: list[Tensor], pixel_values: Tensor) -> None:
        size = tuple(pixel_values.shape[-2:])
        for b, masks in enumerate(mask_labels):
            if masks.ndim == 3 and tuple(masks.shape[-2:]) != size:
                raise ValueError(
                    f"mask_labels[{b}] has size {tuple(masks.shape[-2:])} but pixel_values are {size}: targets must "
                    "be at the padded input size (the image processor builds them so)"
                )


def check_pixel_values(pixel_values: Tensor, backbone_config) -> None:
    """Clear errors for inputs the backbone would reject with a deep traceback."""
    if not isinstance(pixel_values, Tensor):
        raise TypeError(f"pixel_values must be a torch.Tensor (B, C, H, W), got {type(pixel_values).__name__}")
    if pixel_values.ndim != 4:
        raise ValueError(f"pixel_values must be 4-D (B, C, H, W), got shape {tuple(pixel_values.shape)}")
    channels = getattr(backbone_config, "num_channels", 3)
    if pixel_values.shape[1] != channels:
        raise ValueError(f"pixel_values have {pixel_values.shape[1]} channels, the backbone expects {channels}")
    if min(pixel_values.shape[-2:]) < 32:
        raise ValueError(f"pixel_values are {tuple(pixel_values.shape[-2:])}: both sides must be at least 32 px")
    if not pixel_values.is_floating_point():
        raise TypeError(f"pixel_values must be floating point, got {pixel_values.dtype}")


__all__ = [
    "MaskFormerForInstanceSegmentation",
    "MaskFormerForInstanceSegmentationOutput",
    "MaskFormerModel",
    "MaskFormerModelOutput",
    "MaskFormerPreTrainedModel",
]
