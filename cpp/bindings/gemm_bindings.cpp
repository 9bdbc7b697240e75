// Python bindings of the GEMM kernels: matmul (NumPy's matmul semantics plus transpose
// flags, out= and accumulate) and linear (x·w + b over the last axis of x).
#include <pybind11/pybind11.h>

#include <algorithm>
#include <vector>

#include "args.hpp"
#include "fastnn/gemm.hpp"

namespace fastnn::bindings {
namespace {

// Row-major offsets (in elements) of each batch entry of `shape` broadcast to `out_batch`;
// `matrix_size` elements per matrix.
std::vector<Index> batch_offsets(const std::vector<Index>& batch, const std::vector<Index>& out_batch,
                                 Index matrix_size) {
  Index total = 1;
  for (Index d : out_batch) total *= d;
  std::vector<Index> offsets(static_cast<size_t>(total), 0);
  const size_t nd = out_batch.size(), lead = nd - batch.size();
  // stride of each output batch dimension in this operand (0 where broadcast)
  std::vector<Index> stride(nd, 0);
  Index s = matrix_size;
  for (size_t d = nd; d-- > lead;) {
    const Index dim = batch[d - lead];
    stride[d] = dim == 1 ? 0 : s;
    s *= dim;
  }
  for (Index i = 0; i < total; ++i) {
    Index rest = i, off = 0;
    for (size_t d = nd; d-- > 0;) {
      off += (rest % out_batch[d]) * stride[d];
      rest /= out_batch[d];
    }
    offsets[static_cast<size_t>(i)] = off;
  }
  return offsets;
}

template <typename T>
py::object matmul_impl(py::handle a_obj, py::handle b_obj, bool trans_a, bool trans_b,
                       py::handle out_obj, bool accumulate) {
  const char* fn = "matmul";
  py::array_t<T> a = input_array<T>(fn, {"a", a_obj});
  py::array_t<T> b = input_array<T>(fn, {"b", b_obj});
  require_ndim(fn, "a", a, 1);
  require_ndim(fn, "b", b, 1);
  const auto a_shape = shape_of(a), b_shape = shape_of(b);
  const size_t a_nd = a_shape.size(), b_nd = b_shape.size();
  if (trans_a && a_nd < 2)
    throw py::value_error(cat(fn, ": transpose_a=True needs 'a' with at least 2 dimensions, got shape ",
                              shape_str(a_shape)));
  if (trans_b && b_nd < 2)
    throw py::value_error(cat(fn, ": transpose_b=True needs 'b' with at least 2 dimensions, got shape ",
                              shape_str(b_shape)));

  // Matrices as stored (a 1-D a is a row, a 1-D b a column, as in NumPy).
  const Index a_rows = a_nd >= 2 ? a_shape[a_nd - 2] : 1, a_cols = a_shape[a_nd - 1];
  const Index b_rows = b_nd >= 2 ? b_shape[b_nd - 2] : b_shape[0], b_cols = b_nd >= 2 ? b_shape[b_nd - 1] : 1;
  const Index m = trans_a ? a_cols : a_rows, k = trans_a ? a_rows : a_cols;
  const Index k_b = trans_b ? b_cols : b_rows, n = trans_b ? b_rows : b_cols;
  if (k != k_b)
    throw py::value_error(cat(fn, ": inner dimensions disagree: ", trans_a ? "transpose(a)" : "a",
                              " has ", k, " columns but ", trans_b ? "transpose(b)" : "b", " has ",
                              k_b, " rows (a.shape=", shape_str(a_shape),
                              ", b.shape=", shape_str(b_shape), ")"));

  // Broadcast the batch dimensions.
  const std::vector<Index> a_batch(a_shape.begin(), a_shape.end() - std::min<size_t>(a_nd, 2));
  const std::vector<Index> b_batch(b_shape.begin(), b_shape.end() - std::min<size_t>(b_nd, 2));
  std::vector<Index> out_batch(std::max(a_batch.size(), b_batch.size()), 1);
  for (size_t i = 0; i < out_batch.size(); ++i) {
    const size_t pos_a = a_batch.size() + i, pos_b = b_batch.size() + i;
    const Index da = pos_a >= out_batch.size() ? a_batch[pos_a - out_batch.size()] : 1;
    const Index db = pos_b >= out_batch.size() ? b_batch[pos_b - out_batch.size()] : 1;
    if (da != db && da != 1 && db != 1)
      throw py::value_error(cat(fn, ": batch dimensions do not broadcast: a has ", shape_str(a_batch),
                                " and b has ", shape_str(b_batch), " (a.shape=", shape_str(a_shape),
                                ", b.shape=", shape_str(b_shape), ")"));
    out_batch[i] = da == 1 ? db : da;
  }
  std::vector<Index> out_shape = out_batch;
  if (a_nd >= 2) out_shape.push_back(m);
  if (b_nd >= 2) out_shape.push_back(n);

  py::array_t<T> out;
  if (!out_obj.is_none()) {
    out = output_array<T>(fn, {"out", out_obj}, out_shape);
    require_no_overlap(fn, "out", out, "a", a);
    require_no_overlap(fn, "out", out, "b", b);
  } else if (accumulate) {
    throw py::value_error(cat(fn, ": accumulate=True adds the product into 'out'; pass out="));
  } else {
    out = py::array_t<T>(out_shape);
  }

  GemmArgs<T> p;
  p.m = m;
  p.n = n;
  p.k = k;
  p.a = a.data();
  p.lda = a_cols;
  p.trans_a = trans_a;
  p.b = b.data();
  p.ldb = b_cols;
  p.trans_b = trans_b;
  p.c = out.mutable_data();
  p.ldc = n;
  p.accumulate = accumulate;

  std::vector<Index> a_off, b_off;
  Index batch = 1;
  if (b_batch.empty() && !trans_a) {
    // (..., m, k) @ (k, n): one product with all leading dimensions folded into m.
    for (Index d : a_batch) p.m *= d;
    a_off = b_off = {0};
  } else {
    for (Index d : out_batch) batch *= d;
    a_off = batch_offsets(a_batch, out_batch, a_rows * a_cols);
    b_off = batch_offsets(b_batch, out_batch, b_rows * b_cols);
  }
  {
    py::gil_scoped_release nogil;
    gemm_batched<T>(p, batch, a_off.data(), b_off.data(), m * n);
  }
  if (!out_obj.is_none()) return py::reinterpret_borrow<py::object>(out_obj);
  return std::move(out);
}

template <typename T>
py::object linear_impl(py::handle x_obj, py::handle w_obj, py::handle b_obj) {
  const char* fn = "linear";
  py::array_t<T> x = input_array<T>(fn, {"x", x_obj});
  py::array_t<T> w = input_array<T>(fn, {"w", w_obj});
  require_ndim(fn, "x", x, 1);
  require_ndim(fn, "w", w, 2, 2);
  const auto x_shape = shape_of(x);
  const Index in = x_shape.back(), units = w.shape(1);
  if (w.shape(0) != in)
    throw py::value_error(cat(fn, ": 'x' has ", in, " features (last axis of shape ", shape_str(x_shape),
                              ") but 'w' expects ", w.shape(0), " (w.shape=", shape_str(shape_of(w)), ")"));
  py::array_t<T> bias;
  if (!b_obj.is_none()) {
    bias = input_array<T>(fn, {"b", b_obj});
    if (bias.ndim() != 1 || bias.shape(0) != units)
      throw py::value_error(cat(fn, ": 'b' must have shape (", units, ",) to match w.shape=",
                                shape_str(shape_of(w)), ", got shape ", shape_str(shape_of(bias))));
  }
  std::vector<Index> out_shape(x_shape.begin(), x_shape.end() - 1);
  out_shape.push_back(units);
  py::array_t<T> out(out_shape);

  GemmArgs<T> p;
  p.m = 1;  // all leading axes of x are rows
  for (size_t d = 0; d + 1 < x_shape.size(); ++d) p.m *= x_shape[d];
  p.n = units;
  p.k = in;
  p.a = x.data();
  p.lda = in;
  p.b = w.data();
  p.ldb = units;
  p.c = out.mutable_data();
  p.ldc = units;
  p.bias = b_obj.is_none() ? nullptr : bias.data();
  {
    py::gil_scoped_release nogil;
    gemm<T>(p);
  }
  return std::move(out);
}

}  // namespace

void register_gemm(py::module_& m) {
  m.def(
      "matmul",
      [](py::handle a, py::handle b, bool transpose_a, bool transpose_b, py::handle out,
         bool accumulate) {
        const DType dt = resolve_dtype("matmul", {{"a", a}, {"b", b}, {"out", out}});
        return dispatch(dt, [&](auto t) {
          return matmul_impl<decltype(t)>(a, b, transpose_a, transpose_b, out, accumulate);
        });
      },
      py::arg("a"), py::arg("b"), py::arg("transpose_a") = false, py::arg("transpose_b") = false,
      py::arg("out") = py::none(), py::arg("accumulate") = false,
      "op(a) @ op(b) with NumPy's matmul broadcasting; see fastnn.ops.matmul.");
  m.def(
      "linear",
      [](py::handle x, py::handle w, py::handle b) {
        const DType dt = resolve_dtype("linear", {{"x", x}, {"w", w}, {"b", b}});
        return dispatch(dt, [&](auto t) { return linear_impl<decltype(t)>(x, w, b); });
      },
      py::arg("x"), py::arg("w"), py::arg("b") = py::none(),
      "x @ w + b over the last axis of x; see fastnn.ops.linear.");
}

}  // namespace fastnn::bindings
