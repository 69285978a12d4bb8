"""lpfast: layer-parallel training of residual networks with auxiliary variables."""
from lpfast import ops
from lpfast.describe import Blocks, describe
from lpfast.models import build_model
from lpfast.parallel import LayerParallel

__all__ = ["ops", "build_model", "Blocks", "describe", "LayerParallel"]
__version__ = "0.1.0"
