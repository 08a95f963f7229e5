"""Segmentation metrics from a confusion matrix: IoU, mIoU, overall accuracy, F1.

The confusion matrix is accumulated with one ``bincount`` per chunk, so label
arrays or whole stores of any size are scored chunk by chunk. Rows are the
ground truth, columns the prediction; pixels whose truth is the ignore index
are not counted.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from ..errors import DataError
from ..store import IGNORE


def confusion_matrix(truth: np.ndarray, pred: np.ndarray, n_classes: int, ignore_index: int = IGNORE) -> np.ndarray:
    """(n_classes, n_classes) int64 counts; truth == ignore_index is skipped.

    A prediction outside 0..n_classes-1 (e.g. an ignored pseudo-label pixel)
    counts as wrong for its true class: it is spread into no column, so it
    lowers recall and IoU of that class but no other class's precision.
    """
    truth = np.asarray(truth)
    pred = np.asarray(pred)
    if truth.shape != pred.shape:
        raise DataError(f"truth {truth.shape} and prediction {pred.shape} differ in shape")
    valid = truth != ignore_index
    t = truth[valid].astype(np.int64)
    if t.size and (t.min() < 0 or t.max() >= n_classes):
        raise DataError(f"truth holds class {int(t.max())} but only {n_classes} classes are configured")
    p = pred[valid].astype(np.int64)
    p = np.where((p < 0) | (p >= n_classes), n_classes, p)  # an extra column for 'no valid prediction'
    cm = np.bincount(t * (n_classes + 1) + p, minlength=n_classes * (n_classes + 1))
    return cm.reshape(n_classes, n_classes + 1)[:, :n_classes].copy()


@dataclass
class Scores:
    """Scores of one confusion matrix (with the per-class truth totals that include invalid predictions)."""

    confusion: np.ndarray
    support: np.ndarray  # labelled pixels per true class
    classes: Sequence[str]

    @property
    def tp(self) -> np.ndarray:
        return np.diag(self.confusion).astype(np.float64)

    @property
    def iou(self) -> np.ndarray:
        """Per-class IoU; NaN for a class absent from both truth and prediction."""
        fp = self.confusion.sum(0) - np.diag(self.confusion)
        fn = self.support - np.diag(self.confusion)
        denom = self.tp + fp + fn
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(denom > 0, self.tp / denom, np.nan)

    @property
    def f1(self) -> np.ndarray:
        fp = self.confusion.sum(0) - np.diag(self.confusion)
        fn = self.support - np.diag(self.confusion)
        denom = 2 * self.tp + fp + fn
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(denom > 0, 2 * self.tp / denom, np.nan)

    @property
    def present(self) -> np.ndarray:
        """Classes that occur in the ground truth: the ones mIoU averages over."""
        return self.support > 0

    def mean_over_present(self, values: np.ndarray, exclude: Iterable[int] = ()) -> float:
        mask = self.present.copy()
        for c in exclude:
            mask[c] = False
        return float(np.nanmean(values[mask])) if mask.any() else float("nan")

    def miou(self, exclude: Iterable[int] = ()) -> float:
        return self.mean_over_present(self.iou, exclude)

    def mean_f1(self, exclude: Iterable[int] = ()) -> float:
        return self.mean_over_present(self.f1, exclude)

    @property
    def oa(self) -> float:
        total = self.support.sum()
        return float(self.tp.sum() / total) if total else float("nan")

    def as_dict(self, exclude: Iterable[int] = ()) -> dict:
        exclude = list(exclude)
        iou = self.iou
        return {
            "miou": self.miou(exclude),
            "oa": self.oa,
            "mean_f1": self.mean_f1(exclude),
            "iou": {c: (None if np.isnan(v) else float(v)) for c, v in zip(self.classes, iou)},
            "pixels": int(self.support.sum()),
        }


class ConfusionAccumulator:
    """Adds chunks of (truth, prediction) pairs into one confusion matrix."""

    def __init__(self, classes: Sequence[str], ignore_index: int = IGNORE):
        self.classes = list(classes)
        self.n = len(self.classes)
        self.ignore_index = ignore_index
        self.confusion = np.zeros((self.n, self.n), np.int64)
        self.support = np.zeros(self.n, np.int64)

    def update(self, truth: np.ndarray, pred: np.ndarray) -> ConfusionAccumulator:
        self.confusion += confusion_matrix(truth, pred, self.n, self.ignore_index)
        valid = np.asarray(truth)
        valid = valid[valid != self.ignore_index]
        self.support += np.bincount(valid.ravel().astype(np.int64), minlength=self.n)[: self.n]
        return self

    def scores(self) -> Scores:
        return Scores(self.confusion.copy(), self.support.copy(), self.classes)


def majority_scores(support: np.ndarray, majority: int, classes: Sequence[str]) -> Scores:
    """The scores of predicting class ``majority`` at every labelled pixel of a split whose per-class truth
    counts are ``support``: the baseline any trained model must beat."""
    confusion = np.zeros((len(classes), len(classes)), np.int64)
    confusion[:, majority] = support
    return Scores(confusion, np.asarray(support, np.int64).copy(), list(classes))
