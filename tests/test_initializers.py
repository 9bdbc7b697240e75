"""fastnn.initializers against Keras 3's formulas (keras/src/initializers/*.py).

Distribution checks use 240 000 to 1 000 000 draws and tolerances of at least ten standard
errors of the estimate, so they cannot realistically fail by chance; bounds are exact.
"""

import math

import numpy as np
import pytest

import fastnn
from fastnn import initializers as I

DTYPES = [np.float32, np.float64]
TRUNC = 0.87962566103423978  # stddev of a unit normal truncated to [-2, 2]


def fans(shape):
    """Keras' compute_fans, written out."""
    if len(shape) == 0:
        return 1, 1
    if len(shape) == 1:
        return shape[0], shape[0]
    if len(shape) == 2:
        return shape[0], shape[1]
    rf = 1
    for d in shape[:-2]:
        rf *= d
    return shape[-2] * rf, shape[-1] * rf


def fan_for(shape, mode):
    fi, fo = fans(shape)
    return {"fan_in": fi, "fan_out": fo, "fan_avg": (fi + fo) / 2}[mode]


# ---- names, classes, defaults --------------------------------------------------------------------
NAMES = {
    "zeros": I.Zeros, "ones": I.Ones, "constant": I.Constant, "random_normal": I.RandomNormal,
    "random_uniform": I.RandomUniform, "truncated_normal": I.TruncatedNormal,
    "variance_scaling": I.VarianceScaling, "glorot_uniform": I.GlorotUniform, "glorot_normal": I.GlorotNormal,
    "he_uniform": I.HeUniform, "he_normal": I.HeNormal, "lecun_uniform": I.LecunUniform,
    "lecun_normal": I.LecunNormal, "orthogonal": I.Orthogonal,
}


@pytest.mark.parametrize("name", list(NAMES))
def test_get_by_name_and_class(name):
    assert type(I.get(name)) is NAMES[name]
    assert type(I.get(name.upper())) is NAMES[name]
    assert type(I.get(NAMES[name])) is NAMES[name]
    inst = NAMES[name]()
    assert I.get(inst) is inst
    clone = I.get(I.serialize(inst))
    assert type(clone) is NAMES[name] and clone.get_config() == inst.get_config()


def test_get_passes_callables_and_rejects_the_rest():
    fn = lambda shape, dtype=None: np.full(shape, 7.0)  # noqa: E731
    assert I.get(fn) is fn
    with pytest.raises(ValueError, match="no_such_init"):
        I.get("no_such_init")
    with pytest.raises(TypeError):
        I.get(3.5)


def test_keras_defaults():
    assert (I.RandomNormal().mean, I.RandomNormal().stddev) == (0.0, 0.05)
    assert (I.RandomUniform().minval, I.RandomUniform().maxval) == (-0.05, 0.05)
    assert (I.TruncatedNormal().mean, I.TruncatedNormal().stddev) == (0.0, 0.05)
    vs = I.VarianceScaling()
    assert (vs.scale, vs.mode, vs.distribution) == (1.0, "fan_in", "truncated_normal")
    assert I.Orthogonal().gain == 1.0
    assert I.Constant().value == 0.0
    expected = {I.GlorotUniform: (1.0, "fan_avg", "uniform"), I.GlorotNormal: (1.0, "fan_avg", "truncated_normal"),
                I.HeUniform: (2.0, "fan_in", "uniform"), I.HeNormal: (2.0, "fan_in", "truncated_normal"),
                I.LecunUniform: (1.0, "fan_in", "uniform"), I.LecunNormal: (1.0, "fan_in", "truncated_normal")}
    for cls, (scale, mode, dist) in expected.items():
        init = cls()
        assert (init.scale, init.mode, init.distribution) == (scale, mode, dist), cls.__name__


# ---- constant initializers -----------------------------------------------------------------------
@pytest.mark.parametrize("dtype", DTYPES)
def test_zeros_ones_constant(dtype):
    for init, value in ((I.Zeros(), 0.0), (I.get("zeros"), 0.0), (I.Ones(), 1.0), (I.get("ones"), 1.0),
                        (I.Constant(3.25), 3.25), (I.Constant(value=-2), -2.0), (I.get("constant"), 0.0)):
        out = init((3, 4, 2), dtype)
        assert out.shape == (3, 4, 2) and out.dtype == dtype
        assert np.all(out == value)


