"""fastnn.preprocessing.sequence.pad_sequences against a plain loop written from Keras' documented semantics."""

import itertools

import numpy as np
import pytest

import fastnn
from fastnn.preprocessing.sequence import pad_sequences

MODES = list(itertools.product(["pre", "post"], ["pre", "post"]))  # (padding, truncating)


def reference_pad(sequences, maxlen=None, dtype="int32", padding="pre", truncating="pre", value=0.0):
    """One output cell at a time: keep the last (truncating='pre') or first maxlen steps, then
    put the fill value before (padding='pre') or after them."""
    seqs = [list(s) for s in sequences]
    if maxlen is None:
        maxlen = max([len(s) for s in seqs] + [0])
    sample_shape = ()
    for s in seqs:
        if len(s):
            sample_shape = np.shape(s[0])
            break
    out = np.empty((len(seqs), maxlen) + sample_shape, dtype)
    for i, s in enumerate(seqs):
        if len(s) > maxlen:
            kept = s[len(s) - maxlen:] if truncating == "pre" else s[:maxlen]
        else:
            kept = s
        fill = [value] * (maxlen - len(kept))
        row = fill + kept if padding == "pre" else kept + fill
        for t in range(maxlen):
            out[i, t] = row[t]
    return out


def random_ragged(rng, n, max_len, sample_shape=(), as_arrays=False, integers=True):
    seqs = []
    for _ in range(n):
        length = int(rng.integers(0, max_len + 1))
        if integers:
            data = rng.integers(1, 100, (length,) + sample_shape)
        else:
            data = rng.normal(0, 3, (length,) + sample_shape)
        seqs.append(data if as_arrays else data.tolist())
    return seqs


def check(seqs, **kwargs):
    got = pad_sequences(seqs, **kwargs)
    want = reference_pad(seqs, **kwargs)
    assert got.shape == want.shape
    assert got.dtype == want.dtype
    np.testing.assert_array_equal(got, want)
    return got


# ---- Keras' documented examples ----------------------------------------------------------------------------
def test_keras_docstring_examples():
    seq = [[1], [2, 3], [4, 5, 6]]
    out = pad_sequences(seq)
    np.testing.assert_array_equal(out, [[0, 0, 1], [0, 2, 3], [4, 5, 6]])
    assert out.dtype == np.int32
    np.testing.assert_array_equal(pad_sequences(seq, value=-1), [[-1, -1, 1], [-1, 2, 3], [4, 5, 6]])
    np.testing.assert_array_equal(pad_sequences(seq, padding="post"), [[1, 0, 0], [2, 3, 0], [4, 5, 6]])
    np.testing.assert_array_equal(pad_sequences(seq, maxlen=2), [[0, 1], [2, 3], [5, 6]])
    np.testing.assert_array_equal(pad_sequences(seq, maxlen=2, truncating="post"), [[0, 1], [2, 3], [4, 5]])


# ---- against the reference ---------------------------------------------------------------------------------
@pytest.mark.parametrize("padding,truncating", MODES)
@pytest.mark.parametrize("maxlen", [None, 0, 1, 3, 7, 12])
def test_random_ragged_lists(rng, padding, truncating, maxlen):
    for n in (1, 2, 5, 9):
        seqs = random_ragged(rng, n, max_len=8)
        check(seqs, maxlen=maxlen, padding=padding, truncating=truncating)


@pytest.mark.parametrize("padding,truncating", MODES)
def test_empty_sequences_are_all_fill(padding, truncating):
    out = check([[], [1, 2], [], [3]], padding=padding, truncating=truncating, value=9)
    np.testing.assert_array_equal(out[0], [9, 9])
    np.testing.assert_array_equal(out[2], [9, 9])
    out = check([[], []], maxlen=3, padding=padding, truncating=truncating, value=-4)
    np.testing.assert_array_equal(out, np.full((2, 3), -4))
    assert pad_sequences([[], []]).shape == (2, 0)


def test_no_sequences():
    # Keras' own np.max(lengths) fails on an empty list; fastnn returns an empty batch.
    assert pad_sequences([]).shape == (0, 0)
    assert pad_sequences([], maxlen=4).shape == (0, 4)
    assert pad_sequences([], maxlen=4, dtype="float32").dtype == np.float32


