"""Segmentation models: blocks, backbones, the model families, and the table of names."""

from semseg.models.registry import MODELS, create_model, list_models, model_arguments

__all__ = ["MODELS", "create_model", "list_models", "model_arguments"]
