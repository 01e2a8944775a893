"""The one tiny-config builder of the suite (after transformers' MaskFormerModelTester): a 4-stage ResNet
with widths 8..64, 2 decoder layers, 10 queries, d=32."""

from __future__ import annotations

import torch
from transformers import ResNetConfig

from modeling_maskformer import MaskFormerConfig, MaskFormerForInstanceSegmentation

STAGES = ["stage1", "stage2", "stage3", "stage4"]


def tiny_backbone_config() -> ResNetConfig:
    return ResNetConfig(embedding_size=8, hidden_sizes=[8, 16, 32, 64], depths=[1, 1, 1, 1], out_features=STAGES)


def tiny_config(**overrides) -> MaskFormerConfig:
    values = dict(
        backbone_config=tiny_backbone_config(),
        num_queries=10,
        hidden_size=32,
        num_attention_heads=4,
        decoder_layers=2,
        decoder_ffn_dim=64,
        encoder_layers=1,
        encoder_ffn_dim=64,
        fpn_feature_size=32,
        mask_feature_size=32,
        num_labels=3,
        train_num_points=256,
    )
    values.update(overrides)
    return MaskFormerConfig(**values)


def tiny_model(seed: int = 0, **overrides) -> MaskFormerForInstanceSegmentation:
    torch.manual_seed(seed)
    return MaskFormerForInstanceSegmentation(tiny_config(**overrides))


def random_targets(batch_size: int, height: int, width: int, num_labels: int = 3, seed: int = 0):
    """Per image 0..2 random non-overlapping rectangle masks with random classes; the last image has none."""
    generator = torch.Generator().manual_seed(seed)
    mask_labels, class_labels = [], []
    for b in range(batch_size):
        count = 0 if b == batch_size - 1 and batch_size > 1 else 2
        masks = torch.zeros(count, height, width)
        for n in range(count):
            top = int(torch.randint(0, height // 2, (1,), generator=generator))
            masks[n, top : top + height // 2, n * width // 2 : (n + 1) * width // 2] = 1
        mask_labels.append(masks)
        class_labels.append(torch.randint(0, num_labels, (count,), generator=generator))
    return mask_labels, class_labels


def save_transformers_checkpoint(folder, *, num_labels: int = 150, predicted: int = 7) -> None:
    """A transformers MaskFormer (tiny ResNet, 1 decoder layer, 5 queries) saved with save_pretrained, with its
    processor, that predicts class `predicted` everywhere: a stand-in for a Hub checkpoint."""
    from transformers import MaskFormerConfig as HFConfig
    from transformers import MaskFormerForInstanceSegmentation as HFModel
    from transformers import MaskFormerImageProcessor as HFProcessor

    id2label = {i: f"class {i}" for i in range(num_labels)}
    config = HFConfig(
        backbone_config=tiny_backbone_config(),
        fpn_feature_size=32,
        mask_feature_size=32,
        id2label=id2label,
        label2id={v: k for k, v in id2label.items()},
    )
    config.decoder_config.decoder_layers = 1
    config.decoder_config.num_queries = 5
    torch.manual_seed(0)
    model = HFModel(config)
    with torch.no_grad():
        model.class_predictor.bias[predicted] = 50.0
    model.save_pretrained(folder)
    HFProcessor().save_pretrained(folder)


# Prepended to a `python -c` program: our package (and its two subpackages) cannot be imported there, so what
# runs is transformers alone, as on the Hub. `%(root)s`: the repository root, also taken off sys.path.
PACKAGE_BLOCKER = """
import importlib.abc, sys
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {"modeling_maskformer", "configuration", "image_processing"}:
            raise ModuleNotFoundError(f"blocked: {name}")
sys.meta_path.insert(0, Block())
sys.path = [p for p in sys.path if p not in ("", %(root)r)]
"""


def run_in_terminal(
    code: str, *, env: dict[str, str] | None = None, cwd=None, timeout: float = 300
) -> tuple[int, str]:
    """Run `python -c code` with stdin, stdout and stderr on a pseudo-terminal, as in a shell or a notebook:
    only there does transformers ask "Do you wish to run the custom code?" (and waits 15 s for an answer that
    nobody types here). Returns (exit status, everything the program wrote)."""
    import os
    import pty
    import select
    import subprocess
    import sys
    import time

    master, slave = pty.openpty()
    process = subprocess.Popen(
        [sys.executable, "-c", code],
        stdin=slave,
        stdout=slave,
        stderr=slave,
        env=env,
        cwd=cwd,
        close_fds=True,
    )
    os.close(slave)
    chunks, deadline = [], time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            if not select.select([master], [], [], 1.0)[0]:
                continue
            try:
                data = os.read(master, 1 << 16)
            except OSError:  # EIO: the program ended and closed the terminal
                break
            if not data:
                break
            chunks.append(data)
    finally:
        if process.poll() is None and time.monotonic() >= deadline:
            process.kill()
        process.wait()
        os.close(master)
    return process.returncode, b"".join(chunks).decode(errors="replace")
