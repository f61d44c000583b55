"""semseg tests; imported before any test module."""

import os

# albumentations asks PyPI for a newer version when imported; the tests run offline (the CLI
# sets the same for its users). Set here, before any test module or conftest imports it.
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
