"""Classification networks reused as segmentation encoders, named as torchvision names them so
ImageNet weights load without renaming."""

from semseg.models.backbones.vgg import VGG, VGG_VARIANTS, VGGFeatures, create_vgg, vgg16, vgg16_bn

__all__ = ["VGG", "VGG_VARIANTS", "VGGFeatures", "create_vgg", "vgg16", "vgg16_bn"]