def test_default_dtype_is_floatx():
    for name in NAMES:
        out = I.get(name)((4, 6))
        assert out.dtype == np.dtype(fastnn.config.floatx()), name


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", list(NAMES))
def test_every_initializer_returns_shape_and_dtype(name, dtype):
    for shape in [(7, 5), (3, 3, 4, 6), (2, 9)]:
        out = I.get(name)(shape, dtype)
        assert out.shape == shape and out.dtype == dtype
        assert np.all(np.isfinite(out))
    if name != "orthogonal":
        assert I.get(name)((5,), dtype).shape == (5,)
    out = I.get(name)((6, 4), np.dtype(dtype).name)  # dtype given by name
    assert out.dtype == dtype


# ---- plain random initializers ------------------------------------------------------------------
N = 1_000_000


def test_random_normal_moments():
    x = I.RandomNormal(mean=0.5, stddev=0.2, seed=1)((1000, 1000), "float64")
    assert abs(x.mean() - 0.5) < 10 * 0.2 / math.sqrt(N)
    assert abs(x.std() / 0.2 - 1) < 0.01
    assert np.mean(np.abs(x - 0.5) > 0.4) > 0.04  # not truncated: ~4.6% beyond 2 stddev
    d = I.get("random_normal")((1000, 1000), "float64")
    assert abs(d.std() / 0.05 - 1) < 0.01 and abs(d.mean()) < 10 * 0.05 / math.sqrt(N)


def test_random_uniform_bounds_and_moments():
    x = I.RandomUniform(minval=-0.3, maxval=0.7, seed=2)((1000, 1000), "float64")
    assert x.min() >= -0.3 and x.max() <= 0.7
    assert x.min() < -0.299 and x.max() > 0.699
    assert abs(x.mean() - 0.2) < 10 * (1 / math.sqrt(12)) / math.sqrt(N)
    assert abs(x.std() / (1 / math.sqrt(12)) - 1) < 0.01
    d = I.get("random_uniform")((1000, 1000), "float64")
    assert d.min() >= -0.05 and d.max() <= 0.05 and d.max() > 0.0499


@pytest.mark.parametrize("dtype", DTYPES)
def test_truncated_normal_within_two_stddev(dtype):
    mean, std = 1.0, 0.3
    x = I.TruncatedNormal(mean=mean, stddev=std, seed=3)((1000, 1000), dtype).astype(np.float64)
    slack = 1e-6 if dtype == np.float32 else 0.0  # float32 rounding of values near the edge
    assert np.all(np.abs(x - mean) <= 2 * std + slack)
    assert np.max(np.abs(x - mean)) > 0.99 * 2 * std
    assert abs(x.mean() - mean) < 10 * std / math.sqrt(N)
    assert abs(x.std() / (std * TRUNC) - 1) < 0.01  # the truncated distribution's stddev
    d = I.get("truncated_normal")((1000, 1000), dtype)
    assert np.all(np.abs(d.astype(np.float64)) <= 0.1 + slack)


# ---- variance scaling family ----------------------------------------------------------------------
FAMILY = [
    ("glorot_uniform", 1.0, "fan_avg", "uniform"),
    ("glorot_normal", 1.0, "fan_avg", "truncated_normal"),
    ("he_uniform", 2.0, "fan_in", "uniform"),
    ("he_normal", 2.0, "fan_in", "truncated_normal"),
    ("lecun_uniform", 1.0, "fan_in", "uniform"),
    ("lecun_normal", 1.0, "fan_in", "truncated_normal"),
]
BIG_SHAPES = [(400, 600), (5, 5, 48, 200), (600, 400)]


def check_variance_scaling(x, shape, scale, mode, distribution):
    x = x.astype(np.float64)
    var = scale / max(1.0, fan_for(shape, mode))
    if distribution == "uniform":
        limit = math.sqrt(3 * var)
        assert np.all(np.abs(x) <= limit)
        assert np.max(np.abs(x)) > 0.999 * limit
        assert abs(x.std() / math.sqrt(var) - 1) < 0.02
    elif distribution == "truncated_normal":
        bound = 2 * math.sqrt(var) / TRUNC
        assert np.all(np.abs(x) <= bound * (1 + 1e-6))
        assert np.max(np.abs(x)) > 0.99 * bound
        # the 0.8796 correction makes the truncated draws' stddev sqrt(scale / fan)
        assert abs(x.std() / math.sqrt(var) - 1) < 0.02
    else:
        assert abs(x.std() / math.sqrt(var) - 1) < 0.02
        assert np.mean(np.abs(x) > 2 * math.sqrt(var)) > 0.04
    assert abs(x.mean()) < 10 * math.sqrt(var) / math.sqrt(x.size)


