"""beam_jobs.planning.arrays: the same values as pyarrow's own conversions, without
importing pandas."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pyarrow as pa
import pytest

from beam_jobs.planning.arrays import from_numpy, to_numpy

NUMBER_TYPES = [
    pa.int8(),
    pa.int16(),
    pa.int32(),
    pa.int64(),
    pa.uint8(),
    pa.uint16(),
    pa.uint32(),
    pa.uint64(),
    pa.float32(),
    pa.float64(),
]


@pytest.mark.parametrize("type_", NUMBER_TYPES, ids=str)
def test_to_numpy_matches_pyarrows_own_conversion(type_):
    values = pa.array(np.arange(-3, 40) % 100, type=type_)
    chunked = pa.chunked_array([values.slice(0, 5), values.slice(5, 7), values.slice(12)])
    for arr in (values, values.slice(3, 20), chunked, chunked.slice(4, 30)):
        got = to_numpy(arr)
        want = arr.to_numpy()
        assert got.dtype == want.dtype
        assert np.array_equal(got, want)


def test_to_numpy_of_empty_columns():
    assert to_numpy(pa.array([], pa.int64())).tolist() == []
    assert to_numpy(pa.chunked_array([], pa.uint32())).dtype == np.uint32
    assert to_numpy(pa.chunked_array([pa.array([], pa.int32())])).tolist() == []


def test_to_numpy_refuses_nulls_and_other_types():
    with pytest.raises(ValueError, match="1 null"):
        to_numpy(pa.array([1, None, 3], pa.int64()))
    with pytest.raises(TypeError, match="string"):
        to_numpy(pa.array(["a"]))
    with pytest.raises(TypeError, match="bool"):
        to_numpy(pa.array([True]))


@pytest.mark.parametrize("type_", NUMBER_TYPES, ids=str)
def test_from_numpy_matches_pa_array(type_):
    values = np.array([0, 1, 7, 99, 100])
    assert from_numpy(values, type_).equals(pa.array(values, type_))
    view = np.arange(10, dtype=np.int64)[::3]  # not contiguous
    assert from_numpy(view, type_).to_pylist() == [0, 3, 6, 9]


def test_from_numpy_refuses_values_that_do_not_fit():
    with pytest.raises(OverflowError, match="int8"):
        from_numpy(np.array([1, 300]), pa.int8())
    with pytest.raises(OverflowError, match="uint32"):
        from_numpy(np.array([-1]), pa.uint32())
    with pytest.raises(ValueError, match="one-dimensional"):
        from_numpy(np.zeros((2, 2), np.int64), pa.int64())
    nan = from_numpy(np.array([np.nan, 1.0]), pa.float32())
    assert np.isnan(nan.to_pylist()[0])


def test_neither_imports_pandas():
    """pyarrow's own conversions do (the reason for this module)."""
    code = (
        "import json, sys, numpy as np, pyarrow as pa\n"
        "from beam_jobs.planning.arrays import from_numpy, to_numpy\n"
        "a = from_numpy(np.arange(5), pa.int32())\n"
        "to_numpy(pa.chunked_array([a, a]))\n"
        "ours = 'pandas' in sys.modules\n"
        "a.to_numpy()\n"
        "print(json.dumps([ours, 'pandas' in sys.modules]))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert json.loads(out.strip().splitlines()[-1]) == [False, True]