def test_maxlen_zero_gives_no_steps():
    for padding, truncating in MODES:
        out = pad_sequences([[1, 2], [3]], maxlen=0, padding=padding, truncating=truncating)
        assert out.shape == (2, 0)
    out = pad_sequences([np.ones((3, 2)), np.ones((1, 2))], maxlen=0)
    assert out.shape == (2, 0, 2)


@pytest.mark.parametrize("padding,truncating", MODES)
@pytest.mark.parametrize("dtype,value", [("float32", 0.0), ("float64", -1.5), (np.float32, np.nan),
                                         ("int64", 7), ("int32", 2.9), ("int8", -3), ("uint8", 255),
                                         (np.float16, 0.25), ("bool", 0)])
def test_dtypes_and_fill_values(rng, padding, truncating, dtype, value):
    seqs = random_ragged(rng, 6, max_len=6, integers=False)
    if np.dtype(dtype).kind in "ub":
        seqs = [[abs(v) for v in s] for s in seqs]
    for maxlen in (None, 2, 9):
        out = check(seqs, maxlen=maxlen, dtype=dtype, padding=padding, truncating=truncating, value=value)
        assert out.dtype == np.dtype(dtype)


def test_floats_into_an_integer_dtype_truncate_toward_zero():
    out = pad_sequences([[1.9, -1.9, 2.5]], maxlen=4)
    np.testing.assert_array_equal(out, [[0, 1, -1, 2]])
    np.testing.assert_array_equal(pad_sequences([[1.0]], maxlen=2, value=0.7), [[0, 1]])  # value cast too


def test_default_float_value_keeps_float_dtype_when_asked():
    out = pad_sequences([[0.5, 1.5], [2.5]], dtype="float32", padding="post", value=-0.5)
    np.testing.assert_array_equal(out, np.array([[0.5, 1.5], [2.5, -0.5]], np.float32))


@pytest.mark.parametrize("padding,truncating", MODES)
@pytest.mark.parametrize("sample_shape", [(2,), (3, 2), (1,)])
def test_trailing_sample_shapes(rng, padding, truncating, sample_shape):
    for as_arrays in (False, True):
        seqs = random_ragged(rng, 5, max_len=5, sample_shape=sample_shape, as_arrays=as_arrays, integers=False)
        seqs[0] = np.zeros((0,) + sample_shape) if as_arrays else []  # an empty one first
        for maxlen in (None, 1, 3, 8):
            out = check(seqs, maxlen=maxlen, dtype="float64", padding=padding, truncating=truncating, value=-2.0)
            assert out.shape[2:] == sample_shape


def test_sample_shape_with_array_fill_value_broadcasts():
    seqs = [np.ones((1, 2)), np.ones((3, 2))]
    out = pad_sequences(seqs, dtype="float32", value=np.array([5.0, 6.0]))
    np.testing.assert_array_equal(out[0], [[5, 6], [5, 6], [1, 1]])


@pytest.mark.parametrize("padding,truncating", MODES)
def test_numpy_arrays_and_other_containers(rng, padding, truncating):
    seqs = random_ragged(rng, 7, max_len=6, as_arrays=True)
    want = reference_pad(seqs, maxlen=4, padding=padding, truncating=truncating)
    got = pad_sequences(seqs, maxlen=4, padding=padding, truncating=truncating)
    np.testing.assert_array_equal(got, want)
    as_tuples = [tuple(s.tolist()) for s in seqs]
    np.testing.assert_array_equal(pad_sequences(as_tuples, maxlen=4, padding=padding, truncating=truncating), want)
    as_gen = (s for s in seqs)  # any iterable of sequences
    np.testing.assert_array_equal(pad_sequences(as_gen, maxlen=4, padding=padding, truncating=truncating), want)
    ranges = [range(k) for k in (0, 3, 6)]
    np.testing.assert_array_equal(pad_sequences(ranges, padding=padding, truncating=truncating),
                                  reference_pad(ranges, padding=padding, truncating=truncating))
    # a 2-D array is a batch of equal-length sequences
    block = rng.integers(0, 50, (4, 5))
    np.testing.assert_array_equal(pad_sequences(block, maxlen=3, padding=padding, truncating=truncating),
                                  reference_pad(block, maxlen=3, padding=padding, truncating=truncating))


