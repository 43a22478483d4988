"""Tests of nnunet_ext.methods.mammo_sam.weights: local SAM files only, every accepted layout, one-line errors."""
import re

import pytest
import torch

from nnunet_ext.errors import UserInputError
from nnunet_ext.methods.mammo_sam.network import MammoSAM
from nnunet_ext.methods.mammo_sam.weights import (CHECKPOINT_VARIABLE, checkpoint_path_from_environment,
                                                  export_sam_checkpoint, likely_variant, load_sam_weights)


def _sam_file(tmp_path, decoder="multilevel", name="sam_tiny.pth"):
    torch.manual_seed(1)
    source = MammoSAM(3, 2, "tiny", decoder=decoder)
    path = tmp_path / name
    export_sam_checkpoint(source, path)
    return source, path


def _equal_states(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    return all(torch.allclose(x, y, atol=1e-6) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


@pytest.mark.parametrize("in_chans", [1, 3])
def test_round_trip_through_a_sam_format_file(tmp_path, in_chans):
    torch.manual_seed(0)
    source = MammoSAM(in_chans, 2, "tiny")
    path = tmp_path / "tiny.pth"
    export_sam_checkpoint(source, path)
    state = torch.load(path, weights_only=True)
    assert state["image_encoder.patch_embed.proj.weight"].shape[1] == 3  # SAM files read RGB
    assert all(key.startswith("image_encoder.") for key in state)
    target = MammoSAM(in_chans, 2, "tiny")
    assert load_sam_weights(target, path) == ["image_encoder"]
    assert _equal_states(source.image_encoder, target.image_encoder)


def test_rgb_weights_are_summed_for_one_channel(tmp_path):
    source, path = _sam_file(tmp_path)
    target = MammoSAM(1, 2, "tiny")
    load_sam_weights(target, path)
    expected = source.image_encoder.patch_embed.proj.weight.sum(1, keepdim=True)
    assert torch.allclose(target.image_encoder.patch_embed.proj.weight, expected)
    # a grey image as three equal channels gives what the one-channel network gives
    grey = torch.randn(1, 1, 32, 32)
    with torch.no_grad():
        assert torch.allclose(source.encode(grey.expand(1, 3, 32, 32)), target.encode(grey), atol=1e-4)


@pytest.mark.parametrize("wrap", ["plain", "model", "state_dict", "module", "encoder_only"])
def test_accepted_layouts(tmp_path, wrap):
    source, path = _sam_file(tmp_path)
    state = torch.load(path, weights_only=True)
    if wrap == "model":
        state = {"model": state}
    elif wrap == "state_dict":
        state = {"state_dict": state}
    elif wrap == "module":
        state = {f"module.{k}": v for k, v in state.items()}
    elif wrap == "encoder_only":
        state = {k.removeprefix("image_encoder."): v for k, v in state.items()}
    torch.save(state, tmp_path / "wrapped.pth")
    target = MammoSAM(3, 2, "tiny")
    load_sam_weights(target, tmp_path / "wrapped.pth")
    assert _equal_states(source.image_encoder, target.image_encoder)


def test_sam_decoder_parts_load_when_present(tmp_path):
    source, path = _sam_file(tmp_path, decoder="sam")
    target = MammoSAM(1, 2, "tiny", "none", "sam")
    assert load_sam_weights(target, path) == ["image_encoder", "prompt_encoder", "mask_decoder"]
    assert _equal_states(source.mask_decoder, target.mask_decoder)
    multilevel = MammoSAM(1, 2, "tiny")  # a multi-level network ignores the file's decoder
    assert load_sam_weights(multilevel, path) == ["image_encoder"]


def test_missing_file_names_path_and_variable(tmp_path):
    expected = (f"{tmp_path / 'nope.pth'} (from {CHECKPOINT_VARIABLE}) does not exist; nnunet-ext never downloads "
                f"weights")
    with pytest.raises(UserInputError, match=re.escape(expected)):
        load_sam_weights(MammoSAM(1, 2, "tiny"), tmp_path / "nope.pth")


def test_unset_variable(monkeypatch):
    monkeypatch.delenv(CHECKPOINT_VARIABLE, raising=False)
    with pytest.raises(UserInputError, match=f"{CHECKPOINT_VARIABLE} is not set"):
        checkpoint_path_from_environment()


def test_wrong_preset_names_the_tensor_and_the_likely_variant(tmp_path):
    from segment_anything import build_sam_vit_b

    path = tmp_path / "vit_b.pth"
    torch.save(build_sam_vit_b().state_dict(), path)
    with torch.device("meta"):
        network = MammoSAM(1, 2, "vit_l")
    with pytest.raises(UserInputError, match=r"does not fit preset 'vit_l': image_encoder\.pos_embed is "
                                             r"\(1, 64, 64, 768\), expected \(1, 64, 64, 1024\); the file looks "
                                             r"like vit_b"):
        load_sam_weights(network, path)


def test_missing_tensor(tmp_path):
    _, path = _sam_file(tmp_path)
    state = torch.load(path, weights_only=True)
    del state["image_encoder.blocks.2.mlp.lin1.weight"]
    torch.save(state, path)
    with pytest.raises(UserInputError, match=r"lacks image_encoder\.blocks\.2\.mlp\.lin1\.weight"):
        load_sam_weights(MammoSAM(1, 2, "tiny"), path)


@pytest.mark.parametrize("content,message", [
    (b"not a checkpoint", "is not a SAM checkpoint torch.load can read with weights_only=True"),
    ({"fc.weight": torch.zeros(2, 2)}, r"has no image_encoder\.\* or patch_embed\.\* weights \(first key: fc.weight"),
    ([torch.zeros(2)], "expected a state dict of tensors, got list"),
])
def test_not_a_sam_file(tmp_path, content, message):
    path = tmp_path / "other.pth"
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        torch.save(content, path)
    with pytest.raises(UserInputError, match=message):
        load_sam_weights(MammoSAM(1, 2, "tiny"), path)


def test_pickled_objects_are_refused(tmp_path):
    path = tmp_path / "pickle.pth"
    torch.save({"image_encoder.patch_embed.proj.weight": torch.zeros(1), "hook": object()}, path)
    with pytest.raises(UserInputError, match="weights_only=True"):
        load_sam_weights(MammoSAM(1, 2, "tiny"), path)


@pytest.mark.parametrize("preset", ["vit_b", "vit_l", "vit_h", "tiny"])
def test_likely_variant(preset):
    with torch.device("meta"):
        state = MammoSAM(3, 2, preset).image_encoder.state_dict()
    assert likely_variant(state) == preset
