"""Model architectures, the model registry and checkpoint loading.

Importing this package imports every module that registers builders (:mod:`samkit.models.build_sam`,
:mod:`samkit.models.text_tiny`), so :data:`samkit.models.registry.REGISTRY` is complete.
"""
from samkit.models import build_sam, text_tiny  # noqa: F401  (register the models)
