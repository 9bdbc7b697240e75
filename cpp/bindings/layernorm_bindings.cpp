// Python bindings of the layer normalisation kernels: one call forward, one call backward.
// The normalised axes are the trailing axes of x from `axis` on (viewed as rows × F, see
// fastnn/layernorm.hpp); gamma and beta have their shape.
#include <pybind11/pybind11.h>

#include <string>

#include "args.hpp"
#include "fastnn/layernorm.hpp"

namespace fastnn::bindings {
namespace {

// x's shape split at the first normalised axis.
struct LayerNormSplit {
  Index rows = 1, features = 1;
  int axis = 0;
  std::vector<Index> trailing;  // the normalised axes' sizes
};

LayerNormSplit layernorm_split(const char* fn, const std::vector<Index>& shape, int axis) {
  const int nd = static_cast<int>(shape.size());
  if (axis < -nd || axis >= nd)
    throw py::value_error(cat(fn, ": 'axis' (the first normalised axis) must be in [", -nd, ", ",
                              nd, ") for 'x' of shape ", shape_str(shape), " (", nd,
                              " dimensions), got ", axis));
  LayerNormSplit s;
  s.axis = axis < 0 ? axis + nd : axis;
  for (int d = 0; d < s.axis; ++d) s.rows *= shape[d];
  for (int d = s.axis; d < nd; ++d) {
    s.features *= shape[d];
    s.trailing.push_back(shape[d]);
  }
  if (s.features == 0)
    throw py::value_error(cat(fn, ": the normalised axes of 'x' (", s.axis, " to ", nd - 1,
                              " of shape ", shape_str(shape), ") hold no values"));
  return s;
}

LayerNormMode layernorm_mode(const char* fn, const std::string& mode) {
  if (mode == "standard") return LayerNormMode::Standard;
  if (mode == "rms_scaling") return LayerNormMode::KerasRms;
  if (mode == "rms") return LayerNormMode::Rms;
  throw py::value_error(cat(fn, ": 'mode' must be \"standard\", \"rms_scaling\" or \"rms\", got \"",
                            mode, "\""));
}

// gamma / beta: None or the trailing shape.
template <typename T>
const T* layernorm_feature_vector(const char* fn, const char* name, py::handle obj,
                                  const LayerNormSplit& s, const std::vector<Index>& x_shape,
                                  py::array_t<T>& keep) {
  if (obj.is_none()) return nullptr;
  keep = input_array<T>(fn, {name, obj});
  if (shape_of(keep) != s.trailing)
    throw py::value_error(cat(fn, ": '", name, "' must have shape ", shape_str(s.trailing),
                              " (the normalised axes, from axis ", s.axis, " of 'x' of shape ",
                              shape_str(x_shape), "), got ", shape_str(shape_of(keep))));
  return keep.data();
}

// mean (float64) / invstd: one value per row.
template <typename T>
const T* layernorm_row_vector(const char* fn, const char* name, py::handle obj,
                              const LayerNormSplit& s, py::array_t<T>& keep) {
  if (obj.is_none())
    throw py::type_error(cat(fn, ": '", name, "' (returned by layernorm_forward) is required"));
  keep = input_array<T>(fn, {name, obj});
  if (keep.size() != s.rows)
    throw py::value_error(cat(fn, ": '", name, "' must hold ", s.rows,
                              " values (one per row), got ", describe(obj)));
  return keep.data();
}

template <typename T>
py::tuple layernorm_forward_impl(py::handle x_obj, py::handle gamma_obj, py::handle beta_obj,
                                 int axis, double epsilon, const std::string& mode) {
  const char* fn = "layernorm_forward";
  auto x = input_array<T>(fn, {"x", x_obj});
  require_ndim(fn, "x", x, 1);
  const auto xs = shape_of(x);
  const LayerNormSplit s = layernorm_split(fn, xs, axis);
  require_epsilon(fn, epsilon);
  LayerNormArgs<T> a;
  a.mode = layernorm_mode(fn, mode);
  py::array_t<T> gamma, beta;
  a.rows = s.rows;
  a.features = s.features;
  a.x = x.data();
  a.gamma = layernorm_feature_vector<T>(fn, "gamma", gamma_obj, s, xs, gamma);
  a.beta = layernorm_feature_vector<T>(fn, "beta", beta_obj, s, xs, beta);
  if (a.beta && a.mode != LayerNormMode::Standard)
    throw py::value_error(cat(fn, ": 'beta' must be None with mode \"", mode,
                              "\" (RMS scaling adds no offset)"));
  a.epsilon = epsilon;
  auto y = new_array<T>(xs);
  auto mean = new_array<double>({s.rows});
  auto invstd = new_array<T>({s.rows});
  {
    py::gil_scoped_release nogil;
    layernorm_forward<T>(a, y.mutable_data(), mean.mutable_data(), invstd.mutable_data());
  }
  return py::make_tuple(std::move(y), std::move(mean), std::move(invstd));
}

template <typename T>
py::object layernorm_backward_impl(py::handle x_obj, py::handle dy_obj, py::handle mean_obj,
                                   py::handle invstd_obj, py::handle gamma_obj, int axis,
                                   const std::string& mode, py::handle dgamma_obj,
                                   py::handle dbeta_obj, bool accumulate, bool need_dx) {
  const char* fn = "layernorm_backward";
  auto x = input_array<T>(fn, {"x", x_obj});
  require_ndim(fn, "x", x, 1);
  const auto xs = shape_of(x);
  const LayerNormSplit s = layernorm_split(fn, xs, axis);
  auto dy = input_array<T>(fn, {"dy", dy_obj});
  require_shape(fn, "dy", dy, xs);
  LayerNormArgs<T> a;
  a.mode = layernorm_mode(fn, mode);
  py::array_t<T> invstd, gamma, dgamma, dbeta;
  py::array_t<double> mean;
  const double* mean_p = layernorm_row_vector<double>(fn, "mean", mean_obj, s, mean);
  const T* invstd_p = layernorm_row_vector<T>(fn, "invstd", invstd_obj, s, invstd);
  a.rows = s.rows;
  a.features = s.features;
  a.x = x.data();
  a.gamma = layernorm_feature_vector<T>(fn, "gamma", gamma_obj, s, xs, gamma);
  T* dgamma_p = optional_output<T>(fn, {"dgamma", dgamma_obj}, s.trailing, dgamma);
  T* dbeta_p = optional_output<T>(fn, {"dbeta", dbeta_obj}, s.trailing, dbeta);
  if (dgamma_p && dbeta_p) require_no_overlap(fn, "dbeta", dbeta, "dgamma", dgamma);
  py::object dx_out;
  T* dx = new_array_if<T>(need_dx, xs, dx_out);
  {
    py::gil_scoped_release nogil;
    layernorm_backward<T>(a, mean_p, invstd_p, dy.data(), dgamma_p, dbeta_p, accumulate, dx);
  }
  return dx_out;
}

}  // namespace

void register_layernorm(py::module_& m) {
  m.def(
      "layernorm_forward",
      [](py::handle x, py::handle gamma, py::handle beta, int axis, double epsilon,
         const std::string& mode) {
        const DType dt =
            resolve_dtype("layernorm_forward", {{"x", x}, {"gamma", gamma}, {"beta", beta}});
        return dispatch(dt, [&](auto t) {
          return layernorm_forward_impl<decltype(t)>(x, gamma, beta, axis, epsilon, mode);
        });
      },
      py::arg("x"), py::arg("gamma") = py::none(), py::arg("beta") = py::none(),
      py::arg("axis") = -1, py::arg("epsilon") = 1e-3, py::arg("mode") = "standard",
      "(y, mean, invstd) normalising the axes of x from `axis` on. mean: the row means (always "
      "float64); "
      "invstd = 1/sqrt(second moment + epsilon). mode: standard, rms_scaling (Keras') or rms.");
  m.def(
      "layernorm_backward",
      [](py::handle x, py::handle dy, py::handle mean, py::handle invstd, py::handle gamma,
         int axis, const std::string& mode, py::handle dgamma, py::handle dbeta, bool accumulate,
         bool need_dx) {
        const DType dt = resolve_dtype("layernorm_backward", {{"x", x},
                                                              {"dy", dy},
                                                              {"invstd", invstd},
                                                              {"gamma", gamma},
                                                              {"dgamma", dgamma},
                                                              {"dbeta", dbeta}});
        return dispatch(dt, [&](auto t) {
          return layernorm_backward_impl<decltype(t)>(x, dy, mean, invstd, gamma, axis, mode,
                                                      dgamma, dbeta, accumulate, need_dx);
        });
      },
      py::arg("x"), py::arg("dy"), py::arg("mean"), py::arg("invstd"), py::arg("gamma") = py::none(),
      py::arg("axis") = -1, py::arg("mode") = "standard", py::arg("dgamma") = py::none(),
      py::arg("dbeta") = py::none(), py::arg("accumulate") = false, py::arg("need_dx") = true,
      "Writes dgamma and dbeta (when given) for dy = dL/dy; returns dx (None unless need_dx).");
}

}  // namespace fastnn::bindings
