import numpy as np

from atsg.masks.maps import object_and_boundary_maps, segments_to_masks


def _rect(shape, y0, y1, x0, x1):
    m = np.zeros(shape, bool)
    m[y0:y1, x0:x1] = True
    return m


def test_smaller_masks_drawn_over_larger_and_tiny_ones_skipped():
    shape = (20, 20)
    big = _rect(shape, 0, 20, 0, 20)      # 400 px
    small = _rect(shape, 5, 15, 5, 15)    # 100 px
    tiny = _rect(shape, 0, 2, 0, 2)       # 4 px < min_area
    objects, boundaries = object_and_boundary_maps([small, tiny, big], shape, min_area=50, max_objects=50)
    assert objects[10, 10] == 2 and objects[2, 18] == 1  # largest gets id 1, the smaller one is on top
    assert objects[0, 0] != 3 and objects.max() == 2
    assert boundaries[5, 10] == 1 and boundaries[10, 10] == 0
    assert objects[boundaries.astype(bool)].max() == 0  # boundary pixels leave the object map


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
        expected = object_and_boundary_maps(segments_to_masks(segments), segments.shape, min_area, max_objects)
        got = partition_maps(segments, min_area, max_objects)
        assert np.array_equal(got[0], expected[0]) and np.array_equal(got[1], expected[1])
