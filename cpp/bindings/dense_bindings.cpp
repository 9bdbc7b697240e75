// Python bindings of the Dense layer kernels: one call forward, one call backward.
#include <pybind11/pybind11.h>

#include "activation_args.hpp"
#include "fastnn/dense.hpp"

namespace fastnn::bindings {
namespace {


template <typename T>
struct CheckedDense {
  py::array_t<T> x, w, b;
  DenseArgs<T> args;
  std::vector<Index> out_shape;
};

template <typename T>
CheckedDense<T> check_dense(const char* fn, py::handle x_obj, py::handle w_obj, py::handle b_obj,
                 const Activation& act) {
  CheckedDense<T> c;
  c.x = input_array<T>(fn, {"x", x_obj});
  c.w = input_array<T>(fn, {"w", w_obj});
  require_ndim(fn, "x", c.x, 1);
  require_ndim(fn, "w", c.w, 2, 2);
  const auto xs = shape_of(c.x);
  const Index k = xs.back(), n = c.w.shape(1);
  if (c.w.shape(0) != k)
    throw py::value_error(cat(fn, ": 'x' has ", k, " features (last axis of shape ", shape_str(xs),
                              ") but 'w' expects ", c.w.shape(0), " (w.shape=",
                              shape_str(shape_of(c.w)), ")"));
  if (!b_obj.is_none()) {
    c.b = input_array<T>(fn, {"b", b_obj});
    require_shape(fn, "b", c.b, {n});
  }
  c.args.m = k ? c.x.size() / k : 0;
  if (!k) {
    c.args.m = 1;
    for (size_t d = 0; d + 1 < xs.size(); ++d) c.args.m *= xs[d];
  }
  c.args.k = k;
  c.args.n = n;
  c.args.x = c.x.data();
  c.args.w = c.w.data();
  c.args.b = b_obj.is_none() ? nullptr : c.b.data();
  c.args.act = act;
  c.out_shape.assign(xs.begin(), xs.end() - 1);
  c.out_shape.push_back(n);
  return c;
}

template <typename T>
py::tuple dense_forward_impl(py::handle x, py::handle w, py::handle b, const Activation& act,
                       bool keep_z) {
  auto c = check_dense<T>("dense_forward", x, w, b, act);
  auto y = new_array<T>(c.out_shape);
  py::object z_out = py::none();
  T* z = nullptr;
  if (keep_z && act.kind != ActivationKind::Linear) {
    auto za = new_array<T>(c.out_shape);
    z = za.mutable_data();
    z_out = std::move(za);
  }
  {
    py::gil_scoped_release nogil;
    dense_forward<T>(c.args, z, y.mutable_data());
  }
  return py::make_tuple(std::move(y), z_out);
}

template <typename T>
py::object dense_backward_impl(py::handle x, py::handle w, py::handle z_obj, py::handle y_obj,
                         py::handle dy_obj, const Activation& act, py::handle dw_obj,
                         py::handle db_obj, bool accumulate, bool need_dx) {
  const char* fn = "dense_backward";
  auto c = check_dense<T>(fn, x, w, py::none(), act);
  const FusedBackwardArrays<T> a(fn, act, y_obj, dy_obj, z_obj, c.out_shape, dw_obj, shape_of(c.w), db_obj,
                                 c.args.n);
  py::object dx_out = py::none();
  T* dx = nullptr;
  if (need_dx) {
    auto dxa = new_array<T>(shape_of(c.x));
    dx = dxa.mutable_data();
    dx_out = std::move(dxa);
  }
  {
    py::gil_scoped_release nogil;
    dense_backward<T>(c.args, a.z_ptr, a.y.data(), a.dy.data(), a.dw_ptr, a.db_ptr, accumulate, dx);
  }
  return dx_out;
}

}  // namespace

void register_dense(py::module_& m) {
  m.def(
      "dense_forward",
      [](py::handle x, py::handle w, py::handle b, int kind, double alpha, bool keep_z) {
        const Activation act = make_activation("dense", kind, alpha);
        return dispatch(resolve_dtype("dense_forward", {{"x", x}, {"w", w}, {"b", b}}),
                        [&](auto t) { return dense_forward_impl<decltype(t)>(x, w, b, act, keep_z); });
      },
      py::arg("x"), py::arg("w"), py::arg("b"), py::arg("kind"), py::arg("alpha") = 0.0,
      py::arg("keep_z") = false,
      "(y, z): y = f(x @ w + b); z = x @ w + b when keep_z and f is not linear, else None.");
  m.def(
      "dense_backward",
      [](py::handle x, py::handle w, py::handle z, py::handle y, py::handle dy, int kind,
         double alpha, py::handle dw, py::handle db, bool accumulate, bool need_dx) {
        const Activation act = make_activation("dense", kind, alpha);
        const DType dt = resolve_dtype(
            "dense_backward",
            {{"x", x}, {"w", w}, {"z", z}, {"y", y}, {"dy", dy}, {"dw", dw}, {"db", db}});
        return dispatch(dt, [&](auto t) {
          return dense_backward_impl<decltype(t)>(x, w, z, y, dy, act, dw, db, accumulate, need_dx);
        });
      },
      py::arg("x"), py::arg("w"), py::arg("z"), py::arg("y"), py::arg("dy"), py::arg("kind"),
      py::arg("alpha"), py::arg("dw"), py::arg("db"), py::arg("accumulate") = false,
      py::arg("need_dx") = true,
      "Writes dw (and db) for dy = dL/dy; returns dx (None unless need_dx).");
}

}  // namespace fastnn::bindings
