"""Model architectures by name (`--model_preset`) and the model a training run starts from."""

from __future__ import annotations

from transformers import MaskFormerSwinConfig, ResNetConfig

from ..configuration import MaskFormerConfig
from ..modeling_maskformer import MaskFormerForInstanceSegmentation

STAGES = ["stage1", "stage2", "stage3", "stage4"]


def preset_config(name: str, id2label: dict[int, str]) -> MaskFormerConfig:
    """Architectures by name. `demo` is a small from-scratch model for CPU; the others are the paper's,
    with ImageNet backbones from the Hub."""
    labels = {"id2label": id2label, "label2id": {v: k for k, v in id2label.items()}}
    if name == "demo":
        # NOTE: dropout 0 — on short from-scratch runs decoder dropout 0.1 made eval-mode predictions
        # collapse to "no object" (REFERENCE.md, observed here); the paper's 0.1 stays the default elsewhere.
        backbone = ResNetConfig(embedding_size=32, hidden_sizes=[32, 64, 128, 256], depths=[1, 1, 2, 1],
                                layer_type="basic", out_features=STAGES)  # fmt: skip
        return MaskFormerConfig(backbone_config=backbone, num_queries=20, hidden_size=128, num_attention_heads=4,
                                decoder_layers=3, decoder_ffn_dim=512, fpn_feature_size=64, mask_feature_size=64,
                                dropout=0.0, attention_dropout=0.0, **labels)  # fmt: skip
    if name in ("resnet50", "resnet101"):
        depths = [3, 4, 6, 3] if name == "resnet50" else [3, 4, 23, 3]
        backbone = ResNetConfig(depths=depths, layer_type="bottleneck", out_features=STAGES)
        return MaskFormerConfig(backbone_config=backbone, backbone=f"microsoft/{name.replace('resnet', 'resnet-')}",
                                use_pretrained_backbone=True, use_timm_backbone=False, **labels)  # fmt: skip
    swin = {
        "swin-tiny": (96, [2, 2, 6, 2], [3, 6, 12, 24], 7, "microsoft/swin-tiny-patch4-window7-224"),
        "swin-small": (96, [2, 2, 18, 2], [3, 6, 12, 24], 7, "microsoft/swin-small-patch4-window7-224"),
        "swin-base": (128, [2, 2, 18, 2], [4, 8, 16, 32], 12, "microsoft/swin-base-patch4-window12-384-in22k"),
    }
    if name in swin:
        embed, depths, heads, window, checkpoint = swin[name]
        backbone = MaskFormerSwinConfig(embed_dim=embed, depths=depths, num_heads=heads, window_size=window,
                                        drop_path_rate=0.3, out_features=STAGES)  # fmt: skip
        return MaskFormerConfig(backbone_config=backbone, backbone=checkpoint, use_pretrained_backbone=True,
                                use_timm_backbone=False, **labels)  # fmt: skip
    raise ValueError(f"unknown --model_preset {name!r}; choose from demo, resnet50, resnet101, {', '.join(swin)}")


def build_model(args, id2label: dict[int, str]) -> MaskFormerForInstanceSegmentation:
    overrides = {"mask_loss_mode": args.mask_loss_mode} if args.mask_loss_mode else {}
    if args.model_name_or_path:
        model = MaskFormerForInstanceSegmentation.from_pretrained(
            args.model_name_or_path, id2label=id2label, label2id={v: k for k, v in id2label.items()}, **overrides
        )
    else:
        config = preset_config(args.model_preset, id2label)
        for key, value in overrides.items():
            setattr(config, key, value)
        config.validate()
        model = MaskFormerForInstanceSegmentation(config)
    return model
