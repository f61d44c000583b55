"""Reading weight files (paths, file:// URLs, timm names) and loading them with a report."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from semseg.models.backbones import vgg16
from semseg.models.pretrained import (
    WeightsFileError,
    fc_to_conv,
    load_encoder_weights,
    load_pretrained_encoder,
    load_state_dict_file,
    url_cache_key,
)


def torchvision_vgg16_state(width_divisor: int) -> dict[str, torch.Tensor]:
    """A torchvision-format vgg16 state dict at reduced width: fc layers dense, with the
    ImageNet classifier ``classifier.6``."""
    state = vgg16(with_fc=True, width_divisor=width_divisor).state_dict()
    for name in ("classifier.0.weight", "classifier.3.weight"):
        state[name] = torch.randn(state[name].shape[0], state[name][0].numel())
    state["classifier.6.weight"] = torch.randn(1000, 4096 // width_divisor)
    state["classifier.6.bias"] = torch.randn(1000)
    return state


class Toy(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))
        self.classifier = nn.Sequential(nn.Conv2d(4, 6, 2))


def test_fc_to_conv_equals_dense_layer_on_flattened_map() -> None:
    torch.manual_seed(0)
    weight, bias = torch.randn(5, 3 * 7 * 7), torch.randn(5)
    window = torch.randn(2, 3, 7, 7)
    conv_weight = fc_to_conv(weight, in_channels=3)
    assert conv_weight.shape == (5, 3, 7, 7)
    dense = F.linear(window.flatten(1), weight, bias)
    torch.testing.assert_close(F.conv2d(window, conv_weight, bias).flatten(1), dense)


def test_fc_to_conv_slid_over_a_larger_map_applies_the_dense_layer_at_every_window() -> None:
    torch.manual_seed(0)
    weight, bias = torch.randn(4, 2 * 3 * 3), torch.randn(4)
    image = torch.randn(1, 2, 5, 6)
    out = F.conv2d(image, fc_to_conv(weight, in_channels=2), bias)
    assert out.shape == (1, 4, 3, 4)
    for i in range(3):
        for j in range(4):
            window = image[:, :, i : i + 3, j : j + 3].flatten(1)
            torch.testing.assert_close(out[:, :, i, j], F.linear(window, weight, bias))


def test_fc_to_conv_converts_fc7_to_1x1() -> None:
    assert fc_to_conv(torch.zeros(8, 8), in_channels=8).shape == (8, 8, 1, 1)


@pytest.mark.parametrize(("shape", "in_channels"), [((4, 50), 3), ((4, 2, 2), 2), ((4, 18), 4)])
def test_fc_to_conv_rejects_sizes_that_are_not_a_square_kernel(
    shape: tuple[int, ...], in_channels: int
) -> None:
    with pytest.raises(ValueError, match=r"\d"):
        fc_to_conv(torch.zeros(shape), in_channels)


def test_load_reports_loaded_skipped_and_missing() -> None:
    torch.manual_seed(0)
    model = Toy()
    dense = torch.randn(6, 4 * 2 * 2)
    state = {
        "features.0.weight": torch.randn(4, 3, 3, 3),
        "features.0.bias": torch.randn(5),  # wrong shape
        "features.1.running_var": torch.rand(4),
        "classifier.0.weight": dense,  # dense weight for a 2x2 convolution
        "classifier.6.weight": torch.randn(10, 6),  # not in the model
    }
    report = load_encoder_weights(model, state)

    assert sorted(report.loaded) == [
        "classifier.0.weight",
        "features.0.weight",
        "features.1.running_var",
    ]
    assert [name for name, _ in report.skipped] == ["features.0.bias", "classifier.6.weight"]
    assert "(5,)" in report.skipped[0][1]
    assert sorted(report.missing) == [
        "classifier.0.bias",
        "features.0.bias",
        "features.1.bias",
        "features.1.running_mean",
        "features.1.weight",
    ]
    torch.testing.assert_close(model.features[0].weight, state["features.0.weight"])
    torch.testing.assert_close(model.classifier[0].weight.flatten(1), dense)
    text = str(report)
    assert "loaded 3 tensors, skipped 2, missing 5" in text
    assert "classifier.6.weight: the model has no such entry" in text


def test_prefix_map_renames_and_skips_unmapped_names() -> None:
    model = Toy()
    weight = torch.randn(4, 3, 3, 3)
    state = {"backbone.features.0.weight": weight, "head.weight": torch.randn(1)}
    report = load_encoder_weights(model, state, prefix_map={"backbone.": ""})
    assert report.loaded == ["features.0.weight"]
    assert report.skipped == [("head.weight", "matches no prefix in prefix_map")]
    torch.testing.assert_close(model.features[0].weight, weight)


def test_torchvision_file_fills_the_fully_convolutional_vgg(tmp_path: Path) -> None:
    state = torchvision_vgg16_state(width_divisor=16)
    torch.save(state, tmp_path / "vgg16.pth")
    encoder = vgg16(with_fc=True, width_divisor=16)
    report = load_pretrained_encoder(encoder, tmp_path / "vgg16.pth")
    assert report.missing == []
    assert sorted(name for name, _ in report.skipped) == [
        "classifier.6.bias",
        "classifier.6.weight",
    ]
    assert len(report.loaded) == 13 * 2 + 4
    torch.testing.assert_close(encoder.features[28].bias, state["features.28.bias"])
    fc7 = encoder.classifier[3].weight
    torch.testing.assert_close(fc7.flatten(1), state["classifier.3.weight"])


def test_timm_names_are_mapped_to_torchvision(tmp_path: Path) -> None:
    timm_state = {
        "features.0.weight": torch.randn(2, 3, 3, 3),
        "pre_logits.fc1.weight": torch.randn(8, 2, 7, 7),
        "pre_logits.fc1.bias": torch.randn(8),
        "pre_logits.fc2.weight": torch.randn(8, 8, 1, 1),
        "head.fc.weight": torch.randn(10, 8),
    }
    torch.save(timm_state, tmp_path / "timm.pth")
    state = load_state_dict_file(tmp_path / "timm.pth")
    assert sorted(state) == [
        "classifier.0.bias",
        "classifier.0.weight",
        "classifier.3.weight",
        "classifier.6.weight",
        "features.0.weight",
    ]
    torch.testing.assert_close(state["classifier.0.weight"], timm_state["pre_logits.fc1.weight"])


def test_file_url_is_downloaded_once_into_the_cache(tmp_path: Path) -> None:
    source = tmp_path / "source" / "weights.pth"
    source.parent.mkdir()
    tensor = torch.arange(6.0)
    torch.save({"w": tensor}, source)
    cache = tmp_path / "cache"

    first = load_state_dict_file(source.as_uri(), cache_dir=cache)
    assert (cache / url_cache_key(source.as_uri()) / "weights.pth").is_file()
    source.unlink()  # a second download would now fail
    second = load_state_dict_file(source.as_uri(), cache_dir=cache)
    torch.testing.assert_close(first["w"], tensor)
    torch.testing.assert_close(second["w"], tensor)


def test_urls_with_the_same_file_name_have_their_own_cache_entries(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    loaded = {}
    for folder, value in (("a", 1.0), ("b", 2.0)):
        source = tmp_path / folder / "weights.pth"
        source.parent.mkdir()
        torch.save({"w": torch.full((3,), value)}, source)
        loaded[folder] = load_state_dict_file(source.as_uri(), cache_dir=cache)["w"]
    torch.testing.assert_close(loaded["a"], torch.full((3,), 1.0))
    torch.testing.assert_close(loaded["b"], torch.full((3,), 2.0))
    assert len(list(cache.glob("*/weights.pth"))) == 2
    # The key is the SHA-256 of the full URL.
    url = (tmp_path / "a" / "weights.pth").as_uri()
    assert url_cache_key(url) == hashlib.sha256(url.encode()).hexdigest()[:16]


def test_missing_path_unsupported_scheme_and_non_state_dict_are_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="nope.pth"):
        load_state_dict_file(tmp_path / "nope.pth")
    with pytest.raises(ValueError, match="'ftp'"):
        load_state_dict_file("ftp://example.org/vgg16.pth", cache_dir=tmp_path)
    torch.save([torch.zeros(1)], tmp_path / "list.pth")
    with pytest.raises(WeightsFileError, match="list.pth"):
        load_state_dict_file(tmp_path / "list.pth")
    (tmp_path / "garbage.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(WeightsFileError, match="garbage.pth"):
        load_state_dict_file(tmp_path / "garbage.pth")


def test_weights_that_fit_nothing_are_an_error(tmp_path: Path) -> None:
    torch.save(torchvision_vgg16_state(width_divisor=16), tmp_path / "vgg16.pth")
    with pytest.raises(WeightsFileError, match="no tensor fits"):
        load_pretrained_encoder(vgg16(width_divisor=32), tmp_path / "vgg16.pth")


def test_batchnorm_counters_alone_do_not_count_as_loaded(tmp_path: Path) -> None:
    wide = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8))
    narrow = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))
    torch.save(wide.state_dict(), tmp_path / "wide.pth")
    # only "1.num_batches_tracked" (a scalar) has the same shape in both
    with pytest.raises(WeightsFileError, match="no tensor fits"):
        load_pretrained_encoder(narrow, tmp_path / "wide.pth")
