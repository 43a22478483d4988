import json
import math

import numpy as np

from nnunet_ext.jsonio import json_ready


def test_json_ready_gives_strict_json():
    value = {1: [np.float32(0.5), math.nan, np.int64(3), (np.bool_(True), -math.inf)], "x": {"y": np.float64(2.0)}}
    ready = json_ready(value)
    assert ready == {"1": [0.5, None, 3, [True, None]], "x": {"y": 2.0}}
    json.dumps(ready, allow_nan=False)  # raises on NaN/inf or numpy types
