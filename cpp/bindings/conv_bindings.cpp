// Python bindings of the convolution kernels: padding and output sizes follow TensorFlow
// ("valid"; "same": output ceil(in / stride), padding split with the extra one after;
// "causal": all padding before, for 1-D convolutions over time).
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <string>
#include <tuple>

#include "activation_args.hpp"
#include "fastnn/conv.hpp"

namespace fastnn::bindings {
namespace {


// Output size and padding before, along one axis.
std::pair<Index, Index> out_and_pad(const char* fn, const char* axis, Index in, Index k,
                                    Index stride, Index dilation, const std::string& padding) {
  const Index span = checked_add(fn, cat("the receptive field along the ", axis, " (kernel size ", k, " with dilation_rate ", dilation, ")"),
                                 checked_mul(fn, cat("the receptive field along the ", axis, " (kernel size ", k, " with dilation_rate ", dilation, ")"), k - 1, dilation), 1);
  // The kernels index positions o·stride − pad + tap·dilation in rows of the input: keep the
  // receptive field (and with it the padding) where that arithmetic cannot overflow.
  constexpr Index kMaxSpan = (Index(1) << 31) - 1;
  if (span > kMaxSpan)
    throw py::value_error(cat(fn, ": the receptive field along the ", axis, " (kernel size ", k,
                              " with dilation_rate ", dilation, ") spans ", span,
                              " positions; at most 2**31 - 1 are supported"));
  if (padding == "valid") {
    if (span > in)
      throw py::value_error(cat(fn, ": the kernel spans ", span, " ", axis,
                                " positions (size ", k, ", dilation ", dilation,
                                ") but the input has only ", in, " with padding='valid'"));
    return {(in - span) / stride + 1, 0};
  }
  if (padding == "same") {
    const Index out = in / stride + (in % stride != 0);
    const Index total = std::max<Index>((out - 1) * stride - in + span, 0);  // (out − 1)·stride < in
    return {out, total / 2};
  }
  if (padding == "causal") {  // all span − 1 positions of padding before: (in − 1) / stride + 1
    return {in == 0 ? 0 : (in - 1) / stride + 1, span - 1};
  }
  throw py::value_error(cat(fn, ": 'padding' must be 'valid', 'same' or 'causal', got '", padding, "'"));
}

template <typename T>
struct CheckedConv {
  py::array_t<T> x, w, b;
  ConvArgs<T> args;
  std::vector<Index> out_shape;
};

template <typename T>
CheckedConv<T> check_conv(const char* fn, py::handle x_obj, py::handle w_obj, py::handle b_obj,
                 py::handle strides_obj, py::handle dilation_obj,
                 const std::string& padding, const Activation& act) {
  CheckedConv<T> c;
  c.x = input_array<T>(fn, {"x", x_obj});
  c.w = input_array<T>(fn, {"w", w_obj});
  require_ndim(fn, "x", c.x, 4, 4);
  require_ndim(fn, "w", c.w, 4, 4);
  ConvShape& s = c.args.s;
  s.n = c.x.shape(0);
  s.h = c.x.shape(1);
  s.w = c.x.shape(2);
  s.c = c.x.shape(3);
  s.kh = c.w.shape(0);
  s.kw = c.w.shape(1);
  s.f = c.w.shape(3);
  // Groups come from the shapes, as in Keras' ops.conv: w's input axis is x's channels / groups.
  const Index w_in = c.w.shape(2);
  if (w_in == 0 ? s.c != 0 : (s.c == 0 || s.c % w_in != 0))
    throw py::value_error(cat(fn, ": 'x' has ", s.c, " channels (last axis of shape ",
                              shape_str(shape_of(c.x)), ") but 'w' expects ", w_in,
                              " (w.shape=", shape_str(shape_of(c.w)), ", layout (kh, kw, in / groups, out)): ",
                              "the channels must be a multiple of that number (groups = channels / it)"));
  s.groups = w_in == 0 ? 1 : s.c / w_in;
  if (s.f % s.groups != 0)
    throw py::value_error(cat(fn, ": a grouped convolution of ", s.c, " channels in ", s.groups,
                              " groups of ", w_in, " needs a number of filters divisible by ", s.groups,
                              ", got w.shape=", shape_str(shape_of(c.w))));
  if (s.kh < 1 || s.kw < 1)
    throw py::value_error(cat(fn, ": 'w' must have a kernel of at least 1×1, got shape ",
                              shape_str(shape_of(c.w))));
  std::tie(s.sh, s.sw) = int_pair_arg(fn, "strides", strides_obj, 1);
  std::tie(s.dh, s.dw) = int_pair_arg(fn, "dilation_rate", dilation_obj, 1);
  // "causal" pads the time axis (the width of a 1-D convolution); the height stays "valid".
  const std::string vertical = padding == "causal" ? std::string("valid") : padding;
  const auto [oh, pt] = out_and_pad(fn, "rows", s.h, s.kh, s.sh, s.dh, vertical);
  const auto [ow, pl] = out_and_pad(fn, "columns", s.w, s.kw, s.sw, s.dw, padding);
  s.oh = oh;
  s.ow = ow;
  s.pad_top = pt;
  s.pad_left = pl;
  if (!b_obj.is_none()) {
    c.b = input_array<T>(fn, {"b", b_obj});
    require_shape(fn, "b", c.b, {s.f});
  }
  c.args.x = c.x.data();
  c.args.w = c.w.data();
  c.args.b = b_obj.is_none() ? nullptr : c.b.data();
  c.args.act = act;
  c.out_shape = checked_shape(fn, {s.n, s.oh, s.ow, s.f}, sizeof(T));
  return c;
}

template <typename T>
py::tuple conv_forward_impl(py::handle x, py::handle w, py::handle b, py::handle strides,
                       py::handle dilation, const std::string& padding,
                       const Activation& act, bool keep_z) {
  auto c = check_conv<T>("conv", x, w, b, strides, dilation, padding, act);
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
    conv2d_forward<T>(c.args, z, y.mutable_data());
  }
  return py::make_tuple(std::move(y), z_out);
}

template <typename T>
py::object conv_backward_impl(py::handle x, py::handle w, py::handle z_obj, py::handle y_obj,
                         py::handle dy_obj, py::handle strides,
                         py::handle dilation, const std::string& padding,
                         const Activation& act, py::handle dw_obj, py::handle db_obj,
                         bool accumulate, bool need_dx) {
  const char* fn = "conv_backward";
  auto c = check_conv<T>(fn, x, w, py::none(), strides, dilation, padding, act);
  const FusedBackwardArrays<T> a(fn, act, y_obj, dy_obj, z_obj, c.out_shape, dw_obj, shape_of(c.w), db_obj,
                                 c.args.s.f);
  py::object dx_out = py::none();
  T* dx = nullptr;
  if (need_dx) {
    auto dxa = new_array<T>(shape_of(c.x));
    dx = dxa.mutable_data();
    dx_out = std::move(dxa);
  }
  {
    py::gil_scoped_release nogil;
    conv2d_backward<T>(c.args, a.z_ptr, a.y.data(), a.dy.data(), a.dw_ptr, a.db_ptr, accumulate, dx);
  }
  return dx_out;
}

}  // namespace