@pytest.mark.parametrize("shape", BIG_SHAPES, ids=str)
@pytest.mark.parametrize("name,scale,mode,distribution", FAMILY, ids=[f[0] for f in FAMILY])
def test_glorot_he_lecun(name, scale, mode, distribution, shape):
    check_variance_scaling(I.get(name)(shape, "float64"), shape, scale, mode, distribution)


@pytest.mark.parametrize("mode", ["fan_in", "fan_out", "fan_avg"])
@pytest.mark.parametrize("distribution", ["uniform", "truncated_normal", "untruncated_normal", "normal"])
def test_variance_scaling_modes(mode, distribution):
    shape = (300, 900)
    init = I.VarianceScaling(scale=3.0, mode=mode, distribution=distribution, seed=11)
    if distribution == "normal":
        assert init.distribution == "truncated_normal"
    check_variance_scaling(init(shape, "float32"), shape, 3.0, mode,
                           "truncated_normal" if distribution == "normal" else distribution)


def test_uniform_limits_exactly_sqrt_3_scale_over_fan():
    # Small conv kernel (kh, kw, in, out) = (3, 3, 16, 32): fan_in 144, fan_out 288.
    shape = (3, 3, 16, 32)
    for name, limit in [("he_uniform", math.sqrt(6 / 144)), ("lecun_uniform", math.sqrt(3 / 144)),
                        ("glorot_uniform", math.sqrt(6 / (144 + 288)))]:
        x = I.get(name)(shape, "float64")
        assert np.max(np.abs(x)) <= limit
        assert np.max(np.abs(x)) > 0.99 * limit  # 4608 draws: P(miss) < 1e-9


@pytest.mark.parametrize("shape,want", [((), (1, 1)), ((7,), (7, 7)), ((20, 30), (20, 30)),
                                        ((3, 16, 8), (48, 24)), ((3, 3, 16, 32), (144, 288)),
                                        ((2, 3, 4, 5, 6), (120, 144))])
def test_compute_fans(shape, want):
    assert tuple(I.compute_fans(shape)) == want == fans(shape)


def test_fan_mode_matters_for_conv_kernels():
    # (1, 1, 1000, 10): fan_in 1000, fan_out 10 -> very different limits per mode
    shape = (1, 1, 1000, 10)
    lim_in = np.max(np.abs(I.VarianceScaling(mode="fan_in", distribution="uniform")(shape, "float64")))
    lim_out = np.max(np.abs(I.VarianceScaling(mode="fan_out", distribution="uniform")(shape, "float64")))
    assert lim_in <= math.sqrt(3 / 1000) and lim_in > 0.99 * math.sqrt(3 / 1000)
    assert lim_out <= math.sqrt(3 / 10) and lim_out > 0.99 * math.sqrt(3 / 10)


def test_fan_below_one_uses_one():
    # scale / max(1, fan): a (0, 5) kernel has fan_in 0 -> var = scale; nothing to draw, no error
    assert I.HeUniform()((0, 5), "float64").shape == (0, 5)


# ---- orthogonal --------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("gain", [1.0, 2.5])
@pytest.mark.parametrize("shape", [(20, 8), (8, 20), (16, 16), (3, 3, 4, 16), (2, 2, 2, 16), (1, 9)], ids=str)
def test_orthogonal(shape, gain, dtype):
    x = I.Orthogonal(gain=gain, seed=5)(shape, dtype)
    assert x.shape == shape and x.dtype == dtype
    q = x.reshape(-1, shape[-1]).astype(np.float64)
    rows, cols = q.shape
    atol = 1e-5 * gain ** 2 if dtype == np.float32 else 1e-12 * gain ** 2
    if rows >= cols:  # tall: orthonormal columns
        np.testing.assert_allclose(q.T @ q, gain ** 2 * np.eye(cols), atol=atol)
    else:  # wide: orthonormal rows
        np.testing.assert_allclose(q @ q.T, gain ** 2 * np.eye(rows), atol=atol)


def test_orthogonal_is_not_always_the_same_matrix():
    a = I.Orthogonal(seed=1)((6, 6), "float64")
    b = I.Orthogonal(seed=2)((6, 6), "float64")
    assert not np.allclose(a, b)
    assert not np.allclose(np.abs(a), np.eye(6))


# ---- seeds ---------------------------------------------------------------------------------------------
RANDOM = [I.RandomNormal, I.RandomUniform, I.TruncatedNormal, I.VarianceScaling, I.GlorotUniform, I.GlorotNormal,
          I.HeUniform, I.HeNormal, I.LecunUniform, I.LecunNormal, I.Orthogonal]


