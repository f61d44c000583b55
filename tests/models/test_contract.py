"""The model contract's one padding place: SegmentationModel.forward with pads_input."""

import numpy as np
import pytest
import torch

from semseg.models.contract import SegmentationModel


class Recorder(SegmentationModel):
    """Keeps what ``segment`` saw and returns it, doubled."""

    pads_input = True

    def __init__(self, stride: int) -> None:
        super().__init__(3, stride)

    def segment(self, x: torch.Tensor) -> torch.Tensor:
        self.seen = x
        return 2 * x


def test_pads_with_zeros_at_bottom_and_right_to_the_stride_and_crops_back():
    model = Recorder(4)
    images = torch.rand(2, 3, 5, 6)
    out = model(images)
    expected = np.pad(images.numpy(), ((0, 0), (0, 0), (0, 3), (0, 2)))
    np.testing.assert_array_equal(model.seen.numpy(), expected)
    torch.testing.assert_close(out, 2 * images)


def test_multiples_of_the_stride_pass_unpadded_and_without_pads_input_nothing_pads():
    model = Recorder(4)
    images = torch.rand(1, 3, 8, 12)
    model(images)
    assert model.seen.shape == images.shape
    model.pads_input = False
    odd = torch.rand(1, 3, 5, 7)
    model(odd)
    assert model.seen.shape == odd.shape


def test_the_contract_refuses_an_empty_model():
    with pytest.raises(ValueError, match="num_classes must be at least 1, got 0"):
        SegmentationModel(0, 4)
    with pytest.raises(ValueError, match="output_stride must be at least 1, got 0"):
        SegmentationModel(3, 0)
