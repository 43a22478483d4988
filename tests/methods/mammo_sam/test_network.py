"""Tests of nnunet_ext.methods.mammo_sam.network: SAM's encoder under its own names, adapters (Fig. 2b), decoders
(Fig. 3), pos_embed resizing and the padding of other input sizes."""
import pytest
import torch

from nnunet_ext.methods.mammo_sam.network import (PRESETS, SAM_PRESETS, MammoSAM, MultiScaleAdapter, SimpleAdapter,
                                                  resize_pos_embed)


def _count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def _conv_ln(c_in: int, c_out: int, k: int) -> int:
    """Parameters of one Conv-LayerNorm-GELU: kernel, bias, LayerNorm scale and shift."""
    return c_in * c_out * k * k + c_out + 2 * c_out


@pytest.mark.parametrize("preset", SAM_PRESETS)
def test_encoder_keys_and_shapes_equal_segment_anything(preset):
    from segment_anything import sam_model_registry

    with torch.device("meta"):  # no memory, no file: vit_h has 632 M parameters
        reference = sam_model_registry[preset]().image_encoder
        ours = MammoSAM(3, 2, preset).image_encoder
    expected = {k: tuple(v.shape) for k, v in reference.state_dict().items()}
    assert {k: tuple(v.shape) for k, v in ours.state_dict().items()} == expected


def test_tiny_encoder_keys_equal_vit_b_up_to_depth_and_width():
    from segment_anything import build_sam_vit_b

    reference = set(build_sam_vit_b().image_encoder.state_dict())
    ours = set(MammoSAM(1, 2, "tiny").image_encoder.state_dict())
    assert ours == {k for k in reference if not k.startswith("blocks.") or int(k.split(".")[1]) < 4}


@pytest.mark.parametrize("channels", [64, 96, 1024])
def test_adapter_parameter_counts(channels):
    quarter, sixteenth = channels // 4, channels // 16
    msa = _conv_ln(channels, quarter, 1) + 4 * _conv_ln(quarter, sixteenth, 3) + _conv_ln(4 * sixteenth, channels, 1)
    simple = _conv_ln(channels, quarter, 1) + _conv_ln(quarter, quarter, 3) + _conv_ln(quarter, channels, 1)
    assert _count(MultiScaleAdapter(channels)) == msa
    assert _count(SimpleAdapter(channels)) == simple


@pytest.mark.parametrize("adapter,decoder", [("msa", "multilevel"), ("simple", "multilevel"), ("none", "multilevel"),
                                             ("msa", "sam"), ("none", "sam")])
def test_only_adapters_and_decoder_train(adapter, decoder):
    network = MammoSAM(1, 2, "tiny", adapter, decoder)
    trainable = {name.split(".")[0] for name, p in network.named_parameters() if p.requires_grad}
    expected = {"decoder"} if decoder == "multilevel" else {"mask_decoder"}
    assert trainable == expected | ({"adapters"} if adapter != "none" else set())
    adapters = 0 if adapter == "none" else PRESETS["tiny"].depth * _count(network.adapters[0])
    decoder_count = (_count(network.decoder) if decoder == "multilevel" else
                     _count(network.mask_decoder) - _count(network.mask_decoder.iou_prediction_head))
    assert network.trainable_parameter_count() == adapters + decoder_count


def test_multilevel_decoder_widths_halve_from_the_neck():
    with torch.device("meta"):
        network = MammoSAM(1, 3, "vit_b")
    widths = [block[0].out_channels for block in network.decoder.blocks]
    assert widths == [128, 64, 32]  # Fig. 3: 256 -> 128 -> 64 -> 32
    assert network.decoder.classifier.out_channels == 3


@pytest.mark.parametrize("adapter", ["msa", "simple"])
def test_adapted_encoder_is_the_frozen_encoder_at_step_0(adapter):
    torch.manual_seed(0)
    adapted, plain = MammoSAM(1, 2, "tiny", adapter), MammoSAM(1, 2, "tiny", "none")
    plain.load_state_dict(adapted.state_dict(), strict=False)
    x = torch.randn(2, 1, 64, 48)
    assert torch.equal(adapted.encode(x), plain.encode(x))


def test_adapters_leave_the_identity_after_a_step():
    torch.manual_seed(0)
    network = MammoSAM(1, 2, "tiny")
    optimizer = torch.optim.SGD([p for p in network.parameters() if p.requires_grad], lr=0.1)
    frozen = {k: v.clone() for k, v in network.image_encoder.state_dict().items()}
    x, target = torch.randn(2, 1, 32, 32), torch.randint(0, 2, (2, 32, 32))
    before = network.encode(x).detach()
    for _ in range(2):  # the zero LayerNorm scale moves first, the rest of the adapter after it
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(network(x), target).backward()
        optimizer.step()
    assert all(torch.equal(v, frozen[k]) for k, v in network.image_encoder.state_dict().items())
    assert not torch.allclose(network.encode(x), before)


