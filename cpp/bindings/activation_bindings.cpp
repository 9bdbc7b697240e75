// Python bindings of the activation kernels (fastnn.ops.activation_forward/backward, prelu).
#include <pybind11/pybind11.h>

#include "activation_args.hpp"
#include "fastnn/activation.hpp"

namespace fastnn::bindings {
namespace {


// Softmax runs over the last axis: its size (1 for 0-d input).
Index last_axis(const py::array& a) { return a.ndim() ? a.shape(a.ndim() - 1) : 1; }

template <typename T>
py::object activation_forward_impl(py::handle x_obj, const Activation& act) {
  const char* fn = "activation_forward";
  auto x = input_array<T>(fn, {"x", x_obj});
  auto y = new_array<T>(shape_of(x));
  {
    py::gil_scoped_release nogil;
    activation_forward<T>(act, x.data(), y.mutable_data(), x.size(), last_axis(x));
  }
  return std::move(y);
}

template <typename T>
py::object activation_backward_impl(const Activation& act, py::handle x_obj, py::handle y_obj,
                         py::handle dy_obj) {
  const char* fn = "activation_backward";
  auto y = input_array<T>(fn, {"y", y_obj});
  auto dy = input_array<T>(fn, {"dy", dy_obj});
  require_shape(fn, "dy", dy, shape_of(y));
  py::array_t<T> x;  // (a default array_t is an empty array, not null: keep a pointer)
  const T* x_ptr = nullptr;
  if (activation_backward_needs_input(act.kind)) {
    if (x_obj.is_none())
      throw py::value_error(cat(fn, ": this activation's derivative needs its input 'x'"));
    x = input_array<T>(fn, {"x", x_obj});
    require_shape(fn, "x", x, shape_of(y));
    x_ptr = x.data();
  }
  auto dx = new_array<T>(shape_of(y));
  {
    py::gil_scoped_release nogil;
    activation_backward<T>(act, x_ptr, y.data(), dy.data(), dx.mutable_data(),
                           y.size(), last_axis(y));
  }
  return std::move(dx);
}

// PReLU: alpha's shape is the trailing part of x's shape.
template <typename T>
Index prelu_rows(const char* fn, const py::array_t<T>& x, const py::array_t<T>& alpha) {
  const auto xs = shape_of(x), as = shape_of(alpha);
  if (as.size() > xs.size() || !std::equal(as.rbegin(), as.rend(), xs.rbegin()))
    throw py::value_error(cat(fn, ": 'alpha' of shape ", shape_str(as),
                              " must match the trailing axes of 'x' of shape ", shape_str(xs)));
  return alpha.size() ? x.size() / alpha.size() : 0;
}

template <typename T>
py::object prelu_forward_impl(py::handle x_obj, py::handle a_obj) {
  const char* fn = "prelu_forward";
  auto x = input_array<T>(fn, {"x", x_obj});
  auto alpha = input_array<T>(fn, {"alpha", a_obj});
  const Index rows = prelu_rows(fn, x, alpha);
  auto y = new_array<T>(shape_of(x));
  {
    py::gil_scoped_release nogil;
    prelu_forward<T>(x.data(), alpha.data(), y.mutable_data(), rows, alpha.size());
  }
  return std::move(y);
}

template <typename T>
py::object prelu_backward_impl(py::handle x_obj, py::handle a_obj, py::handle dy_obj,
                               py::handle da_obj, bool accumulate) {
  const char* fn = "prelu_backward";
  auto x = input_array<T>(fn, {"x", x_obj});
  auto alpha = input_array<T>(fn, {"alpha", a_obj});
  auto dy = input_array<T>(fn, {"dy", dy_obj});
  require_shape(fn, "dy", dy, shape_of(x));
  const Index rows = prelu_rows(fn, x, alpha);
  auto dalpha = inout_array<T>(fn, {"dalpha", da_obj}, alpha.size());
  auto dx = new_array<T>(shape_of(x));
  {
    py::gil_scoped_release nogil;
    prelu_backward<T>(x.data(), alpha.data(), dy.data(), dx.mutable_data(),
                      dalpha.mutable_data(), rows, alpha.size(), accumulate);
  }
  return std::move(dx);
}

}  // namespace

void register_activation(py::module_& m) {
  py::dict kinds;
  kinds["linear"] = int(ActivationKind::Linear);
  kinds["relu"] = int(ActivationKind::Relu);
  kinds["sigmoid"] = int(ActivationKind::Sigmoid);
  kinds["tanh"] = int(ActivationKind::Tanh);
  kinds["leaky_relu"] = int(ActivationKind::LeakyRelu);
  kinds["elu"] = int(ActivationKind::Elu);
  kinds["selu"] = int(ActivationKind::Selu);
  kinds["gelu"] = int(ActivationKind::Gelu);
  kinds["gelu_tanh"] = int(ActivationKind::GeluTanh);
  kinds["softplus"] = int(ActivationKind::Softplus);
  kinds["swish"] = int(ActivationKind::Swish);
  kinds["softmax"] = int(ActivationKind::Softmax);
  m.attr("activation_kinds") = kinds;
  m.def("activation_needs_input", [](int kind) {
    return activation_backward_needs_input(make_activation("activation_needs_input", kind, 0).kind);
  });
  m.def(
      "activation_forward",
      [](py::handle x, int kind, double alpha) {
        const Activation act = make_activation("activation_forward", kind, alpha);
        return dispatch(resolve_dtype("activation_forward", {{"x", x}}),
                        [&](auto t) { return activation_forward_impl<decltype(t)>(x, act); });
      },
      py::arg("x"), py::arg("kind"), py::arg("alpha") = 0.0);
  m.def(
      "activation_backward",
      [](int kind, double alpha, py::handle x, py::handle y, py::handle dy) {
        const Activation act = make_activation("activation_backward", kind, alpha);
        return dispatch(resolve_dtype("activation_backward", {{"x", x}, {"y", y}, {"dy", dy}}),
                        [&](auto t) { return activation_backward_impl<decltype(t)>(act, x, y, dy); });
      },
      py::arg("kind"), py::arg("alpha"), py::arg("x"), py::arg("y"), py::arg("dy"));
  m.def(
      "prelu_forward",
      [](py::handle x, py::handle alpha) {
        return dispatch(resolve_dtype("prelu_forward", {{"x", x}, {"alpha", alpha}}),
                        [&](auto t) { return prelu_forward_impl<decltype(t)>(x, alpha); });
      },
      py::arg("x"), py::arg("alpha"));
  m.def(
      "prelu_backward",
      [](py::handle x, py::handle alpha, py::handle dy, py::handle dalpha, bool accumulate) {
        return dispatch(
            resolve_dtype("prelu_backward", {{"x", x}, {"alpha", alpha}, {"dy", dy}, {"dalpha", dalpha}}),
            [&](auto t) { return prelu_backward_impl<decltype(t)>(x, alpha, dy, dalpha, accumulate); });
      },
      py::arg("x"), py::arg("alpha"), py::arg("dy"), py::arg("dalpha"), py::arg("accumulate") = false);
}

}  // namespace fastnn::bindings
