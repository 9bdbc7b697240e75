// Python bindings of the image warp kernels.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cmath>
#include <string>
#include <utility>

#include "args.hpp"
#include "fastnn/image.hpp"

namespace fastnn::bindings {
namespace {

Interpolation parse_interpolation(const char* fn, const std::string& name) {
  if (name == "nearest") return Interpolation::Nearest;
  if (name == "bilinear") return Interpolation::Bilinear;
  throw py::value_error(cat(fn, ": 'interpolation' must be one of 'nearest', 'bilinear', got '",
                            name, "'"));
}

FillMode parse_fill_mode(const char* fn, const std::string& name) {
  if (name == "constant") return FillMode::Constant;
  if (name == "nearest") return FillMode::Nearest;
  if (name == "reflect") return FillMode::Reflect;
  if (name == "mirror") return FillMode::Mirror;
  if (name == "wrap") return FillMode::Wrap;
  throw py::value_error(cat(fn, ": 'fill_mode' must be one of 'constant', 'nearest', 'reflect', "
                            "'mirror', 'wrap', got '", name, "'"));
}

// A (height, width) pair of sizes >= min_size.
std::pair<Index, Index> parse_size(const char* fn, const char* what, py::handle value,
                                   Index min_size) {
  return int_pair_arg(fn, what, value, min_size);
}

// The transforms as an (n, 8) float64 array: one row per image, or one (8,) row for all.
py::array_t<double> transforms_for(const char* fn, py::handle value, Index n) {
  auto t = input_array<double>(fn, {"transform", value});
  const auto shape = shape_of(t);
  const bool one = shape.size() == 1 && shape[0] == 8;
  if (!one && !(shape.size() == 2 && shape[0] == n && shape[1] == 8))
    throw py::value_error(cat(fn, ": 'transform' must have shape (8,) or (", n,
                              ", 8) (one row [a0, a1, a2, b0, b1, b2, c0, c1] per image), got ",
                              shape_str(shape)));
  const double* src = t.data();
  for (Index i = 0; i < t.size(); ++i)
    if (!std::isfinite(src[i]))
      throw py::value_error(cat(fn, ": 'transform' contains NaN or inf"));
  if (!one) return t;
  auto rows = new_array<double>({n, 8});
  double* dst = rows.mutable_data();
  for (Index r = 0; r < n; ++r)
    for (int k = 0; k < 8; ++k) dst[8 * r + k] = src[k];
  return rows;
}

template <typename T>
py::object forward(py::handle images_obj, py::handle transform_obj, const std::string& interp,
                   const std::string& fill, double fill_value, py::handle output_size) {
  const char* fn = "image_affine_transform";
  const Interpolation interpolation = parse_interpolation(fn, interp);
  const FillMode fill_mode = parse_fill_mode(fn, fill);
  auto images = input_array<T>(fn, {"images", images_obj});
  require_ndim(fn, "images", images, 4, 4);
  WarpShape s{images.shape(0), images.shape(1), images.shape(2), images.shape(3),
              images.shape(1), images.shape(2)};
  if (s.in_h < 1 || s.in_w < 1)
    throw py::value_error(cat(fn, ": 'images' must have height and width >= 1 (NHWC), got shape ",
                              shape_str(shape_of(images))));
  if (!output_size.is_none()) std::tie(s.out_h, s.out_w) = parse_size(fn, "output_size", output_size, 0);
  auto transforms = transforms_for(fn, transform_obj, s.n);
  auto out = new_array<T>(checked_shape(fn, {s.n, s.out_h, s.out_w, s.channels}, sizeof(T)));
  {
    py::gil_scoped_release nogil;
    affine_transform_forward<T>(images.data(), transforms.data(), out.mutable_data(), s,
                                interpolation, fill_mode, T(fill_value));
  }
  return std::move(out);
}

template <typename T>
py::object backward(py::handle dy_obj, py::handle transform_obj, py::handle input_size,
                    const std::string& interp, const std::string& fill) {
  const char* fn = "image_affine_transform_backward";
  const Interpolation interpolation = parse_interpolation(fn, interp);
  const FillMode fill_mode = parse_fill_mode(fn, fill);
  auto dy = input_array<T>(fn, {"dy", dy_obj});
  require_ndim(fn, "dy", dy, 4, 4);
  const auto [in_h, in_w] = parse_size(fn, "input_size", input_size, 1);
  const WarpShape s{dy.shape(0), in_h, in_w, dy.shape(3), dy.shape(1), dy.shape(2)};
  auto transforms = transforms_for(fn, transform_obj, s.n);
  auto dx = new_array<T>(checked_shape(fn, {s.n, s.in_h, s.in_w, s.channels}, sizeof(T)));
  {
    py::gil_scoped_release nogil;
    affine_transform_backward<T>(dy.data(), transforms.data(), dx.mutable_data(), s,
                                 interpolation, fill_mode);
  }
  return std::move(dx);
}

// Per-image flags (bool or int array-likes) as n bytes.
py::array_t<uint8_t> flags_for(const char* fn, const char* what, py::handle value, Index n) {
  py::array flags = py::module_::import("numpy").attr("asarray")(value);
  if (flags.dtype().kind() != 'b' && flags.dtype().kind() != 'i' && flags.dtype().kind() != 'u')
    throw py::type_error(cat(fn, ": '", what, "' must hold booleans, got ", describe(flags)));
  if (flags.ndim() != 1 || flags.shape(0) != n)
    throw py::value_error(cat(fn, ": '", what, "' must have shape (", n, ",) (one flag per image), got ",
                              shape_str(shape_of(flags))));
  return py::array_t<uint8_t, py::array::c_style | py::array::forcecast>::ensure(
      py::module_::import("numpy").attr("not_equal")(flags, 0));
}

template <typename T>
py::object flip(py::handle images_obj, py::handle horizontal, py::handle vertical) {
  const char* fn = "image_flip";
  auto x = input_array<T>(fn, {"images", images_obj});
  require_ndim(fn, "images", x, 4, 4);
  const Index n = x.shape(0);
  auto h = flags_for(fn, "horizontal", horizontal, n);
  auto v = flags_for(fn, "vertical", vertical, n);
  auto y = new_array<T>(shape_of(x));
  {
    py::gil_scoped_release nogil;
    flip_images<T>(x.data(), h.data(), v.data(), y.mutable_data(), n, x.shape(1), x.shape(2),
                   x.shape(3));
  }
  return std::move(y);
}

// (low, high) of a contrast call, as T.
template <typename T>
std::pair<T, T> value_range(const char* fn, double low, double high) {
  if (!(low <= high))
    throw py::value_error(cat(fn, ": the value range must have low <= high, got (", low, ", ", high, ")"));
  return {T(low), T(high)};
}

template <typename T>
py::array_t<T> factors_for(const char* fn, py::handle value, Index n) {
  auto f = input_array<T>(fn, {"factors", value});
  if (f.size() != n)
    throw py::value_error(cat(fn, ": 'factors' must hold ", n, " values (one per image), got ",
                              describe(f)));
  return f;
}

template <typename T>
py::object contrast(py::handle images_obj, py::handle factors_obj, double low, double high) {
  const char* fn = "image_contrast";
  const auto [lo, hi] = value_range<T>(fn, low, high);
  auto x = input_array<T>(fn, {"images", images_obj});
  require_ndim(fn, "images", x, 4, 4);
  auto f = factors_for<T>(fn, factors_obj, x.shape(0));
  auto y = new_array<T>(shape_of(x));
  {
    py::gil_scoped_release nogil;
    contrast_forward<T>(x.data(), f.data(), y.mutable_data(), x.shape(0), x.shape(1) * x.shape(2),
                        x.shape(3), lo, hi);
  }
  return std::move(y);
}

template <typename T>
py::object contrast_grad(py::handle images_obj, py::handle dy_obj, py::handle factors_obj,
                         double low, double high) {
  const char* fn = "image_contrast_backward";
  const auto [lo, hi] = value_range<T>(fn, low, high);
  auto x = input_array<T>(fn, {"images", images_obj});
  require_ndim(fn, "images", x, 4, 4);
  auto dy = input_array<T>(fn, {"dy", dy_obj});
  require_shape(fn, "dy", dy, shape_of(x));
  auto f = factors_for<T>(fn, factors_obj, x.shape(0));
  auto dx = new_array<T>(shape_of(x));
  {
    py::gil_scoped_release nogil;
    contrast_backward<T>(x.data(), dy.data(), f.data(), dx.mutable_data(), x.shape(0),
                         x.shape(1) * x.shape(2), x.shape(3), lo, hi);
  }
  return std::move(dx);
}

}  // namespace

void register_image(py::module_& m) {
  m.def(
      "image_affine_transform",
      [](py::handle images, py::handle transform, const std::string& interpolation,
         const std::string& fill_mode, double fill_value, py::handle output_size) {
        return dispatch(resolve_dtype("image_affine_transform", {{"images", images}}),
                        [&](auto t) {
                          return forward<decltype(t)>(images, transform, interpolation, fill_mode,
                                                      fill_value, output_size);
                        });
      },
      py::arg("images"), py::arg("transform"), py::arg("interpolation") = "bilinear",
      py::arg("fill_mode") = "constant", py::arg("fill_value") = 0.0,
      py::arg("output_size") = py::none(),
      "Warps NHWC images: output (y, x) reads the input at transform·(x, y, 1) (see "
      "fastnn.ops.image.affine_transform).");
  m.def(
      "image_affine_transform_backward",
      [](py::handle dy, py::handle transform, py::handle input_size,
         const std::string& interpolation, const std::string& fill_mode) {
        return dispatch(resolve_dtype("image_affine_transform_backward", {{"dy", dy}}),
                        [&](auto t) {
                          return backward<decltype(t)>(dy, transform, input_size, interpolation,
                                                       fill_mode);
                        });
      },
      py::arg("dy"), py::arg("transform"), py::arg("input_size"),
      py::arg("interpolation") = "bilinear", py::arg("fill_mode") = "constant",
      "The input gradient of image_affine_transform (the adjoint warp of dy).");
  m.def(
      "image_flip",
      [](py::handle images, py::handle horizontal, py::handle vertical) {
        return dispatch(resolve_dtype("image_flip", {{"images", images}}), [&](auto t) {
          return flip<decltype(t)>(images, horizontal, vertical);
        });
      },
      py::arg("images"), py::arg("horizontal"), py::arg("vertical"),
      "Reverses image i's columns where horizontal[i] and its rows where vertical[i].");
  m.def(
      "image_contrast",
      [](py::handle images, py::handle factors, double low, double high) {
        return dispatch(resolve_dtype("image_contrast", {{"images", images}}), [&](auto t) {
          return contrast<decltype(t)>(images, factors, low, high);
        });
      },
      py::arg("images"), py::arg("factors"), py::arg("low"), py::arg("high"),
      "clip((x - m)·factors[i] + m, low, high), m the per-image channel means.");
  m.def(
      "image_contrast_backward",
      [](py::handle images, py::handle dy, py::handle factors, double low, double high) {
        return dispatch(resolve_dtype("image_contrast_backward", {{"images", images}, {"dy", dy}}),
                        [&](auto t) {
                          return contrast_grad<decltype(t)>(images, dy, factors, low, high);
                        });
      },
      py::arg("images"), py::arg("dy"), py::arg("factors"), py::arg("low"), py::arg("high"),
      "The input gradient of image_contrast.");
}

}  // namespace fastnn::bindings