@pytest.mark.parametrize("cls", RANDOM, ids=lambda c: c.__name__)
def test_seeded_initializers_are_reproducible(cls):
    a = cls(seed=1234)((9, 7), "float64")
    b = cls(seed=1234)((9, 7), "float64")
    c = cls(seed=4321)((9, 7), "float64")
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    fastnn.utils.set_random_seed(1)
    d = cls(seed=1234)((9, 7), "float64")
    fastnn.utils.set_random_seed(2)
    e = cls(seed=1234)((9, 7), "float64")
    np.testing.assert_array_equal(a, d)  # an explicit seed ignores the global one
    np.testing.assert_array_equal(a, e)


def test_seeded_initializer_repeats_its_values_across_calls():
    # Keras 3: "an initializer seeded with an integer ... will produce the same random values
    # across multiple calls" (a SeedGenerator seed is needed for fresh values).
    differing = []
    for cls in RANDOM:
        init = cls(seed=99)
        if not np.array_equal(init((5, 4), "float64"), init((5, 4), "float64")):
            differing.append(cls.__name__)
    assert differing == [], f"seeded instances give new values on a second call: {differing}"


@pytest.mark.parametrize("name", ["random_normal", "random_uniform", "truncated_normal", "glorot_uniform",
                                  "glorot_normal", "he_uniform", "he_normal", "lecun_uniform", "lecun_normal",
                                  "variance_scaling", "orthogonal"])
def test_set_random_seed_makes_unseeded_initializers_reproducible(name):
    fastnn.utils.set_random_seed(2024)
    a = I.get(name)((10, 6), "float32")
    a2 = I.get(name)((10, 6), "float32")
    fastnn.utils.set_random_seed(2024)
    b = I.get(name)((10, 6), "float32")
    b2 = I.get(name)((10, 6), "float32")
    fastnn.utils.set_random_seed(2025)
    c = I.get(name)((10, 6), "float32")
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(a2, b2)
    assert not np.array_equal(a, a2)  # the global stream moves on
    assert not np.array_equal(a, c)


def test_set_random_seed_arguments():
    with pytest.raises(ValueError, match="seed"):
        fastnn.utils.set_random_seed(-1)
    with pytest.raises(TypeError, match="seed"):
        fastnn.utils.set_random_seed("42")
    with pytest.raises(TypeError, match="seed"):
        fastnn.utils.set_random_seed(1.5)


def test_seeded_float32_and_float64_agree():
    a = I.GlorotNormal(seed=3)((50, 40), "float64")
    b = I.GlorotNormal(seed=3)((50, 40), "float32")
    np.testing.assert_allclose(b, a, rtol=1e-6, atol=1e-7)


# ---- bad arguments --------------------------------------------------------------------------------------
@pytest.mark.parametrize("scale", [0.0, -1.0])
def test_variance_scaling_bad_scale(scale):
    with pytest.raises(ValueError, match="scale"):
        I.VarianceScaling(scale=scale)


def test_variance_scaling_bad_mode_and_distribution():
    with pytest.raises(ValueError, match="mode"):
        I.VarianceScaling(mode="fan_middle")
    with pytest.raises(ValueError, match="distribution"):
        I.VarianceScaling(distribution="cauchy")


@pytest.mark.parametrize("shape", [(), (5,)])
def test_orthogonal_needs_rank_2(shape):
    with pytest.raises(ValueError, match="rank"):
        I.Orthogonal()(shape)


@pytest.mark.parametrize("name", ["random_normal", "glorot_uniform", "zeros"])
def test_bad_shapes_and_dtypes(name):
    with pytest.raises(ValueError):
        I.get(name)((-1, 3))
    with pytest.raises(TypeError):
        I.get(name)((2, 3), "not_a_dtype")


def test_random_initializers_refuse_integer_dtypes():
    # Random draws truncated to integers are (almost) all zero: an error, not a silent cast.
    accepted = []
    for name in ["random_normal", "random_uniform", "truncated_normal", "glorot_uniform", "he_normal",
                 "orthogonal"]:
        try:
            I.get(name)((4, 4), "int32")
        except (TypeError, ValueError) as e:
            assert "dtype" in str(e), (name, str(e))
        else:
            accepted.append(name)
    assert accepted == [], f"integer dtype silently accepted by: {accepted}"


def test_random_uniform_and_truncated_normal_bad_ranges():
    with pytest.raises(ValueError):
        I.RandomUniform(minval=1.0, maxval=-1.0)((3,))
    with pytest.raises(ValueError):
        I.TruncatedNormal(stddev=-1.0)((3,))
