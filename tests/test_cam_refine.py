"""CAM fusion and CAM -> label rules, PAR, the affinity walk and mask voting on hand-made cases."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from oracles import neighbours

from atsg.cam import cam_to_label, cam_to_label_band, class_argmax, fuse_heads, minmax_normalise, multiscale_cams
from atsg.config import validate_config
from atsg.crf import dense_crf
from atsg.errors import ConfigError
from atsg.refine.affinity import random_walk, transition_matrix
from atsg.refine.par import PAR
from atsg.refine.pseudo import Refiner
from atsg.refine.voting import vote
from atsg.store import IGNORE


class _FixedCAM(torch.nn.Module):
    """A 'classifier' whose class map 0 is the red channel and class map 1 the left half of the image."""

    class _Backbone:
        patch_size = 1

    backbone = _Backbone()

    def cams(self, x, groups=None):
        left = torch.zeros_like(x[:, :1])
        left[..., : x.shape[-1] // 2] = 1
        maps = torch.cat([x[:, :1], left], 1)
        return maps, maps * 2, None


def test_multiscale_cams_merge_flips_by_max_and_normalise_per_class():
    images = torch.zeros(1, 3, 8, 8)
    images[0, 0, :, 6:] = 100  # red on the right
    cam, cam_aux = multiscale_cams(_FixedCAM(), images, [1.0], True, (8, 8))
    # a map that is not flip-equivariant (always the left half) covers both halves after fusion
    assert torch.allclose(cam[0, 1], torch.zeros(8, 8))  # constant after fusion -> 0 after min-max
    assert cam.min() >= 0 and cam.max() <= 1
    # the flipped view's map is flipped back before the max: red stays on the right only
    assert torch.isclose(cam[0, 0, :, 7], torch.ones(8), atol=1e-3).all()
    assert (cam[0, 0, :, :6] < 0.01).all()
    assert torch.allclose(cam, cam_aux, atol=1e-4)  # x2 disappears in the min-max normalisation


def test_minmax_normalise_per_tile_and_class():
    x = torch.tensor([[[[1.0, 3.0]], [[5.0, 5.0]]]])
    out = minmax_normalise(x)
    assert torch.allclose(out[0, 0], torch.tensor([[0.0, 1.0]]), atol=1e-4)
    assert torch.allclose(out[0, 1], torch.zeros(1, 2))


def test_fuse_heads_mixes_the_auxiliary_cam_and_renormalises():
    cam = torch.tensor([[[[0.0, 1.0], [0.5, 0.5]]]])
    aux = torch.tensor([[[[1.0, 0.0], [0.5, 1.0]]]])
    assert fuse_heads(cam, aux, 0.0) is cam  # published: the final head alone, untouched
    mixed = fuse_heads(cam, aux, 0.5)  # mean = [[.5, .5], [.5, .75]] -> min-max over the tile
    assert torch.allclose(mixed, torch.tensor([[[[0.0, 0.0], [0.0, 1.0]]]]), atol=1e-4)
    assert torch.allclose(fuse_heads(cam, aux, 1.0), aux, atol=1e-4)


def test_class_argmax_is_the_argmax_over_classes_with_the_first_class_on_ties():
    torch.manual_seed(0)
    x = torch.randn(3, 5, 7, 9)
    assert torch.equal(class_argmax(x), x.argmax(1))
    tied = torch.zeros(1, 4, 2, 2)
    tied[0, 1:3, 0, 0] = 1.0  # classes 1 and 2 tie at one pixel: the first wins
    tied[0, 3, 1, 1] = 2.0
    assert class_argmax(tied).tolist() == [[[1, 0], [0, 3]]]


def test_cam_to_label_keeps_image_classes_and_thresholds_background():
    cam = torch.tensor([[[[0.9, 0.5, 0.1, 0.3]], [[0.95, 0.2, 0.2, 0.65]]]])  # 2 fg classes, 1x4 pixels
    cls = torch.tensor([[1, 0]])  # class 2 is not in the image
    assert cam_to_label(cam, cls, 0.6, True).tolist() == [[[1, 0, 0, 0]]]
    cls = torch.tensor([[1, 1]])
    assert cam_to_label(cam, cls, 0.6, True).tolist() == [[[2, 0, 0, 2]]]
    cam = cam[..., :3]
    assert cam_to_label_band(cam, cls, 0.7, 0.25, True).tolist() == [[[2, IGNORE, 0]]]


def test_cam_to_label_without_background_class():
    cam = torch.tensor([[[[0.1, 0.9]], [[0.2, 0.3]]]])
    assert cam_to_label(cam, torch.tensor([[1, 1]]), 0.6, False).tolist() == [[[1, 0]]]
    assert cam_to_label(cam, torch.tensor([[0, 0]]), 0.6, False).tolist() == [[[IGNORE, IGNORE]]]


def test_par_matches_the_stacked_reference_and_keeps_constants_constant():
    torch.manual_seed(0)
    par = PAR([1, 2, 4], 3)
    image, maps = torch.rand(2, 3, 20, 24), torch.rand(2, 4, 20, 24)
    aff = par.affinity(image)
    ref = maps
    for _ in range(3):
        ref = (neighbours(ref, [1, 2, 4]) * aff).sum(2)
    assert torch.allclose(par(image, maps), ref, atol=1e-5)
    const = par(image, torch.full((2, 1, 20, 24), 0.7))
    assert torch.allclose(const, torch.full_like(const, par.constant_response(0.7)), atol=1e-5)
    assert abs(aff.sum(2).mean().item() - 1.01) < 1e-5


def test_par_spreads_scores_within_the_same_colour_not_across_an_edge():
    image = torch.zeros(1, 3, 16, 16)
    image[..., 8:] = 1.0  # left dark, right bright
    maps = torch.zeros(1, 1, 16, 16)
    maps[..., 4:8, 5:8] = 1.0  # a blob on the dark side, next to the edge
    out = PAR([1, 2, 4], 10)(image, maps)
    assert out[0, 0, 4:8, 0:5].mean() > 5 * out[0, 0, 4:8, 8:12].mean()


def test_transition_matrix_is_row_stochastic_and_walk_stays_normalised():
    tokens = torch.randn(2, 8, 4, 4)
    t = transition_matrix(tokens, 2.0)
    assert torch.allclose(t.sum(-1), torch.ones(2, 16), atol=1e-5)
    cams = torch.rand(2, 3, 16, 16)
    out = random_walk(cams, tokens, 2.0, 2, 1.0)
    assert out.shape == cams.shape and out.min() >= 0 and out.max() <= 1 + 1e-5


def test_walk_spreads_a_cam_over_tokens_that_look_alike():
    tokens = torch.zeros(1, 2, 2, 2)
    tokens[0, 0, 0, :] = 1  # top row: one kind of token
    tokens[0, 1, 1, :] = 1  # bottom row: another kind
    cams = torch.zeros(1, 1, 2, 2)
    cams[0, 0, 0, 0] = 1  # only the top-left token fires
    out = random_walk(cams, tokens, 1.0, 1, 1.0)
    assert out[0, 0, 0, 1] > 0.9 and out[0, 0, 1].max() < 0.1


def test_mask_voting_takes_confident_majorities_only():
    labels = torch.tensor([[[1, 1, 1, IGNORE, 2, 2, 3, 0]]])
    objects = torch.tensor([[[1, 1, 1, 1, 2, 2, 2, 0]]])
    out = vote(labels, objects, n_classes=4, threshold=0.6, min_labelled=0.5)
    # object 1: 3 of 3 labelled pixels say 1 -> all 4 pixels (the ignored one too) become 1
    # object 2: 2 of 3 say 2 (0.67 >= 0.6) -> 2; id 0 keeps its label
    assert out.tolist() == [[[1, 1, 1, 1, 2, 2, 2, 0]]]
    out = vote(labels, objects, n_classes=4, threshold=0.7, min_labelled=0.5)
    assert out[0, 0, 6] == 3  # 0.67 < 0.7: object 2 stays as it was


def test_refiner_steps_can_each_be_switched_off():
    cfg = validate_config({})["refine"]
    cfg.update(par=False, affinity=False, mask_voting=False, uncertain_band=False)
    images = torch.zeros(1, 3, 8, 8, dtype=torch.uint8)
    cams = torch.zeros(1, 2, 4, 4)
    cams[0, 0, :2] = 1.0
    label = Refiner(cfg, True, 3)(images, cams, torch.tensor([[1, 1]]))
    expected = cam_to_label(F.interpolate(cams, size=(8, 8), mode="bilinear"), torch.tensor([[1, 1]]), 0.6, True)
    assert torch.equal(label, expected)
    objects = torch.ones(1, 8, 8, dtype=torch.long)
    cfg.update(mask_voting=True, vote_threshold=0.5, vote_min_labelled=0.1)
    voted = Refiner(cfg, True, 3)(images, cams, torch.tensor([[1, 1]]), objects)
    assert voted.unique().numel() == 1  # one object: the majority class everywhere


def _edge_case():
    """A 32 px tile whose colours change at column 20 while its coarse CAMs (4 tokens of 8 px a side) change
    between the token centres 12 and 20: thresholds and argmax put the class edge near column 16."""
    images = torch.full((1, 3, 32, 32), 40, dtype=torch.uint8)
    images[..., 20:] = 200
    truth = torch.ones(1, 32, 32, dtype=torch.long)
    truth[..., 20:] = 2
    cams = torch.zeros(1, 3, 4, 4)
    cams[0, 0, :, :2] = 1.0  # class 1 (label 1) on the left tokens
    cams[0, 1, :, 2:] = 1.0  # class 2 (label 2) on the right tokens
    cams[0, 2] = 0.9  # class 3 fires everywhere, but the image-level labels say it is absent
    return images, cams, torch.tensor([[1, 1, 0]]), truth


def test_the_dense_crf_snaps_pseudo_labels_to_the_image_and_keeps_absent_classes_out():
    images, cams, cls, truth = _edge_case()
    cfg = validate_config({})["refine"]
    cfg.update(par=False, affinity=False, mask_voting=False, uncertain_band=False, bkg_thre=0.2)
    plain = Refiner(cfg, True, 4)(images, cams, cls)
    assert (plain == truth).float().mean() < 0.9  # the edge of the CAMs, about 4 columns off
    cfg["crf"] = {**cfg["crf"], "enabled": True}
    snapped = Refiner(cfg, True, 4)(images, cams, cls)
    assert torch.equal(snapped, truth)
    # the same with PAR before the CRF, and with the uncertain band: absent class 3 never appears
    for par, band in ((True, False), (False, True), (True, True)):
        label = Refiner({**cfg, "par": par, "uncertain_band": band}, True, 4)(images, cams, cls)
        assert (label == truth).float().mean() > 0.95 and not (label == 3).any()


def test_the_dense_crf_of_pseudo_labels_is_the_predict_crf_of_the_published_softmax():
    images, cams, cls, _ = _edge_case()
    cfg = validate_config({})["refine"]
    cfg.update(par=False, affinity=False, mask_voting=False, uncertain_band=False, bkg_thre=0.3)
    cfg["crf"] = {**cfg["crf"], "enabled": True, "iterations": 3}
    valid = torch.ones(1, 32, 32, dtype=torch.bool)
    valid[..., :12] = False  # nodata on the left, where the CAMs say class 1
    cam = (
        F.interpolate(cams, size=(32, 32), mode="bilinear", align_corners=False)
        * torch.tensor([1.0, 1, 0])[:, None, None]
    )
    maps = torch.cat([torch.full_like(cam[:, :1], 0.3), cam], 1)
    probs = torch.softmax(maps.masked_fill(torch.tensor([1, 1, 1, 0]).bool()[None, :, None, None] == 0, -1e9), 1)
    expected = dense_crf(images, probs, cfg["crf"], valid)[:, :3].argmax(1)
    assert torch.equal(Refiner(cfg, True, 4)(images, cams, cls, valid=valid), expected)
    # nodata pixels send no messages: painting them in the colour of class 2 changes nothing where there is
    # data, while without ``valid`` the same paint moves labels
    painted = images.clone()
    painted[..., :12] = 200
    assert torch.equal(Refiner(cfg, True, 4)(painted, cams, cls, valid=valid)[valid], expected[valid])
    assert not torch.equal(
        Refiner(cfg, True, 4)(painted, cams, cls)[valid], Refiner(cfg, True, 4)(images, cams, cls)[valid]
    )


def _broad_class_case():
    """Two val tiles of 16 px: class 1 on the left half, class 2 on the right; class 2's CAM is broad (0.8 on
    the left too), class 1's peaks at 0.7 on its half. At gains of 1 class 2 takes every pixel."""
    cams = torch.zeros(2, 2, 16, 16)
    cams[:, 0, :, :8] = 0.7
    cams[:, 1] = 0.8
    cams[:, 1, :, 8:] = 1.0
    truth = np.ones((2, 16, 16), np.uint8)
    truth[..., 8:] = 2
    images = torch.zeros(2, 3, 16, 16, dtype=torch.uint8)
    batch = (images, torch.ones(2, 2), cams, None, None, torch.ones(2, 16, 16, dtype=torch.bool))
    return batch, truth