def test_input_is_not_modified():
    seqs = [np.array([1, 2, 3]), [4, 5]]
    pad_sequences(seqs, maxlen=2, padding="post", truncating="post", value=-1)
    np.testing.assert_array_equal(seqs[0], [1, 2, 3])
    assert seqs[1] == [4, 5]


def test_strings_with_object_dtype():
    out = pad_sequences([["the", "cat"], ["a"]], dtype=object, value="<pad>")
    assert out.dtype == object
    assert out.tolist() == [["the", "cat"], ["<pad>", "a"]]
    out = pad_sequences([["the", "cat"], ["a"]], dtype="U5", value="", padding="post")
    assert out.tolist() == [["the", "cat"], ["a", ""]]


def test_the_namespace():
    assert fastnn.preprocessing.sequence.pad_sequences is pad_sequences
    assert fastnn.preprocessing.pad_sequences is pad_sequences
    assert fastnn.utils.pad_sequences is pad_sequences
    assert "pad_sequences" in fastnn.utils.__all__
    from fastnn.utils import pad_sequences as from_utils
    assert from_utils is pad_sequences


# ---- bad arguments -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["padding", "truncating"])
@pytest.mark.parametrize("bad", ["middle", "Pre", "", None, 0])
def test_bad_padding_or_truncating(name, bad):
    with pytest.raises(ValueError, match=f"'{name}' must be 'pre' or 'post'"):
        pad_sequences([[1, 2]], **{name: bad})
    with pytest.raises(ValueError, match=f"'{name}'"):  # even when no sequence needs it
        pad_sequences([[], []], **{name: bad})


def test_bad_maxlen():
    with pytest.raises(ValueError, match="'maxlen'"):
        pad_sequences([[1, 2]], maxlen=-1)
    for bad in (2.0, "3", True, [2]):
        with pytest.raises(TypeError, match="'maxlen'"):
            pad_sequences([[1, 2]], maxlen=bad)
    np.testing.assert_array_equal(pad_sequences([[1, 2]], maxlen=np.int64(1)), [[2]])  # NumPy ints are fine


def test_sequences_not_an_iterable_of_sequences():
    for bad in (5, None, 3.5):
        with pytest.raises(ValueError, match="'sequences' must be an iterable"):
            pad_sequences(bad)
    with pytest.raises(ValueError, match="single string"):
        pad_sequences("abc")
    with pytest.raises(ValueError, match="position 1 is not iterable"):
        pad_sequences([[1], 2, [3]])
    with pytest.raises(ValueError, match="position 0 is a single string"):
        pad_sequences(["hello", ["a"]], dtype=object)
    with pytest.raises(ValueError, match="position 0 is a 0-d array"):
        pad_sequences([np.array(3)])
    with pytest.raises(ValueError, match="'sequences'"):
        pad_sequences(np.arange(4))  # a 1-D array is one sequence, not a list of them


def test_ragged_trailing_shapes():
    with pytest.raises(ValueError, match=r"position 1 have shape \(3,\), expected \(2,\)"):
        pad_sequences([[[1, 2]], [[1, 2, 3]]])
    with pytest.raises(ValueError, match=r"position 2 have shape \(\), expected \(2,\)"):
        pad_sequences([[], [[1, 2], [3, 4]], [5, 6]])
    with pytest.raises(ValueError, match="position 0"):
        pad_sequences([[[1, 2], [3]]])  # ragged inside one sequence


def test_string_value_needs_a_string_or_object_dtype():
    # Keras: "`dtype` int32 is not compatible with `value`'s type"
    with pytest.raises(ValueError, match="'dtype'.*not compatible"):
        pad_sequences([["a"]], value="<pad>")
    with pytest.raises(ValueError, match="'dtype'.*not compatible"):
        pad_sequences([[1.0]], dtype="float32", value="0")


def test_bad_dtype():
    with pytest.raises(TypeError, match="'dtype'"):
        pad_sequences([[1]], dtype="not-a-dtype")
