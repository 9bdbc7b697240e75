// Python bindings of the batch normalisation kernels: one call forward (training or
// inference), one call backward. The channel axis is any axis of x (read in place, see
// fastnn/batchnorm.hpp); moving statistics are updated in place.
#include <pybind11/pybind11.h>


#include "args.hpp"
#include "fastnn/batchnorm.hpp"

namespace fastnn::bindings {
namespace {

// x's shape split around the channel axis.
struct Split {
  Index outer = 1, channels = 0, inner = 1;
  int axis = 0;
};

Split split_axis(const char* fn, const std::vector<Index>& shape, int axis) {
  const int nd = static_cast<int>(shape.size());
  if (axis < -nd || axis >= nd)
    throw py::value_error(cat(fn, ": 'axis' must be in [", -nd, ", ", nd, ") for 'x' of shape ",
                              shape_str(shape), " (", nd, " dimensions), got ", axis));
  Split s;
  s.axis = axis < 0 ? axis + nd : axis;
  s.channels = shape[s.axis];
  // A product past 2**63 - 1 only comes with an empty x (its size fits): count it as 0 values.
  for (int d = 0; d < s.axis; ++d)
    if (__builtin_mul_overflow(s.outer, shape[d], &s.outer)) s.outer = 0;
  for (int d = s.axis + 1; d < nd; ++d)
    if (__builtin_mul_overflow(s.inner, shape[d], &s.inner)) s.inner = 0;
  if (s.outer == 0 || s.inner == 0) s.outer = s.inner = 0;
  return s;
}

// A per-channel vector argument (gamma, beta, mean, ...): None or C values.
template <typename T>
const T* channel_vector(const char* fn, const char* name, py::handle obj, const Split& s,
                        const std::vector<Index>& x_shape, py::array_t<T>& keep) {
  if (obj.is_none()) return nullptr;
  keep = input_array<T>(fn, {name, obj});
  if (keep.ndim() != 1 || keep.shape(0) != s.channels)
    throw py::value_error(cat(fn, ": '", name, "' must have shape (", s.channels,
                              ",) (one value per channel: axis ", s.axis, " of 'x' of shape ",
                              shape_str(x_shape), "), got ", shape_str(shape_of(keep))));
  return keep.data();
}

template <typename T>
py::tuple batchnorm_forward_impl(py::handle x_obj, py::handle gamma_obj, py::handle beta_obj,
                       py::handle mm_obj, py::handle mv_obj, int axis, double epsilon,
                       double momentum, bool training) {
  const char* fn = "batchnorm_forward";
  auto x = input_array<T>(fn, {"x", x_obj});
  require_ndim(fn, "x", x, 1);
  const auto xs = shape_of(x);
  const Split s = split_axis(fn, xs, axis);
  require_epsilon(fn, epsilon);
  py::array_t<T> gamma, beta, mm_in, mv_in, mm_io, mv_io;
  BatchNormArgs<T> a;
  a.outer = s.outer;
  a.channels = s.channels;
  a.inner = s.inner;
  a.x = x.data();
  a.gamma = channel_vector<T>(fn, "gamma", gamma_obj, s, xs, gamma);
  a.beta = channel_vector<T>(fn, "beta", beta_obj, s, xs, beta);
  a.epsilon = epsilon;

  // The outputs are made after every argument check (a huge channel count with no values
  // must be named, not allocated).
  py::array_t<T> y, mean, invstd;
  auto make_outputs = [&] {
    y = new_array<T>(xs);
    mean = new_array<T>({s.channels});
    invstd = new_array<T>({s.channels});
  };
  if (training) {
    if (mm_obj.is_none() != mv_obj.is_none())
      throw py::value_error(cat(fn, ": give both 'moving_mean' and 'moving_variance' (updated in "
                                "place), or neither"));
    T* mm = nullptr;
    T* mv = nullptr;
    if (!mm_obj.is_none()) {
      if (!(momentum >= 0 && momentum <= 1))
        throw py::value_error(cat(fn, ": 'momentum' must be in [0, 1], got ", momentum));
      mm_io = inout_array<T>(fn, {"moving_mean", mm_obj}, s.channels);
      mv_io = inout_array<T>(fn, {"moving_variance", mv_obj}, s.channels);
      require_no_overlap(fn, "moving_variance", mv_io, "moving_mean", mm_io);
      for (const auto& io : {std::make_pair("moving_mean", &mm_io),
                             std::make_pair("moving_variance", &mv_io)}) {
        require_no_overlap(fn, io.first, *io.second, "x", x);
        if (a.gamma) require_no_overlap(fn, io.first, *io.second, "gamma", gamma);
        if (a.beta) require_no_overlap(fn, io.first, *io.second, "beta", beta);
      }
      mm = mm_io.mutable_data();
      mv = mv_io.mutable_data();
    }
    if (s.channels > 0 && s.outer * s.inner == 0)
      throw py::value_error(cat(fn, ": training mode needs at least one value per channel to "
                                "compute batch statistics; 'x' has shape ", shape_str(xs)));
    make_outputs();
    py::gil_scoped_release nogil;
    batchnorm_forward_training<T>(a, y.mutable_data(), mean.mutable_data(),
                                  invstd.mutable_data(), nullptr, momentum, mm, mv);
  } else {
    if (mm_obj.is_none() || mv_obj.is_none())
      throw py::value_error(cat(fn, ": inference mode (training=False) needs 'moving_mean' and "
                                "'moving_variance' (the statistics to normalise with)"));
    const T* mm = channel_vector<T>(fn, "moving_mean", mm_obj, s, xs, mm_in);
    const T* mv = channel_vector<T>(fn, "moving_variance", mv_obj, s, xs, mv_in);
    for (Index c = 0; c < s.channels; ++c)
      if (mv[c] < 0)
        throw py::value_error(cat(fn, ": 'moving_variance' must be >= 0, got ", mv[c],
                                  " for channel ", c));
    make_outputs();
    std::copy(mm, mm + s.channels, mean.mutable_data());
    py::gil_scoped_release nogil;
    batchnorm_forward_inference<T>(a, mm, mv, y.mutable_data(), invstd.mutable_data());
  }
  return py::make_tuple(std::move(y), std::move(mean), std::move(invstd));
}

template <typename T>
py::object batchnorm_backward_impl(py::handle x_obj, py::handle dy_obj, py::handle mean_obj,
                         py::handle invstd_obj, py::handle gamma_obj, int axis, bool training,
                         py::handle dgamma_obj, py::handle dbeta_obj, bool accumulate,
                         bool need_dx) {
  const char* fn = "batchnorm_backward";
  auto x = input_array<T>(fn, {"x", x_obj});
  require_ndim(fn, "x", x, 1);
  const auto xs = shape_of(x);
  const Split s = split_axis(fn, xs, axis);
  auto dy = input_array<T>(fn, {"dy", dy_obj});
  require_shape(fn, "dy", dy, xs);
  py::array_t<T> mean, invstd, gamma, dgamma, dbeta;
  const T* mean_p = channel_vector<T>(fn, "mean", mean_obj, s, xs, mean);
  const T* invstd_p = channel_vector<T>(fn, "invstd", invstd_obj, s, xs, invstd);
  if (!mean_p || !invstd_p)
    throw py::type_error(cat(fn, ": 'mean' and 'invstd' (returned by batchnorm_forward) are "
                             "required"));
  BatchNormArgs<T> a;
  a.outer = s.outer;
  a.channels = s.channels;
  a.inner = s.inner;
  a.x = x.data();
  a.gamma = channel_vector<T>(fn, "gamma", gamma_obj, s, xs, gamma);
  T* dgamma_p = optional_output<T>(fn, {"dgamma", dgamma_obj}, {s.channels}, dgamma);
  T* dbeta_p = optional_output<T>(fn, {"dbeta", dbeta_obj}, {s.channels}, dbeta);
  if (dgamma_p && dbeta_p) require_no_overlap(fn, "dbeta", dbeta, "dgamma", dgamma);
  py::object dx_out;
  T* dx = new_array_if<T>(need_dx, xs, dx_out);
  {
    py::gil_scoped_release nogil;
    batchnorm_backward<T>(a, mean_p, invstd_p, dy.data(), training, dgamma_p, dbeta_p, accumulate,
                          dx);
  }
  return dx_out;
}

}  // namespace

void register_batchnorm(py::module_& m) {
  m.def(
      "batchnorm_forward",
      [](py::handle x, py::handle gamma, py::handle beta, py::handle moving_mean,
         py::handle moving_variance, int axis, double epsilon, double momentum, bool training) {
        const DType dt = resolve_dtype("batchnorm_forward",
                                       {{"x", x},
                                        {"gamma", gamma},
                                        {"beta", beta},
                                        {"moving_mean", moving_mean},
                                        {"moving_variance", moving_variance}});
        return dispatch(dt, [&](auto t) {
          return batchnorm_forward_impl<decltype(t)>(x, gamma, beta, moving_mean, moving_variance, axis,
                                           epsilon, momentum, training);
        });
      },
      py::arg("x"), py::arg("gamma"), py::arg("beta"), py::arg("moving_mean"),
      py::arg("moving_variance"), py::arg("axis") = -1, py::arg("epsilon") = 1e-3,
      py::arg("momentum") = 0.99, py::arg("training") = true,
      "(y, mean, invstd). training: batch statistics, moving_mean/moving_variance (if given) "
      "updated in place; otherwise they normalise. invstd = 1/sqrt(variance + epsilon).");
  m.def(
      "batchnorm_backward",
      [](py::handle x, py::handle dy, py::handle mean, py::handle invstd, py::handle gamma,
         int axis, bool training, py::handle dgamma, py::handle dbeta, bool accumulate,
         bool need_dx) {
        const DType dt = resolve_dtype("batchnorm_backward", {{"x", x},
                                                              {"dy", dy},
                                                              {"mean", mean},
                                                              {"invstd", invstd},
                                                              {"gamma", gamma},
                                                              {"dgamma", dgamma},
                                                              {"dbeta", dbeta}});
        return dispatch(dt, [&](auto t) {
          return batchnorm_backward_impl<decltype(t)>(x, dy, mean, invstd, gamma, axis, training, dgamma,
                                            dbeta, accumulate, need_dx);
        });
      },
      py::arg("x"), py::arg("dy"), py::arg("mean"), py::arg("invstd"), py::arg("gamma"),
      py::arg("axis") = -1, py::arg("training") = true, py::arg("dgamma") = py::none(),
      py::arg("dbeta") = py::none(), py::arg("accumulate") = false, py::arg("need_dx") = true,
      "Writes dgamma and dbeta (when given) for dy = dL/dy; returns dx (None unless need_dx).");
}

}  // namespace fastnn::bindings