void register_conv(py::module_& m) {
  m.def(
      "conv2d_forward",
      [](py::handle x, py::handle w, py::handle b, py::handle strides,
         py::handle dilation, const std::string& padding, int kind, double alpha,
         bool keep_z) {
        const Activation act = make_activation("conv", kind, alpha);
        return dispatch(resolve_dtype("conv", {{"x", x}, {"w", w}, {"b", b}}), [&](auto t) {
          return conv_forward_impl<decltype(t)>(x, w, b, strides, dilation, padding, act, keep_z);
        });
      },
      py::arg("x"), py::arg("w"), py::arg("b"), py::arg("strides"), py::arg("dilation"),
      py::arg("padding"), py::arg("kind") = 0, py::arg("alpha") = 0.0, py::arg("keep_z") = false,
      "(y, z): y = act(conv(x, w) + b), NHWC / HWIO; z the pre-activation when keep_z.");
  m.def(
      "conv2d_backward",
      [](py::handle x, py::handle w, py::handle z, py::handle y, py::handle dy,
         py::handle strides, py::handle dilation,
         const std::string& padding, int kind, double alpha, py::handle dw, py::handle db,
         bool accumulate, bool need_dx) {
        const Activation act = make_activation("conv", kind, alpha);
        const DType dt = resolve_dtype(
            "conv_backward",
            {{"x", x}, {"w", w}, {"z", z}, {"y", y}, {"dy", dy}, {"dw", dw}, {"db", db}});
        return dispatch(dt, [&](auto t) {
          return conv_backward_impl<decltype(t)>(x, w, z, y, dy, strides, dilation, padding, act, dw,
                                            db, accumulate, need_dx);
        });
      },
      py::arg("x"), py::arg("w"), py::arg("z"), py::arg("y"), py::arg("dy"), py::arg("strides"),
      py::arg("dilation"), py::arg("padding"), py::arg("kind"), py::arg("alpha"), py::arg("dw"),
      py::arg("db"), py::arg("accumulate") = false, py::arg("need_dx") = true,
      "Writes dw (and db) for dy = dL/dy; returns dx (None unless need_dx).");
}

}  // namespace fastnn::bindings
