"""JSON for result files: strict JSON has no NaN or infinity and no numpy types."""
from __future__ import annotations

import math

import numpy as np


def json_ready(value):
    """``value`` with NaN/inf -> None, numpy scalars -> Python numbers/bools, dict keys -> str, recursively
    (lists and tuples become lists)."""
    if isinstance(value, dict):
        return {str(k): json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_ready(v) for v in value]
    if isinstance(value, (np.floating, float)):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.bool_):
        return bool(value)
    return value
