// Python bindings of the int8 products (fastnn.ops.quantized converts and validates the
// user's arguments; these check dtypes and shapes again, so that a direct call cannot crash).
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <algorithm>
#include <stdexcept>

#include "activation_args.hpp"
#include "fastnn/qgemm.hpp"

namespace fastnn::bindings {
namespace {

template <typename T>
py::array_t<T> exact_array(const char* fn, const char* name, py::handle value, const char* dtype) {
  if (!py::isinstance<py::array_t<T>>(value) ||
      !(py::reinterpret_borrow<py::array>(value).flags() & py::array::c_style))
    throw py::type_error(cat(fn, ": '", name, "' must be a C-contiguous ", dtype, " array, got ",
                             describe(value)));
  return py::reinterpret_borrow<py::array_t<T>>(value);
}

struct PackedArgs {
  py::array_t<int8_t> data;
  py::array_t<int32_t> sums;
  Int8Packed view;
};

PackedArgs packed_args(const char* fn, py::handle packed, py::handle col_sums, Index k, Index n) {
  PackedArgs p;
  p.data = exact_array<int8_t>(fn, "packed", packed, "int8");
  p.sums = exact_array<int32_t>(fn, "col_sums", col_sums, "int32");
  const Index k4 = int8_k4(k), n16 = int8_n16(n);
  require_shape(fn, "packed", p.data, {n16 / 16, k4 / 4, 16, 4});
  require_shape(fn, "col_sums", p.sums, {n16});
  p.view = Int8Packed{p.data.data(), p.sums.data(), k, n};
  return p;
}

/// The per-column kernel scales and optional bias of a quantized product (n values each).
struct ScaleBias {
  py::array_t<float> scale, bias;
  bool has_bias = false;
  const float* bias_data() const { return has_bias ? bias.data() : nullptr; }
};

ScaleBias scale_bias_args(const char* fn, py::handle scale_obj, py::handle bias_obj, Index n) {
  ScaleBias sb;
  sb.scale = exact_array<float>(fn, "kernel_scale", scale_obj, "float32");
  require_shape(fn, "kernel_scale", sb.scale, {n});
  if (!bias_obj.is_none()) {
    sb.bias = exact_array<float>(fn, "bias", bias_obj, "float32");
    require_shape(fn, "bias", sb.bias, {n});
    sb.has_bias = true;
  }
  return sb;
}

Int8Path path_named(const std::string& name) {
  if (name == "vnni") return Int8Path::Vnni;
  if (name == "avx2") return Int8Path::Avx2;
  if (name == "scalar") return Int8Path::Scalar;
  throw py::value_error(cat("set_int8_path: 'path' must be 'vnni', 'avx2' or 'scalar', got '", name, "'"));
}

}  // namespace

void register_qgemm(py::module_& m) {
  m.def(
      "int8_pack",
      [](py::handle b_obj) {
        const char* fn = "int8_pack";
        auto b = exact_array<int8_t>(fn, "b", b_obj, "int8");
        require_ndim(fn, "b", b, 2, 2);
        const Index k = b.shape(0), n = b.shape(1);
        if (k > 65536) throw py::value_error(cat(fn, ": 'b' has k=", k, " rows; at most 65536 (exact int32 sums)"));
        const Index k4 = int8_k4(k), n16 = int8_n16(n);
        auto packed = new_array<int8_t>(checked_shape(fn, {n16 / 16, k4 / 4, 16, 4}, 1));
        auto sums = new_array<int32_t>({n16});
        {
          py::gil_scoped_release nogil;
          int8_pack(b.data(), k, n, packed.mutable_data(), sums.mutable_data());
        }
        return py::make_tuple(std::move(packed), std::move(sums));
      },
      py::arg("b"), "(packed, col_sums) of an int8 (k, n) matrix, in the layout int8 products read.");
  m.def(
      "int8_matmul",
      [](py::handle a_obj, py::handle packed, py::handle col_sums, Index n) {
        const char* fn = "int8_matmul";
        auto a = exact_array<int8_t>(fn, "a", a_obj, "int8");
        require_ndim(fn, "a", a, 2, 2);
        const Index m = a.shape(0), k = a.shape(1);
        const PackedArgs p = packed_args(fn, packed, col_sums, k, n);
        auto c = new_array<int32_t>(checked_shape(fn, {m, n}, 4));
        {
          py::gil_scoped_release nogil;
          int8_gemm(m, a.data(), k, p.view, c.mutable_data(), n);
        }
        return c;
      },
      py::arg("a"), py::arg("packed"), py::arg("col_sums"), py::arg("n"), "a (m, k) int8 @ the packed b: int32 (m, n).");
  m.def(
      "int8_quantize_rows",
      [](py::handle x_obj) {
        const char* fn = "int8_quantize_rows";
        auto x = exact_array<float>(fn, "x", x_obj, "float32");
        require_ndim(fn, "x", x, 2, 2);
        const Index m = x.shape(0), k = x.shape(1);
        auto q = new_array<int8_t>({m, k});
        auto scale = new_array<float>({m});
        {
          py::gil_scoped_release nogil;
          int8_quantize_rows(x.data(), m, k, q.mutable_data(), scale.mutable_data());
        }
        return py::make_tuple(std::move(q), std::move(scale));
      },
      py::arg("x"), "(q, scale): Keras' abs_max_quantize of each row of a float32 (m, k) matrix.");
  m.def(
      "int8_dense",
      [](py::handle x_obj, py::handle packed, py::handle col_sums, Index n, py::handle scale_obj,
         py::handle bias_obj, int kind, double alpha) {
        const char* fn = "int8_dense";
        const Activation act = make_activation(fn, kind, alpha);
        auto x = exact_array<float>(fn, "x", x_obj, "float32");
        require_ndim(fn, "x", x, 2, 2);
        const Index m = x.shape(0), k = x.shape(1);
        const PackedArgs p = packed_args(fn, packed, col_sums, k, n);
        const ScaleBias sb = scale_bias_args(fn, scale_obj, bias_obj, n);
        auto y = new_array<float>(checked_shape(fn, {m, n}, 4));
        {
          py::gil_scoped_release nogil;
          int8_dense_forward(x.data(), m, p.view, sb.scale.data(), sb.bias_data(), act,
                             y.mutable_data());
        }
        return y;
      },
      py::arg("x"), py::arg("packed"), py::arg("col_sums"), py::arg("n"), py::arg("kernel_scale"), py::arg("bias"),
      py::arg("kind"), py::arg("alpha") = 0.0,
      "act(int8(x) @ packed / (x_scale * kernel_scale) + bias), x quantized per row.");
  m.def(
      "int8_conv",
      [](py::handle x_obj, py::handle rows_obj, py::handle taps_obj, Index channels, py::handle packed,
         py::handle col_sums, Index n, py::handle scale_obj, py::handle bias_obj, int kind, double alpha) {
        const char* fn = "int8_conv";
        const Activation act = make_activation(fn, kind, alpha);
        auto x = exact_array<float>(fn, "x", x_obj, "float32");
        auto rows = exact_array<int64_t>(fn, "row_offsets", rows_obj, "int64");
        auto taps = exact_array<int64_t>(fn, "tap_offsets", taps_obj, "int64");
        require_ndim(fn, "row_offsets", rows, 1, 1);
        require_ndim(fn, "tap_offsets", taps, 1, 1);
        if (channels <= 0) throw py::value_error(cat(fn, ": 'channels' must be > 0, got ", channels));
        const Index m = rows.shape(0), t = taps.shape(0);
        const PackedArgs p = packed_args(fn, packed, col_sums, checked_mul(fn, "taps × channels", t, channels), n);
        // every gathered run inside x
        if (m && t) {
          const auto* r = rows.data();
          const auto* o = taps.data();
          const auto [rmin, rmax] = std::minmax_element(r, r + m);
          const auto [omin, omax] = std::minmax_element(o, o + t);
          if (*rmin < 0 || *omin < 0 || *rmax > x.size() || *omax > x.size() ||
              *rmax + *omax + channels > x.size())
            throw py::value_error(cat(fn, ": the offsets reach outside 'x' (", x.size(), " values)"));
        }
        const ScaleBias sb = scale_bias_args(fn, scale_obj, bias_obj, n);
        auto y = new_array<float>(checked_shape(fn, {m, n}, 4));
        GatheredRows g;
        g.x = x.data();
        g.row_offsets = reinterpret_cast<const Index*>(rows.data());
        g.tap_offsets = reinterpret_cast<const Index*>(taps.data());
        g.taps = t;
        g.channels = channels;
        {
          py::gil_scoped_release nogil;
          int8_conv_forward(g, m, p.view, sb.scale.data(), sb.bias_data(), act,
                            y.mutable_data());
        }
        return y;
      },
      py::arg("x"), py::arg("row_offsets"), py::arg("tap_offsets"), py::arg("channels"), py::arg("packed"),
      py::arg("col_sums"), py::arg("n"), py::arg("kernel_scale"), py::arg("bias"), py::arg("kind"),
      py::arg("alpha") = 0.0,
      "The quantized convolution over gathered patch rows (see fastnn.quantizers.int8_conv).");
  m.def("int8_path", [] { return std::string(int8_path_name(int8_path())); },
        "The int8 path products use now: 'vnni', 'avx2' or 'scalar'.");
  m.def("int8_best_path", [] { return std::string(int8_path_name(int8_best_path())); },
        "The fastest int8 path this CPU runs.");
  m.def(
      "set_int8_path",
      [](const std::string& name) {
        try {
          set_int8_path(path_named(name));
        } catch (const std::invalid_argument& e) {
          throw py::value_error(cat("set_int8_path: ", e.what()));
        }
      },
      py::arg("path"), "Forces the int8 path (tests compare them); the CPU must support it.");
}

}  // namespace fastnn::bindings
