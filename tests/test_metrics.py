"""Metrics as evaluation computes them (ConfusionAccumulator, tile by tile) on hand-computed cases and against
an independent per-pixel count (tests/oracles.py)."""

import numpy as np
import pytest
import zarr
from oracles import iou_by_class

from atsg.scoring.metrics import ConfusionAccumulator, confusion_matrix
from atsg.store import IGNORE

CLASSES = ["bg", "a", "b"]


def score_arrays(truth, pred, classes):
    return ConfusionAccumulator(classes).update(truth, pred).scores()


def test_confusion_matrix_hand_case():
    truth = np.array([0, 0, 1, 1, 2, IGNORE])
    pred = np.array([0, 1, 1, 1, 0, 2])
    cm = confusion_matrix(truth, pred, 3)
    assert cm.tolist() == [[1, 1, 0], [0, 2, 0], [1, 0, 0]]


def test_scores_hand_case():
    truth = np.array([[0, 0, 1, 1], [2, 2, 2, IGNORE]])
    pred = np.array([[0, 1, 1, 1], [2, 2, 0, 2]])
    s = score_arrays(truth, pred, CLASSES)
    # bg: tp1 fp1 fn1 -> 1/3 ; a: tp2 fp1 fn0 -> 2/3 ; b: tp2 fp0 fn1 -> 2/3
    assert s.iou == pytest.approx([1 / 3, 2 / 3, 2 / 3])
    assert s.miou() == pytest.approx(5 / 9)
    assert s.oa == pytest.approx(5 / 7)
    assert s.f1 == pytest.approx([0.5, 0.8, 0.8])
    assert s.mean_f1() == pytest.approx(0.7)
    assert s.miou(exclude=[0]) == pytest.approx(2 / 3)


def test_miou_averages_only_classes_present_in_truth():
    truth = np.array([0, 0, 1, 1])
    pred = np.array([0, 0, 1, 2])  # class 2 predicted but absent from the truth
    s = score_arrays(truth, pred, CLASSES)
    assert s.present.tolist() == [True, True, False]
    assert s.iou[2] == 0.0
    assert s.miou() == pytest.approx((1.0 + 0.5) / 2)
    assert s.as_dict()["iou"]["b"] == 0.0


def test_invalid_predictions_count_against_their_true_class():
    truth = np.array([0, 1, 1])
    pred = np.array([0, IGNORE, 1])
    s = score_arrays(truth, pred, CLASSES)
    assert s.iou[:2] == pytest.approx([1.0, 0.5])
    assert s.oa == pytest.approx(2 / 3)


def test_tile_by_tile_accumulation_equals_a_per_pixel_count():
    rng = np.random.default_rng(0)
    truth = rng.integers(0, 3, size=(10, 8, 8)).astype(np.uint8)
    truth[2, :2] = IGNORE
    pred = rng.integers(0, 4, size=(10, 8, 8)).astype(np.uint8)  # 3: no valid prediction
    pred[5] = 1  # class 2 never predicted in one tile, class b absent from another's truth
    truth[7][truth[7] == 2] = 0
    acc = ConfusionAccumulator(CLASSES)
    for t, p in zip(truth, pred):
        acc.update(t, p)
    assert acc.scores().iou == pytest.approx(iou_by_class(truth, pred, 3))
    assert acc.scores().support.sum() == (truth != IGNORE).sum()


def test_shape_mismatch_and_unknown_truth_class_are_errors():
    with pytest.raises(Exception, match="differ in shape"):
        confusion_matrix(np.zeros(3), np.zeros(4), 3)
    with pytest.raises(Exception, match="holds class 5"):
        confusion_matrix(np.array([5]), np.array([0]), 3)


def test_cam_labels_with_and_without_the_image_level_labels_hand_case():
    """The report's CAM row keeps each tile's labelled classes; its every-class row lets every class win, as a
    model that never sees image-level labels must."""
    from types import SimpleNamespace

    from atsg.stages.evaluate import cam_labels

    cam = np.zeros((1, 2, 2, 2), np.float32)
    cam[0, 0] = 0.3  # class 1 (impervious) everywhere, weak
    cam[0, 1, 0, 0] = 0.9  # class 2 strong at one pixel, but the tile is labelled with class 1 only
    cam[0, 0, 1, 1] = 0.02  # under the background threshold
    store = zarr.create_array(store={}, shape=cam.shape, chunks=cam.shape, dtype="float32")
    store[:] = cam
    cls = zarr.create_array(store={}, shape=(1, 2), chunks=(1, 2), dtype="uint8")
    cls[:] = [[1, 0]]
    tiles = SimpleNamespace(group={"cls_labels": cls}, size=(2, 2), background=True)
    r = {"bkg_thre": 0.05, "cam_aux_weight": 0.0}
    labelled, score = cam_labels({"cams": store}, tiles, np.array([0]), r)
    assert labelled.tolist() == [[[1, 1], [1, 0]]] and score[0, 0, 0] == np.float32(0.3)
    every, score = cam_labels({"cams": store}, tiles, np.array([0]), r, image_labels=False)
    assert every.tolist() == [[[2, 1], [1, 0]]] and score[0, 0, 0] == np.float32(0.9)
