// Python bindings of the dropout kernels.
#include <pybind11/pybind11.h>

#include "args.hpp"
#include "fastnn/dropout.hpp"

namespace fastnn::bindings {
namespace {

template <typename T, bool kForward>
py::object apply(const char* fn, py::handle x_obj, double rate, uint64_t seed) {
  if (!(rate >= 0.0 && rate <= 1.0))
    throw py::value_error(cat(fn, ": 'rate' must be in [0, 1], got ", rate));
  auto x = input_array<T>(fn, {kForward ? "x" : "dy", x_obj});
  auto y = new_array<T>(shape_of(x));
  {
    py::gil_scoped_release nogil;
    if (kForward)
      dropout_forward<T>(x.data(), y.mutable_data(), x.size(), rate, seed);
    else
      dropout_backward<T>(x.data(), y.mutable_data(), x.size(), rate, seed);
  }
  return std::move(y);
}

}  // namespace

void register_dropout(py::module_& m) {
  m.def(
      "dropout_forward",
      [](py::handle x, double rate, uint64_t seed) {
        return dispatch(resolve_dtype("dropout_forward", {{"x", x}}), [&](auto t) {
          return apply<decltype(t), true>("dropout_forward", x, rate, seed);
        });
      },
      py::arg("x"), py::arg("rate"), py::arg("seed"));
  m.def(
      "dropout_backward",
      [](py::handle dy, double rate, uint64_t seed) {
        return dispatch(resolve_dtype("dropout_backward", {{"dy", dy}}), [&](auto t) {
          return apply<decltype(t), false>("dropout_backward", dy, rate, seed);
        });
      },
      py::arg("dy"), py::arg("rate"), py::arg("seed"));
}

}  // namespace fastnn::bindings
