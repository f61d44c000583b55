"""Pretrained encoder weights: read a state dict file, load what fits, report the rest.

Files are torchvision or timm ImageNet checkpoints (a flat ``name -> tensor`` mapping). timm
names VGG's fully connected layers differently (``pre_logits.fc1`` is fc6 already reshaped to
a 7x7 convolution, ``pre_logits.fc2`` is fc7, ``head.fc`` the classifier);
:func:`load_state_dict_file` renames them to torchvision's ``classifier.{0,3,6}``, so the rest
of the code sees one naming. Dense weights are reshaped into the convolutions that replace
them (Long et al., "Fully Convolutional Networks for Semantic Segmentation", CVPR 2015, Sec.
3.1) by :func:`fc_to_conv`.
"""

from __future__ import annotations

import hashlib
import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

import torch
from torch import nn

log = logging.getLogger(__name__)

DOWNLOAD_SCHEMES = ("http", "https", "file")

_TIMM_TO_TORCHVISION = {
    "pre_logits.fc1.": "classifier.0.",
    "pre_logits.fc2.": "classifier.3.",
    "head.fc.": "classifier.6.",
}


class WeightsFileError(ValueError):
    """A weights file cannot be read as a state dict, or nothing in it fits the model."""


@dataclass
class LoadReport:
    """Outcome of :func:`load_encoder_weights`.

    Attributes:
        loaded: model entries that received a tensor from the file.
        skipped: ``(file entry, reason)`` for tensors in the file that were not used.
        missing: model entries the file did not provide (they keep their initialisation).
    """

    loaded: list[str] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        lines = [
            f"loaded {len(self.loaded)} tensors, skipped {len(self.skipped)}, "
            f"missing {len(self.missing)}"
        ]
        lines += [f"  skipped {name}: {reason}" for name, reason in self.skipped]
        lines += [f"  missing {name}: kept its initialisation" for name in self.missing]
        return "\n".join(lines)


def load_state_dict_file(
    source: str | Path, cache_dir: Path | None = None
) -> dict[str, torch.Tensor]:
    """Read a torchvision- or timm-format state dict, renaming timm's VGG head to torchvision's.

    Args:
        source: a local path, or an ``http``, ``https`` or ``file`` URL. URLs are downloaded
            once into ``cache_dir/<key>/<file name>``, where ``key`` is the first 16 hex
            digits of the SHA-256 of the whole URL (two URLs ending in the same file name get
            two entries), and read from there afterwards.
        cache_dir: download directory; defaults to ``semseg`` in torch hub's directory.

    Returns:
        ``name -> tensor`` on the CPU, with torchvision names.

    Raises:
        FileNotFoundError: ``source`` is a path that does not exist.
        ValueError: ``source`` is a URL with another scheme or without a file name.
        WeightsFileError: the file is not a flat mapping of names to tensors.
    """
    path = _local_file(str(source), cache_dir)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch.load raises many types for a file it cannot read
        raise WeightsFileError(f"{path}: cannot be read as a state dict ({error})") from error
    if not isinstance(state, Mapping) or not all(
        isinstance(name, str) and isinstance(value, torch.Tensor) for name, value in state.items()
    ):
        raise WeightsFileError(
            f"{path}: expected a flat mapping of parameter names to tensors, got "
            f"{type(state).__name__} (extract the state dict from a training checkpoint first)"
        )
    if any(name.startswith("pre_logits.") for name in state):
        return {_rename_prefix(name, _TIMM_TO_TORCHVISION) or name: t for name, t in state.items()}
    return dict(state)


