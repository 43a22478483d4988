"""FFPN-R's Contour Sampling Refinement (Sec. 2.2): clustering rule, merged contour, sampling boxes, the head, the
loss and the refined eval output."""
import numpy as np
import torch

from nnunet_ext.methods.ffpn import csr, fourier, network, targets


def circle(radius: float, order: int = 3) -> torch.Tensor:
    coefficients = torch.zeros(order, 4)
    coefficients[0, 1] = coefficients[0, 2] = radius
    return coefficients


def test_densest_cluster_is_merged_by_averaging():
    """Three near-identical circles and a far-away one with the best score: the cluster of three wins (most
    neighbours above IoU 0.7) and is averaged; the outlier is left out."""
    centres = torch.tensor([[40.0, 40.0], [41.0, 40.0], [40.0, 41.0], [10.0, 10.0]])
    coefficients = torch.stack([circle(10), circle(11), circle(10.5), circle(10)])
    scores = torch.tensor([0.5, 0.6, 0.4, 0.9])
    centre, merged, members = csr.merge_proposals(centres, coefficients, scores)
    assert members.tolist() == [True, True, True, False]
    torch.testing.assert_close(centre, torch.tensor([40.0 + 1 / 3, 40.0 + 1 / 3]))
    torch.testing.assert_close(merged, coefficients[:3].mean(0))


def test_threshold_is_strict_and_a_lone_top_proposal_is_its_own_cluster():
    centres = torch.tensor([[40.0, 40.0], [70.0, 70.0]])
    coefficients = torch.stack([circle(10), circle(10)])
    centre, merged, members = csr.merge_proposals(centres, coefficients, torch.tensor([0.2, 0.8]))
    assert members.tolist() == [False, True]  # no neighbours anywhere: the higher score decides
    torch.testing.assert_close(centre, centres[1])


def test_merging_averages_contours_point_by_point():
    """Eq. 1 is linear: decoding the averaged descriptors equals averaging the decoded contours."""
    generator = torch.Generator().manual_seed(0)
    centres = 40 + torch.randn(3, 2, generator=generator, dtype=torch.float64) * 0.3
    coefficients = torch.stack([circle(12, 5).double() + 0.2 * torch.randn(5, 4, generator=generator,
                                                                           dtype=torch.float64) for _ in range(3)])
    centre, merged, members = csr.merge_proposals(centres, coefficients, torch.ones(3, dtype=torch.float64))
    assert members.all()
    torch.testing.assert_close(fourier.decode(centre, merged, 32), fourier.decode(centres, coefficients, 32).mean(0))


def test_sampling_boxes_are_k_boundary_points_and_the_centre():
    boxes = csr.sampling_boxes(torch.tensor([30.0, 20.0]), circle(10), boundary_points=16, box_fraction=0.25,
                               min_side=1.0)
    assert boxes.shape == (17, 4)
    centres = (boxes[:, :2] + boxes[:, 2:]) / 2
    torch.testing.assert_close(centres[-1], torch.tensor([30.0, 20.0]))
    radii = (centres[:-1] - torch.tensor([30.0, 20.0])).norm(dim=1)
    torch.testing.assert_close(radii, torch.full((16,), 10.0))
    torch.testing.assert_close(boxes[:, 2:] - boxes[:, :2], torch.full((17, 2), 5.0))  # 0.25 x 20 px extent
    small = csr.sampling_boxes(torch.tensor([30.0, 20.0]), circle(2), min_side=8.0)
    torch.testing.assert_close(small[:, 2:] - small[:, :2], torch.full((17, 2), 8.0))  # at least one feature cell


def test_head_starts_as_the_identity_and_reads_the_right_image():
    head = csr.CSRHead(in_channels=4, order=3, stride=8)
    features = torch.randn(2, 4, 8, 8)
    centre_offsets, fourier_offsets = head(features, torch.tensor([0, 1]), torch.tensor([[30.0, 30.0]] * 2),
                                           torch.stack([circle(10), circle(10)]))
    assert centre_offsets.shape == (2, 2) and fourier_offsets.shape == (2, 3, 4)
    assert torch.count_nonzero(centre_offsets) == 0 and torch.count_nonzero(fourier_offsets) == 0
    torch.nn.init.normal_(head.mlp[-1].weight)
    features[1] = 0  # image 1 carries no signal: only its pooled features are zero
    first, _ = head(features, torch.tensor([0, 1]), torch.tensor([[30.0, 30.0]] * 2),
                    torch.stack([circle(10), circle(10)]))
    swapped, _ = head(features, torch.tensor([1, 0]), torch.tensor([[30.0, 30.0]] * 2),
                      torch.stack([circle(10), circle(10)]))
    torch.testing.assert_close(first, swapped.flip(0))
    assert not torch.allclose(first[0], first[1])


def _refining_net():
    torch.manual_seed(0)
    return network.FFPN(1, 2, np.full((3, 7, 4), 0.1), input_size=64, preset="tiny", refine=True)


def test_refined_eval_output_is_a_label_map():
    net = _refining_net()
    with torch.no_grad():
        logits = net.eval()(torch.randn(2, 1, 40, 48))
    assert logits.shape == (2, 3, 40, 48) and torch.equal(logits.sum(1), torch.ones(2, 40, 48))


def test_csr_loss_is_zero_without_objects_and_trains_the_head_with_them():
    net = _refining_net().train()
    maps = net(torch.randn(2, 1, 32, 32))
    empty = targets.csr_loss(net, maps, targets.batch_targets(torch.zeros(2, 1, 32, 32), 2, 7, 64))
    assert empty.item() == 0
    labels = torch.zeros(2, 1, 32, 32)
    labels[0, 0, 8:20, 10:24] = 1
    labels[1, 0, 12:28, 4:20] = 2
    loss = targets.csr_loss(net, maps, targets.batch_targets(labels, 2, 7, 64))
    loss.backward()
    assert loss.item() > 0 and net.csr.mlp[-1].weight.grad.abs().sum() > 0
    assert all(p.grad is None or p.grad.abs().sum() == 0 for p in net.heads.parameters())  # proposals detached


def test_merge_rule_uses_the_paper_threshold():
    assert (csr.DEFAULT_PROPOSALS, csr.CLUSTER_IOU, csr.BOUNDARY_POINTS) == (20, 0.7, 16)
