"""The lossless wavelet codec of tiles.zarr: exact round trips, zarr integration, errors."""

import subprocess
import sys

import numpy as np
import pytest
import zarr

from atsg.config import validate_config
from atsg.data.synthetic.scene import generate_scene
from atsg.imagecodec import NAME, Wavelet53Codec, decode_array, encode_array, max_levels
from atsg.store import TileReader, create_tile_store, image_serializer


@pytest.mark.parametrize("seed", range(6))
def test_round_trip_is_exact_for_any_pixels(seed):
    rng = np.random.default_rng(seed)
    bands = int(rng.integers(1, 5))
    shape = (1, bands, 16 * int(rng.integers(1, 5)), 16 * int(rng.integers(1, 5)))
    kinds = [
        rng.integers(0, 256, shape, dtype=np.uint8),  # noise
        np.where(rng.random(shape) < 0.5, 0, 255).astype(np.uint8),  # extreme jumps
        np.full(shape, 255, np.uint8),
        np.zeros(shape, np.uint8),
    ]
    for pixels in kinds:
        for levels in range(5):
            for reference in [None] + list(range(bands)):
                data = encode_array(pixels, levels, reference)
                assert np.array_equal(decode_array(data, shape, levels, reference), pixels)


def test_checkerboard_overflowing_int16_still_round_trips():
    # alternating 0/255 in every band, opposite phase between bands, at the deepest levels
    y, x = np.indices((64, 64))
    board = ((y + x) % 2 * 255).astype(np.uint8)
    pixels = np.stack([board, 255 - board, board])[None]
    for levels in range(7):
        assert np.array_equal(decode_array(encode_array(pixels, levels, 1), pixels.shape, levels, 1), pixels)


def test_max_levels():
    assert max_levels(256, 256, 4) == 4
    assert max_levels(96, 256, 8) == 5
    assert max_levels(100, 100, 4) == 2
    assert max_levels(255, 256, 4) == 0


def _scene_tiles(n_side=2, tile=128):
    image, _ = generate_scene(
        n_side * tile, np.random.default_rng(3), validate_config({})["synthetic"]["block_weights"]
    )
    image = np.moveaxis(image, -1, 0)
    return np.stack(
        [
            image[:, r : r + tile, c : c + tile]
            for r in range(0, n_side * tile, tile)
            for c in range(0, n_side * tile, tile)
        ]
    )


def _store_bytes(path) -> int:
    return sum(f.stat().st_size for f in (path / "images").rglob("*") if f.is_file())


def test_tile_store_reads_back_the_pixels_and_is_smaller_than_raw_zstd(tmp_path):
    tiles = _scene_tiles()
    for codec in ("wavelet", "zstd"):
        g = create_tile_store(
            tmp_path / f"{codec}.zarr", len(tiles), 3, 128, 5, 1, image_serializer(128, 3, codec, 4, 1)
        )
        g["images"][:] = tiles
        back = zarr.open_group(str(tmp_path / f"{codec}.zarr"), mode="r")["images"][:]
        assert np.array_equal(back, tiles)
    assert _store_bytes(tmp_path / "wavelet.zarr") < 0.9 * _store_bytes(tmp_path / "zstd.zarr")
    meta = zarr.open_group(str(tmp_path / "wavelet.zarr"), mode="r")["images"].metadata.to_dict()
    assert meta["codecs"][0] == {"name": NAME, "configuration": {"levels": 4, "reference_band": 1}}


