"""model.init_from: which weights are copied, which are left fresh, and the report."""

import pytest
import torch

from semseg.engine.init_from import class_dependent_names, transfer_weights
from semseg.models import create_model

ARGUMENTS = {"base_channels": 4, "depth": 2}


def unet(num_classes, seed, **extra):
    torch.manual_seed(seed)
    return create_model("unet", num_classes, **ARGUMENTS, **extra)


def test_the_same_model_and_classes_loads_everything():
    source, model = unet(5, seed=1), unet(5, seed=2)
    transfer = transfer_weights(model, source.state_dict(), "a.pt", source_wrapped=False)
    for name, tensor in source.state_dict().items():
        assert torch.equal(model.state_dict()[name], tensor), name
    assert len(transfer.loaded) == len(source.state_dict())
    assert transfer.loaded_values == transfer.total_values
    assert not (transfer.reinitialised or transfer.other_shape or transfer.missing)
    n = len(source.state_dict())
    assert transfer.report().startswith(f"model.init_from a.pt: loaded {n} of {n} tensors")


def test_other_classes_leave_the_classifier_fresh():
    assert class_dependent_names("unet", ARGUMENTS, 5) == {
        "classifier.weight",
        "classifier.bias",
    }
    source, model = unet(8, seed=1), unet(5, seed=2)
    fresh = {k: v.clone() for k, v in model.state_dict().items()}
    transfer = transfer_weights(
        model,
        source.state_dict(),
        "city.pt",
        source_wrapped=False,
        class_dependent=class_dependent_names("unet", ARGUMENTS, 5),
        same_classes=False,
    )
    for name, tensor in model.state_dict().items():
        expected = fresh[name] if name.startswith("classifier.") else source.state_dict()[name]
        assert torch.equal(tensor, expected), name
    assert set(transfer.reinitialised) == {"classifier.weight", "classifier.bias"}
    assert not transfer.other_shape
    # without the classes' verdict the shapes still keep the classifier out
    model = unet(5, seed=2)
    transfer = transfer_weights(model, source.state_dict(), "city.pt", source_wrapped=False)
    assert {n for n, _, _ in transfer.other_shape} == {"classifier.weight", "classifier.bias"}
    assert "classifier.weight (8, 4, 1, 1) -> (5, 4, 1, 1)" in transfer.report()


def test_the_same_number_of_other_classes_is_reinitialised_too():
    source, model = unet(5, seed=1), unet(5, seed=2)
    fresh = model.state_dict()["classifier.weight"].clone()
    transfer = transfer_weights(
        model,
        source.state_dict(),
        "other.pt",
        source_wrapped=False,
        class_dependent=class_dependent_names("unet", ARGUMENTS, 5),
        same_classes=False,
    )
    assert set(transfer.reinitialised) == {"classifier.weight", "classifier.bias"}
    assert torch.equal(model.state_dict()["classifier.weight"], fresh)
    assert "re-initialised (the classes differ): classifier.weight" in transfer.report()


def test_input_scale_wrapper_is_looked_through_both_ways():
    source, model = unet(5, seed=1, input_scale=0.5), unet(5, seed=2)
    transfer = transfer_weights(model, source.state_dict(), "s.pt", source_wrapped=True)
    assert transfer.loaded_values == transfer.total_values
    assert torch.equal(model.state_dict()["classifier.weight"], source.model.classifier.weight)
    back = unet(5, seed=3, input_scale=0.5)
    transfer = transfer_weights(back, model.state_dict(), "t.pt", source_wrapped=False)
    assert transfer.loaded_values == transfer.total_values


def test_missing_and_unused_tensors_are_reported():
    source, model = unet(5, seed=1), unet(5, seed=2)
    weights = source.state_dict()
    del weights["classifier.bias"]
    weights["extra.weight"] = torch.zeros(3)
    transfer = transfer_weights(model, weights, "x.pt", source_wrapped=False)
    assert transfer.missing == ("classifier.bias",)
    assert transfer.unused == ("extra.weight",)
    report = transfer.report()
    assert "not in the checkpoint (fresh): classifier.bias" in report
    assert "in the checkpoint only (unused): extra.weight" in report


def test_nothing_matching_is_an_error_naming_the_file():
    model = unet(5, seed=1)
    with pytest.raises(ValueError, match="other.pt: no tensor of the checkpoint matches"):
        transfer_weights(model, {"x": torch.zeros(1)}, "other.pt", source_wrapped=False)
