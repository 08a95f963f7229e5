import numpy as np
import pytest

from atsg.config import validate_config
from atsg.data.labels import LabelDecoder, image_level_labels
from atsg.store import IGNORE

PALETTE = [[255, 0, 0], [255, 255, 255], [0, 0, 255]]


def _decoder(**dataset):
    base = {"classes": ["clutter", "road", "building"], "palette": PALETTE, "band_names": ["R", "G", "B"]}
    return LabelDecoder(validate_config({"dataset": {**base, **dataset}})["dataset"])


def _rgb(colours):
    return np.asarray(colours, np.uint8).transpose(2, 0, 1)


def test_rgb_palette_decodes_exactly():
    raw = _rgb([[[255, 0, 0], [255, 255, 255]], [[0, 0, 255], [255, 0, 0]]])
    labels, unknown = _decoder().decode(raw)
    assert labels.tolist() == [[0, 1], [2, 0]] and labels.dtype == np.uint8
    assert not unknown


def test_unknown_colour_is_counted_and_named():
    raw = _rgb([[[1, 2, 3], [1, 2, 3]], [[0, 0, 255], [9, 9, 9]]])
    dec = _decoder()
    labels, unknown = dec.decode(raw)
    assert labels.tolist() == [[IGNORE, IGNORE], [2, IGNORE]]
    assert unknown == {(1 << 16) | (2 << 8) | 3: 2, (9 << 16) | (9 << 8) | 9: 1}
    msg = dec.unknown_message("lab.tif", unknown)
    assert "lab.tif" in msg and "RGB(1, 2, 3) on 2 px" in msg and "dataset.ignore_colors" in msg


def test_ignore_colours_map_to_no_label():
    labels, unknown = _decoder(ignore_colors=[[0, 0, 0]]).decode(_rgb([[[0, 0, 0], [255, 0, 0]]]))
    assert labels.tolist() == [[IGNORE, 0]] and not unknown


def test_threshold_snaps_noisy_colours():
    raw = _rgb([[[250, 3, 7], [130, 140, 200]]])
    labels, unknown = _decoder(label_threshold=128).decode(raw)
    assert labels.tolist() == [[0, 1]] and not unknown


def test_index_labels_and_out_of_range_values():
    dec = _decoder(label_encoding="index", ignore_values=[255, 9])
    labels, unknown = dec.decode(np.array([[[0, 1, 2], [9, 255, 7]]], np.uint8))
    assert labels.tolist() == [[0, 1, 2], [IGNORE, IGNORE, IGNORE]]
    assert unknown == {7: 1}
    assert "value 7 on 1 px" in dec.unknown_message("x.png", unknown)


def test_image_level_labels_use_min_pixels_and_drop_background():
    labels = np.array([[0, 0, 1, 1], [2, 2, 2, IGNORE]], np.uint8)
    assert image_level_labels(labels, 4, True, 1).tolist() == [1, 1, 0]
    assert image_level_labels(labels, 4, True, 3).tolist() == [0, 1, 0]
    assert image_level_labels(labels, 4, False, 2).tolist() == [1, 1, 1, 0]


def test_duplicate_palette_colour_is_an_error():
    with pytest.raises(Exception, match="share one colour"):
        _decoder(palette=[[1, 1, 1], [1, 1, 1], [0, 0, 255]])