def test_plain_zarr_reads_the_store_through_the_entry_point(tmp_path):
    tiles = _scene_tiles(1)
    g = create_tile_store(tmp_path / "t.zarr", len(tiles), 3, 128, 5, 1, image_serializer(128, 3, "wavelet", 4, 1))
    g["images"][:] = tiles
    np.save(tmp_path / "expected.npy", tiles)
    # no atsg import here: zarr finds the codec by its entry point
    code = (
        "import sys, numpy as np, zarr; a = zarr.open_group(sys.argv[1], mode='r')['images'][:]; "
        "print(np.array_equal(a, np.load(sys.argv[2])))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path / "t.zarr"), str(tmp_path / "expected.npy")],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert out.strip() == "True"


def test_bad_arrays_are_refused(tmp_path):
    g = zarr.open_group(str(tmp_path / "x.zarr"), mode="w")
    with pytest.raises(ValueError, match="uint8"):
        g.create_array(
            "a", shape=(2, 3, 64, 64), chunks=(1, 3, 64, 64), dtype="uint16", serializer=Wavelet53Codec(levels=2)
        )
    with pytest.raises(ValueError, match="halve"):
        g.create_array(
            "b", shape=(2, 3, 60, 60), chunks=(1, 3, 60, 60), dtype="uint8", serializer=Wavelet53Codec(levels=3)
        )
    with pytest.raises(ValueError, match="reference band"):
        g.create_array(
            "c",
            shape=(2, 3, 64, 64),
            chunks=(1, 3, 64, 64),
            dtype="uint8",
            serializer=Wavelet53Codec(levels=2, reference_band=3),
        )
    with pytest.raises(ValueError, match="format"):
        decode_array(b"\x09" + bytes(8), (1, 1, 2, 2), 0, None)


@pytest.mark.parametrize("codec", ["wavelet", "zstd"])
def test_tile_reader_equals_zarr_indexing(tmp_path, codec):
    tiles = _scene_tiles()
    g = create_tile_store(tmp_path / "t.zarr", len(tiles) + 1, 3, 128, 5, 1, image_serializer(128, 3, codec, 4, 1))
    g["images"][: len(tiles)] = tiles  # the last tile is never written: fill value
    g["labels"][0] = np.arange(128 * 128, dtype=np.uint32).reshape(128, 128) % 7
    store = zarr.open_group(str(tmp_path / "t.zarr"), mode="r")
    for name in ("images", "labels"):
        reader = TileReader(store[name])
        assert reader.fast
        for i in [*range(len(tiles) + 1), -1]:
            tile = reader[i]
            assert np.array_equal(tile, store[name][i]) and tile.flags.writeable
        with pytest.raises(IndexError):
            reader[len(tiles) + 1]
    memory = zarr.open_group(zarr.storage.MemoryStore(), mode="w")
    memory.create_array("a", data=tiles, chunks=(1, 3, 128, 128))
    slow = TileReader(memory["a"])  # not a local store: zarr's own path
    assert not slow.fast and np.array_equal(slow[2], tiles[2])


@pytest.mark.parametrize("endian", ["little", "big"])
def test_tile_reader_decodes_multibyte_arrays_of_either_byte_order(tmp_path, endian):
    """Tile reads decode zarr's bytes codec themselves: the element size and byte order come from the metadata."""
    rng = np.random.default_rng(3)
    data = rng.normal(size=(4, 2, 8, 8)).astype(np.float16)
    g = zarr.open_group(str(tmp_path / "m.zarr"), mode="w")
    for dtype in ("float16", "uint16", "float32"):
        a = g.create_array(
            dtype,
            shape=data.shape,
            chunks=(1, 2, 8, 8),
            dtype=dtype,
            serializer=zarr.codecs.BytesCodec(endian=endian),
            compressors=zarr.codecs.ZstdCodec(level=3, checksum=True),
        )
        a[:] = (data * 100).astype(dtype)
        reader = TileReader(zarr.open_group(str(tmp_path / "m.zarr"), mode="r")[dtype])
        assert reader.fast
        assert np.array_equal(reader.read([0, 1, 2, 3]), a[:]) and reader[1].dtype == np.dtype(dtype)
    gz = g.create_array(
        "gz", shape=data.shape, chunks=(1, 2, 8, 8), dtype="float16", compressors=zarr.codecs.GzipCodec()
    )
    gz[:] = data
    reader = TileReader(gz)  # a codec the reader does not decode itself: zarr's own path
    assert not reader.fast and np.array_equal(reader[2], data[2])