def test_class_gains_chosen_on_val_let_a_faint_class_win_its_pixels():
    from atsg.refine.calibrate import choose_thresholds

    batch, truth = _broad_class_case()
    cfg = validate_config({"refine": {"class_gains": "val", "par": False, "mask_voting": False}})["refine"]
    cfg.update(bkg_thre=0.05, uncertain_band=False)
    chosen = choose_thresholds(cfg, ["clutter", "a", "b"], True, [(batch, truth)])
    gains = chosen["values"]["class_gains"]
    assert len(gains) == 2 and gains[1] / gains[0] < 0.7 / 0.8  # class 2 scaled below class 1 on the left
    scores = chosen["scores"]["class_gains"]
    assert scores["start"] < 0.5 and scores["pass 2"] == pytest.approx(1.0)  # every pixel right with the gains
    assert scores["pseudo_labels"]["chosen gains"] > scores["pseudo_labels"]["gains of 1"]
    # the Refiner applies recorded gains; a wrong number of gains is a config error naming the key
    images, cls, cams = batch[0], batch[1], batch[2]
    plain = Refiner(cfg, True, 3)(images, cams, cls)
    gained = Refiner({**cfg, "class_gains": gains}, True, 3)(images, cams, cls)
    assert (plain.numpy() == 2).all() and np.array_equal(gained.numpy(), truth)
    with pytest.raises(ConfigError, match="refine.class_gains: 3 gains for 2"):
        Refiner({**cfg, "class_gains": [1.0, 1.0, 1.0]}, True, 3)


