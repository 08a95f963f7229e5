import numpy as np
import pytest
from oracles import per_mask_maps, segments_to_masks

from atsg.errors import ConfigError
from atsg.masks.maps import object_and_boundary_maps
from atsg.masks.windows import cut, paste, plan_windows


def _rect(shape, y0, y1, x0, x1):
    m = np.zeros(shape, bool)
    m[y0:y1, x0:x1] = True
    return m


def test_smaller_masks_drawn_over_larger_and_tiny_ones_skipped():
    shape = (20, 20)
    big = _rect(shape, 0, 20, 0, 20)  # 400 px
    small = _rect(shape, 5, 15, 5, 15)  # 100 px
    tiny = _rect(shape, 0, 2, 0, 2)  # 4 px < min_area
    objects, boundaries = object_and_boundary_maps([small, tiny, big], shape, min_area=50, max_objects=50)
    assert objects[10, 10] == 2 and objects[2, 18] == 1  # largest gets id 1, the smaller one is on top
    assert objects[0, 0] != 3 and objects.max() == 2
    assert boundaries[5, 10] == 1 and boundaries[10, 10] == 0
    assert objects[boundaries.astype(bool)].max() == 0  # boundary pixels leave the object map
    assert boundaries[1, 0] == 1  # the skipped tiny mask's boundary is in the map (published SAMAug) ...
    _, painted = object_and_boundary_maps([small, tiny, big], shape, 50, 50, painted_only=True)
    assert painted[1, 0] == 0 and painted[5, 10] == 1  # ... unless only painted masks give boundaries


def test_at_most_max_objects_are_painted():
    shape = (10, 60)
    masks = [_rect(shape, 0, 10, 6 * i, 6 * i + 6) for i in range(10)]
    objects, _ = object_and_boundary_maps(masks, shape, min_area=1, max_objects=4)
    assert objects.max() == 4


def test_segments_to_masks():
    seg = np.array([[0, 0, 1], [2, 2, 1]])
    masks = segments_to_masks(seg)
    assert len(masks) == 3 and masks[1].tolist() == [[False, False, True], [False, False, True]]


def test_partition_maps_equal_the_per_mask_construction():
    from atsg.masks.maps import partition_maps

    rng = np.random.default_rng(3)
    seeds = rng.integers(0, 12, (6, 8))
    segments = np.kron(seeds, np.ones((5, 5), int))  # blocky superpixels, some labels repeated apart
    for min_area, max_objects in ((1, 50), (30, 4), (100, 2)):
        for painted in (False, True):
            expected = object_and_boundary_maps(
                segments_to_masks(segments), segments.shape, min_area, max_objects, painted
            )
            got = partition_maps(segments, min_area, max_objects, painted)
            assert np.array_equal(got[0], expected[0]) and np.array_equal(got[1], expected[1])


def _ellipses(n, shape, seed):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    return [
        ((yy - rng.integers(0, shape[0])) / rng.integers(2, 30)) ** 2
        + ((xx - rng.integers(0, shape[1])) / rng.integers(2, 30)) ** 2
        <= 1
        for _ in range(n)
    ]


@pytest.mark.parametrize("painted", [False, True])
@pytest.mark.parametrize("min_area, max_objects", [(50, 50), (1, 400), (0, 3), (10**6, 5)])
def test_vectorised_maps_equal_the_published_per_mask_loop(min_area, max_objects, painted):
    masks = _ellipses(300, (48, 64), seed=min_area)  # overlapping masks, more than 255 of them
    masks += [masks[3].copy(), np.zeros((48, 64), bool)]  # a tie in area and an empty mask
    expected = per_mask_maps(masks, (48, 64), min_area, max_objects, painted)
    for given in (masks, np.stack(masks)):
        got = object_and_boundary_maps(given, (48, 64), min_area, max_objects, painted)
        assert got[0].dtype == np.uint16 and got[1].dtype == np.uint8
        assert np.array_equal(got[0], expected[0]) and np.array_equal(got[1], expected[1])
    assert object_and_boundary_maps([], (4, 5), 1, 5)[0].shape == (4, 5)


def test_windows_hold_whole_tiles_of_one_scene():
    # scene a: 5 x 5 tiles of 64 px (stride 64); scene b: 3 x 3 tiles of 64 px with stride 32
    scenes, windows = [], []
    for r in range(5):
        for c in range(5):
            scenes.append("a")
            windows.append([64 * r, 64 * c, 64, 64])
    for r in range(3):
        for c in range(3):
            scenes.append("b")
            windows.append([32 * r, 32 * c, 64, 64])
    plan = plan_windows(scenes, windows, 256)
    assert sorted(int(t) for w in plan for t in w.tiles) == list(range(34))  # every tile once
    a = [w for w in plan if w.scene == "a"]
    assert [(w.row, w.col, w.height, w.width, len(w.tiles)) for w in a] == [
        (0, 0, 256, 256, 16),
        (0, 256, 256, 64, 4),
        (256, 0, 64, 256, 4),
        (256, 256, 64, 64, 1),
    ]
    b = [w for w in plan if w.scene == "b"]
    assert len(b) == 1 and (b[0].height, b[0].width) == (128, 128)
    with pytest.raises(ConfigError, match="masks.scene_windows"):
        plan_windows(["a"], [[0, 0, 512, 512]], 256)


def test_paste_and_cut_give_back_each_tile():
    rng = np.random.default_rng(0)
    scene = rng.integers(0, 255, (3, 96, 96), dtype=np.uint8)
    starts = [(r, c) for r in (0, 32, 64) for c in (0, 32, 64)]  # overlapping tiles of 32 px, stride 32
    tiles = np.stack([scene[:, r : r + 32, c : c + 32] for r, c in starts])
    (window,) = plan_windows(["s"] * 9, [[r, c, 32, 32] for r, c in starts], 96)
    canvas = paste(window, tiles)
    assert np.array_equal(canvas, scene)
    masks = np.stack([canvas[0] > 128, canvas[1] > 250, np.zeros((96, 96), bool)])
    part = cut(masks, window.offsets[4], (32, 32))
    assert part.shape[1:] == (32, 32) and len(part) <= 2  # the empty mask is dropped
    assert np.array_equal(part[0], tiles[4][0] > 128)