def load_encoder_weights(
    module: nn.Module,
    state_dict: Mapping[str, torch.Tensor],
    prefix_map: Mapping[str, str] | None = None,
) -> LoadReport:
    """Copy into ``module`` every tensor of ``state_dict`` whose name and shape fit.

    A dense weight ``(out, in * k * k)`` going to a convolution weight ``(out, in, k, k)`` is
    converted with :func:`fc_to_conv`. BatchNorm's ``num_batches_tracked`` counters are copied
    when they fit but never reported as loaded or missing: they count training steps and carry
    no weights, so a file whose only fitting entries are counters has loaded nothing.

    Args:
        module: the encoder to fill.
        state_dict: ``name -> tensor`` as returned by :func:`load_state_dict_file`.
        prefix_map: file name prefix -> module name prefix (the longest matching prefix
            wins); file entries matching no prefix are skipped. ``None``: names are used as
            they are.

    Returns:
        What was loaded, skipped (with the reason) and left missing.
    """
    target = module.state_dict()
    accepted: dict[str, torch.Tensor] = {}
    report = LoadReport()
    for file_name, tensor in state_dict.items():
        name = file_name if prefix_map is None else _rename_prefix(file_name, prefix_map)
        if name is None:
            report.skipped.append((file_name, "matches no prefix in prefix_map"))
            continue
        if name not in target:
            report.skipped.append((file_name, "the model has no such entry"))
            continue
        expected = target[name].shape
        if tensor.dim() == 2 and len(expected) == 4 and tensor.numel() == target[name].numel():
            tensor = fc_to_conv(tensor, in_channels=expected[1])
        if tensor.shape != expected:
            report.skipped.append(
                (file_name, f"shape {tuple(tensor.shape)} does not fit {name} {tuple(expected)}")
            )
            continue
        accepted[name] = tensor
        if not name.endswith("num_batches_tracked"):
            report.loaded.append(name)
    report.missing = [
        name for name in target if name not in accepted and not name.endswith("num_batches_tracked")
    ]
    module.load_state_dict(accepted, strict=False)
    return report


def load_pretrained_encoder(
    encoder: nn.Module, source: str | Path, cache_dir: Path | None = None
) -> LoadReport:
    """Load ``source`` into ``encoder`` (see :func:`load_state_dict_file`) and log the report.

    Raises:
        WeightsFileError: no tensor in the file fits the encoder (wrong architecture or a
            ``width_divisor`` other than 1).
    """
    report = load_encoder_weights(encoder, load_state_dict_file(source, cache_dir))
    if not report.loaded:
        raise WeightsFileError(f"{source}: no tensor fits the encoder\n{report}")
    log.info("encoder weights from %s: %s", source, report)
    return report


def fc_to_conv(weight: torch.Tensor, in_channels: int) -> torch.Tensor:
    """Reshape a dense layer's weight into the square convolution computing the same map.

    A dense layer on a flattened ``(in_channels, k, k)`` window (flattened channel-major, as
    ``Tensor.flatten`` does) equals a ``k x k`` convolution with this weight; slid over a larger
    map, the convolution applies the dense layer at every window. The dense layer's bias is
    the convolution's bias unchanged. fc6 of VGG16: ``(4096, 25088) -> (4096, 512, 7, 7)``;
    fc7: ``(4096, 4096) -> (4096, 4096, 1, 1)``.

    Args:
        weight: ``(out_features, in_channels * k * k)`` float.
        in_channels: channels of the map the dense layer was applied to.

    Returns:
        ``(out_features, in_channels, k, k)``, a view of ``weight``.

    Raises:
        ValueError: ``weight`` is not 2-D or its input size is not ``in_channels`` times a
            square.
    """
    if weight.dim() != 2:
        raise ValueError(f"dense weight must be 2-D (out, in), got shape {tuple(weight.shape)}")
    out_features, in_features = weight.shape
    kernel = math.isqrt(in_features // in_channels)
    if kernel * kernel * in_channels != in_features:
        raise ValueError(
            f"dense input size {in_features} is not {in_channels} channels times a square kernel"
        )
    return weight.reshape(out_features, in_channels, kernel, kernel)


def _rename_prefix(name: str, prefix_map: Mapping[str, str]) -> str | None:
    for prefix in sorted(prefix_map, key=len, reverse=True):
        if name.startswith(prefix):
            return prefix_map[prefix] + name[len(prefix) :]
    return None


def _local_file(source: str, cache_dir: Path | None) -> Path:
    if "://" not in source:
        path = Path(source).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"weights file {path} does not exist")
        return path
    url = urlparse(source)
    if url.scheme not in DOWNLOAD_SCHEMES:
        raise ValueError(
            f"weights URL {source!r} has scheme {url.scheme!r}; supported: "
            f"{', '.join(DOWNLOAD_SCHEMES)}"
        )
    file_name = Path(url.path).name
    if not file_name:
        raise ValueError(f"weights URL {source!r} does not end in a file name")
    cache_dir = cache_dir if cache_dir is not None else Path(torch.hub.get_dir()) / "semseg"
    path = cache_dir / url_cache_key(source) / file_name
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        log.info("downloading %s to %s", source, path)
        torch.hub.download_url_to_file(source, str(path), progress=False)
    return path


def url_cache_key(url: str) -> str:
    """The cache folder name of a weights URL: 16 hex digits of the SHA-256 of the whole URL."""
    return hashlib.sha256(url.encode()).hexdigest()[:16]
