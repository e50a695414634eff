"""The digits CNN's architecture and artefact format: what
:class:`~embed_assets.embed.TorchImageEmbedder` loads, and what the trainer
(:mod:`embed_assets.train._digits_cnn`) writes. Training code sits with the training
snapshots in :mod:`embed_assets.train`; only what loading a trained model needs is here.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

ARTEFACT_FORMAT = "embed-assets/cnn-v1"


def build_encoder(config: Mapping[str, Any]) -> Any:
    """The encoder of ``config`` (``channels``, ``dimension``, ``size``): image -> embedding."""
    from torch import nn

    c = int(config["channels"])
    w, h = config["size"]
    return nn.Sequential(
        nn.Conv2d(1, c, 3, padding=1), nn.ReLU(),
        nn.Conv2d(c, 2 * c, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(2 * c, 4 * c, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(4 * c * (w // 4) * (h // 4), int(config["dimension"])),
    )


def weights_hash(config: Mapping[str, Any], state_dict: Mapping[str, Any]) -> str:
    """A hash of the architecture and the weights' values: the model's revision."""
    h = hashlib.blake2b(digest_size=8)
    h.update(json.dumps(dict(config), sort_keys=True).encode())
    for k in sorted(state_dict):
        t = state_dict[k].detach().cpu().contiguous()
        h.update(f"{k}:{t.dtype}:{tuple(t.shape)}:".encode())
        h.update(t.numpy().tobytes())
    return h.hexdigest()
