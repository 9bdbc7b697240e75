// Python bindings of the pooling kernels (fastnn.ops.max_pool, average_pool, the global
// pools, zero_pad2d, upsample2d and their backward passes).
//
// Images are 4-D (batch, height, width, channels); 3-D inputs (batch, steps, channels)
// are images of height 1 (1-D pooling), which pool with pool_h = stride_h = 1.
#include <pybind11/pybind11.h>

#include <climits>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "args.hpp"
#include "fastnn/pool.hpp"

namespace fastnn::bindings {
namespace {

struct Window {
  Index pool_h, pool_w, stride_h, stride_w;
  bool same;
};

Window window_args(const char* fn, py::handle ph, py::handle pw, py::handle sh, py::handle sw,
                   const std::string& padding) {
  Window w;
  w.pool_h = int_arg(fn, "pool_h", ph, 1);
  w.pool_w = int_arg(fn, "pool_w", pw, 1);
  w.stride_h = int_arg(fn, "stride_h", sh, 1);
  w.stride_w = int_arg(fn, "stride_w", sw, 1);
  if (padding != "valid" && padding != "same")
    throw py::value_error(cat(fn, ": 'padding' must be 'valid' or 'same', got '", padding, "'"));
  w.same = padding == "same";
  return w;
}

// (batch, height, width, channels) of a 3-D or 4-D shape.
std::vector<Index> image_dims(const char* fn, const char* name, const std::vector<Index>& shape) {
  if (shape.size() == 4) return shape;
  if (shape.size() == 3) return {shape[0], 1, shape[1], shape[2]};
  throw py::value_error(cat(fn, ": '", name, "' must have 3 dimensions (batch, steps, channels) "
                            "or 4 (batch, height, width, channels), got ", shape.size(),
                            " (shape ", shape_str(shape), ")"));
}

// An input shape given as a sequence of non-negative ints.
std::vector<Index> shape_arg(const char* fn, const char* name, py::handle value) {
  std::vector<Index> shape;
  if (py::isinstance<py::str>(value) || !py::isinstance<py::sequence>(value))
    throw py::type_error(cat(fn, ": '", name, "' must be a tuple of ints, got ", describe(value)));
  for (py::handle d : py::reinterpret_borrow<py::sequence>(value))
    shape.push_back(int_arg(fn, cat(name, "[", shape.size(), "]"), d, 0));
  return shape;
}

// The geometry of pooling `dims` (batch, h, w, c); errors name the function.
Pool2D geometry(const char* fn, const std::vector<Index>& shape, const Window& win) {
  const auto d = image_dims(fn, "inputs", shape);
  if (shape.size() == 3 && (win.pool_h != 1 || win.stride_h != 1))
    throw py::value_error(cat(fn, ": a 3-D input (batch, steps, channels) pools along its steps "
                              "only, so pool_h and stride_h must be 1, got pool_h=", win.pool_h,
                              ", stride_h=", win.stride_h));
  if (!win.same && (win.pool_h > d[1] || win.pool_w > d[2])) {
    const bool is_1d = shape.size() == 3;
    throw py::value_error(cat(fn, ": with padding='valid' the pooling window must fit in the "
                              "input: pool_size ", is_1d ? cat(win.pool_w) : cat("(", win.pool_h, ", ", win.pool_w, ")"),
                              " is larger than the input's ", is_1d ? cat("steps ", d[2]) : cat("height × width ", d[1], "×", d[2]),
                              " (input shape ", shape_str(shape), "); use a smaller pool_size "
                              "or padding='same'"));
  }
  return make_pool2d(d[0], d[1], d[2], d[3], win.pool_h, win.pool_w, win.stride_h, win.stride_w,
                     win.same);
}

// The output shape of a pooling of `shape`, with the input's rank.
std::vector<Index> pooled_shape(const std::vector<Index>& shape, const Pool2D& p) {
  if (shape.size() == 3) return {p.batch, p.out_w, p.channels};
  return {p.batch, p.out_h, p.out_w, p.channels};
}

// An argmax array: exactly int32 (converted to C order when it is a strided view) of `shape`.
py::array_t<int32_t> argmax_arg(const char* fn, py::handle value, const std::vector<Index>& shape) {
  if (!py::isinstance<py::array>(value) ||
      !py::array_t<int32_t>::check_(py::reinterpret_borrow<py::array>(value)))
    throw py::type_error(cat(fn, ": 'argmax' must be the int32 array returned by the forward "
                             "pass, got ", describe(value)));
  auto a = py::array_t<int32_t, py::array::c_style | py::array::forcecast>::ensure(value);
  if (!a) throw py::error_already_set();
  require_shape(fn, "argmax", a, shape);
  return a;
}

template <typename T>
py::object max_pool_impl(py::handle x_obj, const Window& win, bool with_argmax) {
  const char* fn = "max_pool";
  auto x = input_array<T>(fn, {"inputs", x_obj});
  const auto shape = shape_of(x);
  const Pool2D p = geometry(fn, shape, win);
  if (with_argmax && p.in_h * p.in_w > INT32_MAX)
    throw py::value_error(cat(fn, ": height × width ", p.in_h, "×", p.in_w,
                              " is too large for int32 argmax indices"));
  const auto out_shape = pooled_shape(shape, p);
  auto y = new_array<T>(out_shape);
  py::array_t<int32_t> argmax;
  if (with_argmax) argmax = new_array<int32_t>(out_shape);
  if (y.size() != 0) {  // (empty: no loop over a long empty axis)
    py::gil_scoped_release nogil;
    max_pool_forward<T>(p, x.data(), y.mutable_data(), with_argmax ? argmax.mutable_data() : nullptr);
  }
  if (with_argmax) return py::make_tuple(std::move(y), std::move(argmax));
  return std::move(y);
}

template <typename T>
py::object max_pool_backward_impl(py::handle dy_obj, py::handle argmax_obj,
                                  const std::vector<Index>& in_shape, const Window& win) {
  const char* fn = "max_pool_backward";
  const Pool2D p = geometry(fn, in_shape, win);
  const auto out_shape = pooled_shape(in_shape, p);
  auto dy = input_array<T>(fn, {"dy", dy_obj});
  require_shape(fn, "dy", dy, out_shape);
  auto argmax = argmax_arg(fn, argmax_obj, out_shape);
  auto dx = new_array<T>(checked_shape(fn, in_shape, sizeof(T)));
  if (dx.size() != 0) {  // (empty: no loop over a long empty axis)
    py::gil_scoped_release nogil;
    max_pool_backward<T>(p, argmax.data(), dy.data(), dx.mutable_data());
  }
  return std::move(dx);
}

template <typename T>
py::object average_pool_impl(py::handle x_obj, const Window& win) {
  const char* fn = "average_pool";
  auto x = input_array<T>(fn, {"inputs", x_obj});
  const auto shape = shape_of(x);
  const Pool2D p = geometry(fn, shape, win);
  auto y = new_array<T>(pooled_shape(shape, p));
  if (y.size() != 0) {  // (empty: no loop over a long empty axis)
    py::gil_scoped_release nogil;
    average_pool_forward<T>(p, x.data(), y.mutable_data());
  }
  return std::move(y);
}

template <typename T>
py::object average_pool_backward_impl(py::handle dy_obj, const std::vector<Index>& in_shape,
                                      const Window& win) {
  const char* fn = "average_pool_backward";
  const Pool2D p = geometry(fn, in_shape, win);
  auto dy = input_array<T>(fn, {"dy", dy_obj});
  require_shape(fn, "dy", dy, pooled_shape(in_shape, p));
  auto dx = new_array<T>(checked_shape(fn, in_shape, sizeof(T)));
  if (dx.size() != 0) {  // (empty: no loop over a long empty axis)
    py::gil_scoped_release nogil;
    average_pool_backward<T>(p, dy.data(), dx.mutable_data());
  }
  return std::move(dx);
}

// (batch, steps, channels) of a 3-D or 4-D input to a global pooling (steps = H·W).
struct Global {
  Index batch, steps, channels;
};

Global global_dims(const char* fn, const char* name, const std::vector<Index>& shape) {
  if (shape.size() != 3 && shape.size() != 4)
    throw py::value_error(cat(fn, ": '", name, "' must have 3 dimensions (batch, steps, channels) "
                              "or 4 (batch, height, width, channels), got ", shape.size(),
                              " (shape ", shape_str(shape), ")"));
  for (const Index size : shape)
    if (size < 0)
      throw py::value_error(cat(fn, ": '", name, "' must hold sizes >= 0, got ", shape_str(shape)));
  const Index steps =
      shape.size() == 3 ? shape[1] : checked_mul(fn, cat("'", name, "' height × width"), shape[1], shape[2]);
  if (steps == 0)
    throw py::value_error(cat(fn, ": '", name, "' of shape ", shape_str(shape),
                              " has no positions to pool over"));
  if (steps > INT32_MAX)
    throw py::value_error(cat(fn, ": '", name, "' has too many positions (", steps,
                              ") for int32 indices"));
  return {shape[0], steps, shape.back()};
}

template <typename T>
py::object global_max_pool_impl(py::handle x_obj, bool with_argmax) {
  const char* fn = "global_max_pool";
  auto x = input_array<T>(fn, {"inputs", x_obj});
  const Global g = global_dims(fn, "inputs", shape_of(x));
  auto y = new_array<T>({g.batch, g.channels});
  py::array_t<int32_t> argmax;
  if (with_argmax) argmax = new_array<int32_t>({g.batch, g.channels});
  if (y.size() != 0) {  // (empty: no loop over a long empty axis)
    py::gil_scoped_release nogil;
    global_max_pool_forward<T>(g.batch, g.steps, g.channels, x.data(), y.mutable_data(),
                               with_argmax ? argmax.mutable_data() : nullptr);
  }
  if (with_argmax) return py::make_tuple(std::move(y), std::move(argmax));
  return std::move(y);
}

template <typename T>
py::object global_max_pool_backward_impl(py::handle dy_obj, py::handle argmax_obj,
                                         const std::vector<Index>& in_shape) {
  const char* fn = "global_max_pool_backward";
  const Global g = global_dims(fn, "input_shape", in_shape);
  auto dy = input_array<T>(fn, {"dy", dy_obj});
  require_shape(fn, "dy", dy, {g.batch, g.channels});
  auto argmax = argmax_arg(fn, argmax_obj, {g.batch, g.channels});
  auto dx = new_array<T>(checked_shape(fn, in_shape, sizeof(T)));
  if (dx.size() != 0) {  // (empty: no loop over a long empty axis)
    py::gil_scoped_release nogil;
    global_max_pool_backward<T>(g.batch, g.steps, g.channels, argmax.data(), dy.data(),
                                dx.mutable_data());
  }
  return std::move(dx);
}

template <typename T>
py::object global_average_pool_impl(py::handle x_obj) {
  const char* fn = "global_average_pool";
  auto x = input_array<T>(fn, {"inputs", x_obj});
  const Global g = global_dims(fn, "inputs", shape_of(x));
  auto y = new_array<T>({g.batch, g.channels});
  if (y.size() != 0) {  // (empty: no loop over a long empty axis)
    py::gil_scoped_release nogil;
    global_average_pool_forward<T>(g.batch, g.steps, g.channels, x.data(), y.mutable_data());
  }
  return std::move(y);
}

template <typename T>
py::object global_average_pool_backward_impl(py::handle dy_obj, const std::vector<Index>& in_shape) {
  const char* fn = "global_average_pool_backward";
  const Global g = global_dims(fn, "input_shape", in_shape);
  auto dy = input_array<T>(fn, {"dy", dy_obj});
  require_shape(fn, "dy", dy, {g.batch, g.channels});
  auto dx = new_array<T>(checked_shape(fn, in_shape, sizeof(T)));
  if (dx.size() != 0) {  // (empty: no loop over a long empty axis)
    py::gil_scoped_release nogil;
    global_average_pool_backward<T>(g.batch, g.steps, g.channels, dy.data(), dx.mutable_data());
  }
  return std::move(dx);
}

Pad2D pad_args(const char* fn, py::handle top, py::handle bottom, py::handle left, py::handle right) {
  return {int_arg(fn, "top", top, 0), int_arg(fn, "bottom", bottom, 0),
          int_arg(fn, "left", left, 0), int_arg(fn, "right", right, 0)};
}

template <typename T>
py::object zero_pad2d_impl(py::handle x_obj, const Pad2D& pad) {
  const char* fn = "zero_pad2d";
  auto x = input_array<T>(fn, {"inputs", x_obj});
  require_ndim(fn, "inputs", x, 4, 4);
  const auto s = shape_of(x);
  const Index h = checked_add(fn, "the padded height", s[1], checked_add(fn, "the padding (top + bottom)", pad.top, pad.bottom));
  const Index w = checked_add(fn, "the padded width", s[2], checked_add(fn, "the padding (left + right)", pad.left, pad.right));
  auto y = new_array<T>(checked_shape(fn, {s[0], h, w, s[3]}, sizeof(T)));
  if (y.size() != 0) {  // (empty: no loop over a long empty axis)
    py::gil_scoped_release nogil;
    zero_pad2d_forward<T>(s[0], s[1], s[2], s[3], pad, x.data(), y.mutable_data());
  }
  return std::move(y);
}

template <typename T>
py::object zero_pad2d_backward_impl(py::handle dy_obj, const Pad2D& pad) {
  const char* fn = "zero_pad2d_backward";
  auto dy = input_array<T>(fn, {"dy", dy_obj});
  require_ndim(fn, "dy", dy, 4, 4);
  const auto s = shape_of(dy);
  if (s[1] < pad.top || s[1] - pad.top < pad.bottom || s[2] < pad.left || s[2] - pad.left < pad.right)
    throw py::value_error(cat(fn, ": 'dy' of shape ", shape_str(s), " is smaller than the padding (",
                              pad.top, ", ", pad.bottom, "), (", pad.left, ", ", pad.right, ")"));
  const Index h = s[1] - pad.top - pad.bottom, w = s[2] - pad.left - pad.right;
  auto dx = new_array<T>(checked_shape(fn, {s[0], h, w, s[3]}, sizeof(T)));
  if (dx.size() != 0) {  // (empty: no loop over a long empty axis)
    py::gil_scoped_release nogil;
    zero_pad2d_backward<T>(s[0], h, w, s[3], pad, dy.data(), dx.mutable_data());
  }
  return std::move(dx);
}

template <typename T>
py::object upsample2d_impl(py::handle x_obj, Index sh, Index sw) {
  const char* fn = "upsample2d";
  auto x = input_array<T>(fn, {"inputs", x_obj});
  require_ndim(fn, "inputs", x, 4, 4);
  const auto s = shape_of(x);
  auto y = new_array<T>(checked_shape(fn, {s[0], checked_mul(fn, "the upsampled height (height × size_h)", s[1], sh),
                                            checked_mul(fn, "the upsampled width (width × size_w)", s[2], sw), s[3]}, sizeof(T)));
  if (y.size() != 0) {  // (empty: no loop over a long empty axis)
    py::gil_scoped_release nogil;
    upsample2d_forward<T>(s[0], s[1], s[2], s[3], sh, sw, x.data(), y.mutable_data());
  }
  return std::move(y);
}

template <typename T>
py::object upsample2d_backward_impl(py::handle dy_obj, Index sh, Index sw) {
  const char* fn = "upsample2d_backward";
  auto dy = input_array<T>(fn, {"dy", dy_obj});
  require_ndim(fn, "dy", dy, 4, 4);
  const auto s = shape_of(dy);
  if (s[1] % sh || s[2] % sw)
    throw py::value_error(cat(fn, ": 'dy' of shape ", shape_str(s), " is not a multiple of size (",
                              sh, ", ", sw, ") in height and width"));
  const Index h = s[1] / sh, w = s[2] / sw;
  auto dx = new_array<T>(checked_shape(fn, {s[0], h, w, s[3]}, sizeof(T)));
  if (dx.size() != 0) {  // (empty: no loop over a long empty axis)
    py::gil_scoped_release nogil;
    upsample2d_backward<T>(s[0], h, w, s[3], sh, sw, dy.data(), dx.mutable_data());
  }
  return std::move(dx);
}

// x (batch, channels, *spatial) <-> (batch, *spatial, channels); to_last picks the direction.
template <typename T>
py::object move_channels_impl(py::handle x_obj, bool to_last) {
  const char* fn = "move_channels";
  auto x = input_array<T>(fn, {"inputs", x_obj});
  require_ndim(fn, "inputs", x, 3, 8);
  auto s = shape_of(x);
  Index spatial = 1;
  for (size_t i = (to_last ? 2 : 1); i < s.size() - (to_last ? 0 : 1); ++i) spatial *= s[i];
  const Index channels = to_last ? s[1] : s.back();
  std::vector<Index> out(s.begin(), s.end());
  if (to_last) {
    out.erase(out.begin() + 1);
    out.push_back(channels);
  } else {
    out.pop_back();
    out.insert(out.begin() + 1, channels);
  }
  auto y = new_array<T>(checked_shape(fn, out, sizeof(T)));
  if (y.size() != 0) {
    py::gil_scoped_release nogil;
    if (to_last)
      transpose_batched<T>(s[0], channels, spatial, x.data(), y.mutable_data());
    else
      transpose_batched<T>(s[0], spatial, channels, x.data(), y.mutable_data());
  }
  return std::move(y);
}

}  // namespace

void register_pool(py::module_& m) {
  m.def(
      "move_channels",
      [](py::handle x, bool to_last) {
        return dispatch(resolve_dtype("move_channels", {{"inputs", x}}),
                        [&](auto t) { return move_channels_impl<decltype(t)>(x, to_last); });
      },
      py::arg("inputs"), py::arg("to_last"));
  m.def(
      "max_pool",
      [](py::handle x, py::handle ph, py::handle pw, py::handle sh, py::handle sw,
         const std::string& padding, bool return_argmax) {
        const Window win = window_args("max_pool", ph, pw, sh, sw, padding);
        return dispatch(resolve_dtype("max_pool", {{"inputs", x}}), [&](auto t) {
          return max_pool_impl<decltype(t)>(x, win, return_argmax);
        });
      },
      py::arg("inputs"), py::arg("pool_h"), py::arg("pool_w"), py::arg("stride_h"),
      py::arg("stride_w"), py::arg("padding") = "valid", py::arg("return_argmax") = false);
  m.def(
      "max_pool_backward",
      [](py::handle dy, py::handle argmax, py::handle input_shape, py::handle ph, py::handle pw,
         py::handle sh, py::handle sw, const std::string& padding) {
        const char* fn = "max_pool_backward";
        const Window win = window_args(fn, ph, pw, sh, sw, padding);
        const auto shape = shape_arg(fn, "input_shape", input_shape);
        return dispatch(resolve_dtype(fn, {{"dy", dy}}), [&](auto t) {
          return max_pool_backward_impl<decltype(t)>(dy, argmax, shape, win);
        });
      },
      py::arg("dy"), py::arg("argmax"), py::arg("input_shape"), py::arg("pool_h"),
      py::arg("pool_w"), py::arg("stride_h"), py::arg("stride_w"), py::arg("padding") = "valid");
  m.def(
      "average_pool",
      [](py::handle x, py::handle ph, py::handle pw, py::handle sh, py::handle sw,
         const std::string& padding) {
        const Window win = window_args("average_pool", ph, pw, sh, sw, padding);
        return dispatch(resolve_dtype("average_pool", {{"inputs", x}}), [&](auto t) {
          return average_pool_impl<decltype(t)>(x, win);
        });
      },
      py::arg("inputs"), py::arg("pool_h"), py::arg("pool_w"), py::arg("stride_h"),
      py::arg("stride_w"), py::arg("padding") = "valid");
  m.def(
      "average_pool_backward",
      [](py::handle dy, py::handle input_shape, py::handle ph, py::handle pw, py::handle sh,
         py::handle sw, const std::string& padding) {
        const char* fn = "average_pool_backward";
        const Window win = window_args(fn, ph, pw, sh, sw, padding);
        const auto shape = shape_arg(fn, "input_shape", input_shape);
        return dispatch(resolve_dtype(fn, {{"dy", dy}}), [&](auto t) {
          return average_pool_backward_impl<decltype(t)>(dy, shape, win);
        });
      },
      py::arg("dy"), py::arg("input_shape"), py::arg("pool_h"), py::arg("pool_w"),
      py::arg("stride_h"), py::arg("stride_w"), py::arg("padding") = "valid");
  m.def(
      "global_max_pool",
      [](py::handle x, bool return_argmax) {
        return dispatch(resolve_dtype("global_max_pool", {{"inputs", x}}), [&](auto t) {
          return global_max_pool_impl<decltype(t)>(x, return_argmax);
        });
      },
      py::arg("inputs"), py::arg("return_argmax") = false);
  m.def(
      "global_max_pool_backward",
      [](py::handle dy, py::handle argmax, py::handle input_shape) {
        const char* fn = "global_max_pool_backward";
        const auto shape = shape_arg(fn, "input_shape", input_shape);
        return dispatch(resolve_dtype(fn, {{"dy", dy}}), [&](auto t) {
          return global_max_pool_backward_impl<decltype(t)>(dy, argmax, shape);
        });
      },
      py::arg("dy"), py::arg("argmax"), py::arg("input_shape"));
  m.def(
      "global_average_pool",
      [](py::handle x) {
        return dispatch(resolve_dtype("global_average_pool", {{"inputs", x}}),
                        [&](auto t) { return global_average_pool_impl<decltype(t)>(x); });
      },
      py::arg("inputs"));
  m.def(
      "global_average_pool_backward",
      [](py::handle dy, py::handle input_shape) {
        const char* fn = "global_average_pool_backward";
        const auto shape = shape_arg(fn, "input_shape", input_shape);
        return dispatch(resolve_dtype(fn, {{"dy", dy}}), [&](auto t) {
          return global_average_pool_backward_impl<decltype(t)>(dy, shape);
        });
      },
      py::arg("dy"), py::arg("input_shape"));
  m.def(
      "zero_pad2d",
      [](py::handle x, py::handle top, py::handle bottom, py::handle left, py::handle right) {
        const Pad2D pad = pad_args("zero_pad2d", top, bottom, left, right);
        return dispatch(resolve_dtype("zero_pad2d", {{"inputs", x}}),
                        [&](auto t) { return zero_pad2d_impl<decltype(t)>(x, pad); });
      },
      py::arg("inputs"), py::arg("top"), py::arg("bottom"), py::arg("left"), py::arg("right"));
  m.def(
      "zero_pad2d_backward",
      [](py::handle dy, py::handle top, py::handle bottom, py::handle left, py::handle right) {
        const Pad2D pad = pad_args("zero_pad2d_backward", top, bottom, left, right);
        return dispatch(resolve_dtype("zero_pad2d_backward", {{"dy", dy}}),
                        [&](auto t) { return zero_pad2d_backward_impl<decltype(t)>(dy, pad); });
      },
      py::arg("dy"), py::arg("top"), py::arg("bottom"), py::arg("left"), py::arg("right"));
  m.def(
      "upsample2d",
      [](py::handle x, py::handle size_h, py::handle size_w) {
        const Index sh = int_arg("upsample2d", "size_h", size_h, 1);
        const Index sw = int_arg("upsample2d", "size_w", size_w, 1);
        return dispatch(resolve_dtype("upsample2d", {{"inputs", x}}),
                        [&](auto t) { return upsample2d_impl<decltype(t)>(x, sh, sw); });
      },
      py::arg("inputs"), py::arg("size_h"), py::arg("size_w"));
  m.def(
      "upsample2d_backward",
      [](py::handle dy, py::handle size_h, py::handle size_w) {
        const Index sh = int_arg("upsample2d_backward", "size_h", size_h, 1);
        const Index sw = int_arg("upsample2d_backward", "size_w", size_w, 1);
        return dispatch(resolve_dtype("upsample2d_backward", {{"dy", dy}}),
                        [&](auto t) { return upsample2d_backward_impl<decltype(t)>(dy, sh, sw); });
      },
      py::arg("dy"), py::arg("size_h"), py::arg("size_w"));
}

}  // namespace fastnn::bindings