def test_pos_embed_resize_is_the_identity_at_the_native_grid():
    pos = torch.randn(1, 16, 16, 8)
    assert resize_pos_embed(pos, (16, 16)) is pos


@pytest.mark.parametrize("grid", [(8, 6), (20, 12), (16, 24)])
def test_pos_embed_resize_to_non_square_grids(grid):
    rows = torch.linspace(-1, 1, 16).reshape(1, 16, 1, 1).expand(1, 16, 16, 4)
    resized = resize_pos_embed(rows, grid)
    assert resized.shape == (1, *grid, 4)
    # a table that varies along rows only keeps doing so: the two axes are resized independently
    assert torch.allclose(resized, resized[:, :, :1, :].expand_as(resized), atol=1e-6)
    assert torch.allclose(resize_pos_embed(torch.full((1, 16, 16, 4), 0.3), grid), torch.tensor(0.3), atol=1e-6)


@pytest.mark.parametrize("shape", [(256, 256), (64, 48), (48, 80), (50, 37)])
@pytest.mark.parametrize("decoder", ["multilevel", "sam"])
def test_output_has_the_input_size(shape, decoder):
    network = MammoSAM(1, 2, "tiny", decoder=decoder).eval()
    assert network(torch.randn(2, 1, *shape)).shape == (2, 2, *shape)


def test_other_sizes_are_padded_and_cropped_back():
    torch.manual_seed(0)
    network = MammoSAM(1, 2, "tiny").eval()
    x = torch.randn(1, 1, 50, 37)
    padded = torch.nn.functional.pad(x, (0, 11, 0, 14))
    with torch.no_grad():
        assert torch.allclose(network(x), network(padded)[..., :50, :37], atol=1e-5)


def test_sam_decoder_logits_are_background_zero_and_one_mask():
    network = MammoSAM(1, 2, "tiny", "none", "sam").eval()
    with torch.no_grad():
        logits = network(torch.randn(3, 1, 32, 48))
    assert torch.equal(logits[:, 0], torch.zeros_like(logits[:, 0]))
    assert logits[:, 1].abs().sum() > 0


def test_sam_decoder_batch_equals_images_one_by_one():
    torch.manual_seed(0)
    network = MammoSAM(1, 2, "tiny", "none", "sam").eval()
    x = torch.randn(3, 1, 32, 48)
    with torch.no_grad():
        assert torch.allclose(network(x), torch.cat([network(x[i:i + 1]) for i in range(3)]), atol=1e-5)


def test_activation_checkpointing_gives_the_same_gradients():
    torch.manual_seed(0)
    plain = MammoSAM(1, 2, "tiny")
    checkpointed = MammoSAM(1, 2, "tiny", activation_checkpointing=True)
    checkpointed.load_state_dict(plain.state_dict())
    for module in (plain.adapters, checkpointed.adapters):
        for adapter in module:
            torch.nn.init.ones_(adapter.up[1].weight)  # away from the zero start, so gradients reach every layer
    x, target = torch.randn(2, 1, 32, 32), torch.randint(0, 2, (2, 32, 32))
    grads = []
    for network in (plain, checkpointed):
        torch.nn.functional.cross_entropy(network(x), target).backward()
        grads.append([p.grad for p in network.adapters.parameters()])
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(*grads))


@pytest.mark.parametrize("kwargs,message", [({"preset": "vit_x"}, "unknown Mammo-SAM preset"),
                                            ({"adapter": "lora"}, "adapter must be one of"),
                                            ({"decoder": "sam", "num_classes": 3}, "predicts one mask")])
def test_bad_settings_are_refused(kwargs, message):
    arguments = {"num_input_channels": 1, "num_classes": 2, "preset": "tiny", **kwargs}
    with pytest.raises(ValueError, match=message):
        MammoSAM(**arguments)


@pytest.mark.parametrize("adapter,decoder", [("msa", "multilevel"), ("none", "sam"), ("simple", "sam")])
def test_every_trainable_parameter_gets_a_gradient(adapter, decoder):
    """nnU-Net's DistributedDataParallel (no find_unused_parameters) fails on a trainable parameter left out."""
    torch.manual_seed(0)
    network = MammoSAM(1, 2, "tiny", adapter, decoder)
    if network.adapters is not None:
        for module in network.adapters:
            torch.nn.init.ones_(module.up[1].weight)  # past the zero start
    torch.nn.functional.cross_entropy(network(torch.randn(2, 1, 32, 32)), torch.randint(0, 2, (2, 32, 32))).backward()
    missing = [name for name, p in network.named_parameters() if p.requires_grad and p.grad is None]
    assert missing == []
