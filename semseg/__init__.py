"""semseg: semantic segmentation with convolutional networks."""

import os

# albumentations asks PyPI for a newer version on import; semseg runs offline.
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

__version__ = "0.1.0"
