"""lpfast: layer-parallel training of residual networks with auxiliary variables."""
from lpfast import ops
from lpfast.models import build_model

__all__ = ["ops", "build_model"]
__version__ = "0.1.0"