def test_class_gains_stay_at_one_where_the_val_score_cannot_tell():
    from atsg.refine.calibrate import choose_thresholds

    batch, truth = _broad_class_case()
    cams = batch[2].clone()
    cams[:, 1, :, :8] = 0.0  # class 2 confined to its half: already right at gains of 1
    cfg = validate_config({"refine": {"class_gains": "val", "thresholds": "val", "par": False}})["refine"]
    chosen = choose_thresholds(cfg, ["clutter", "a", "b"], True, [((*batch[:2], cams, *batch[3:]), truth)])
    assert chosen["values"]["class_gains"] is None and "pseudo_labels" not in chosen["scores"]["class_gains"]
    assert set(chosen["scores"]["band"]) == {f"{lo},{hi}" for lo, hi in cfg["band_candidates"]}


def test_class_gains_that_help_the_cam_labels_but_not_the_pseudo_labels_are_dropped():
    from atsg.refine.calibrate import choose_thresholds

    batch, truth = _broad_class_case()
    cfg = validate_config({"refine": {"class_gains": "val", "thresholds": "val", "par": False}})["refine"]
    # a band whose upper threshold ignores class 1's pixels at the gain chosen: the pseudo-labels cannot gain
    cfg.update(bkg_candidates=[0.05], band_candidates=[[0.05, 0.85]], gain_passes=1)
    chosen = choose_thresholds(cfg, ["clutter", "a", "b"], True, [(batch, truth)])
    scores = chosen["scores"]["class_gains"]
    assert scores["pass 1"] == pytest.approx(1.0) and scores["start"] < 0.5  # CAM labels all right with gains
    assert scores["pseudo_labels"]["chosen gains"] == scores["pseudo_labels"]["gains of 1"]
    assert chosen["values"]["class_gains"] is None  # no gain on the pseudo-labels: gains of 1
