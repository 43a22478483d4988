"""Tests of nnunet_ext.methods.dca.cost: XMorpher's search-window block, block shapes, the CLI's JSON and errors."""
from __future__ import annotations

import json
import math
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

from nnunet_ext.methods.dca.attention import WindowCrossAttention
from nnunet_ext.methods.dca.cost import (
    BLOCKS,
    build_block,
    main,
    measure,
    search_window_cross_attention_class,
    search_windows,
)

TINY = dict(size=(4, 4, 4), dim=8, heads=2, window=(2, 2, 2))
TINY_ARGS = ["--size", "4", "4", "4", "--dim", "8", "--heads", "2", "--window", "2", "2", "2"]


def randn(*shape, seed=0):
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed))


def test_search_windows_are_the_zero_padded_3x_regions_around_each_window():
    window, spatial = (2, 3, 2), (4, 6, 4)
    x = randn(2, *spatial, 3)
    regions = search_windows(x, window)
    padded = F.pad(x, (0, 0, 2, 2, 3, 3, 2, 2))  # one window of zeros on each side of every axis
    expected = [padded[(b,) + tuple(slice(i * w, i * w + 3 * w) for i, w in zip(index, window))].reshape(-1, 3)
                for b in range(2) for index in torch.cartesian_prod(*[torch.arange(n // w) for n, w in
                                                                       zip(spatial, window)]).tolist()]
    assert regions.shape == (2 * 8, 27 * 12, 3)
    assert torch.equal(regions, torch.stack(expected))


def test_xmorpher_queries_attend_to_27_windows_of_keys():
    block = build_block("xmorpher", TINY["dim"], TINY["heads"], TINY["window"])
    base, reference = randn(1, 4, 4, 4, 8, seed=1), randn(1, 4, 4, 4, 8, seed=2)
    weights = block.attention_weights(base, reference)
    assert block.keys_per_query == 27 * math.prod(TINY["window"])
    assert weights.shape == (8, 2, 8, 27 * 8)  # (windows, heads, queries per window, keys per query)
    assert torch.allclose(weights.sum(-1), torch.ones(()))
    assert block(base, reference).shape == base.shape


def test_xmorpher_with_a_1x_search_window_is_plain_windowed_cross_attention():
    torch.manual_seed(0)
    one = search_window_cross_attention_class()(8, 2, (2, 2, 2), search=1)
    plain = WindowCrossAttention(8, 2, (2, 2, 2), qkv_bias=False)
    plain.load_state_dict({**one.state_dict(), "position_bias.table": torch.zeros_like(plain.position_bias.table)})
    base, reference = randn(2, 4, 6, 4, 8, seed=1), randn(2, 4, 6, 4, 8, seed=2)
    assert torch.allclose(one(base, reference), plain(base, reference), atol=1e-6)


def test_self_and_dca_have_the_same_projection_sizes_as_xmorpher():
    blocks = {name: build_block(name, 8, 2, (2, 2, 2), offset_kernel=3) for name in BLOCKS}
    for layer in ("query", "key_value", "proj"):
        shapes = {name: tuple(getattr(block, layer).weight.shape) for name, block in blocks.items()}
        assert len(set(shapes.values())) == 1, (layer, shapes)
    assert all(getattr(block, layer).bias is None for block in blocks.values() for layer in ("query", "key_value"))


@pytest.mark.parametrize("name", BLOCKS)
def test_measure_times_forward_and_backward(name):
    result = measure(name, **TINY, offset_kernel=3, warmup=0, repeats=2, backward=True)
    assert len(result["seconds"]) == 2 and result["seconds_median"] > 0 and result["peak_mem_mb"] >= 0
    assert result["keys_per_query"] == (27 if name == "xmorpher" else 1) * 8
    assert (result["offset_net_macs"] > 0) == (name == "dca")


def test_cli_writes_every_key_with_positive_numbers(tmp_path, capsys):
    out = tmp_path / "cost.json"
    assert main(["-o", str(out), *TINY_ARGS, "--warmup", "0", "--repeats", "1"]) == 0
    result = json.loads(out.read_text())
    for key in ("dca_time_ratio_vs_xmorpher", "dca_mem_ratio_vs_xmorpher", "self_time_ratio_vs_xmorpher"):
        assert result[key] > 0
    for name in BLOCKS:
        block = result["blocks"][name]
        assert block["seconds_median"] > 0 and block["peak_mem_mb"] > 0 and block["parameters"] > 0
    assert result["blocks"]["xmorpher"]["keys_per_query"] == 27 * result["blocks"]["self"]["keys_per_query"] == 216
    assert result["settings"]["size"] == [4, 4, 4] and result["settings"]["mode"] == "forward"
    assert result["environment"]["torch"] == torch.__version__
    assert len(capsys.readouterr().out.splitlines()) == 3  # one line per block


@pytest.mark.parametrize("argv", [
    TINY_ARGS,                                               # no -o
    ["--size", "4", "4"],                                     # two sizes
    ["--size", "4", "4", "5", "--window", "2", "2", "2"],     # not a multiple of the window
    ["--dim", "8", "--heads", "3"],                           # heads do not divide dim
    ["--repeats", "0"],
    ["--warmup", "-1"],
    ["--offset_kernel", "4"],
    ["--device", "mps"],
    ["--size", "0", "4", "4", "--window", "1", "1", "1"],
    *([["--device", "cuda"]] if not torch.cuda.is_available() else []),
])
def test_bad_options_are_one_line_errors(argv, tmp_path, capsys):
    out = tmp_path / "cost.json"
    full = argv if argv is TINY_ARGS else ["-o", str(out), *argv]
    assert main(full) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "error:" in err
    assert not out.exists()


def test_output_folder_is_refused(tmp_path, capsys):
    assert main(["-o", str(tmp_path), *TINY_ARGS]) == 2
    assert "is a folder" in capsys.readouterr().err


def test_importing_the_module_does_not_import_torch():
    code = "import sys, nnunet_ext.methods.dca.cost; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)
