// Python bindings of the scaled dot-product attention kernels: one call forward, one call
// backward. Q, K, V are 4-D: (batch, time, heads, features) with heads_axis = 2 (Keras'
// layout) or (batch, heads, time, features) with heads_axis = 1 (PyTorch's); both are read
// in place through strides (see fastnn/attention.hpp). The mask (boolean) and the bias
// (additive) broadcast against (batch, heads, T, S) as NumPy broadcasts.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <cmath>
#include <string>

#include "args.hpp"
#include "fastnn/attention.hpp"

namespace fastnn::bindings {
namespace {

// Sizes of an attention call, read from q, k and v.
struct AttentionShape {
  int heads_axis = 2;
  Index batch = 0, heads = 0, queries = 0, keys = 0, key_dim = 0, value_dim = 0;

  // The shape of a (batch, time, heads, d) tensor in this layout.
  std::vector<Index> tensor(Index time, Index d) const {
    return heads_axis == 2 ? std::vector<Index>{batch, time, heads, d}
                           : std::vector<Index>{batch, heads, time, d};
  }
};

int attention_heads_axis(const char* fn, int heads_axis) {
  if (heads_axis != 1 && heads_axis != 2)
    throw py::value_error(cat(fn, ": 'heads_axis' must be 2 (batch, time, heads, features: Keras) "
                              "or 1 (batch, heads, time, features: PyTorch), got ", heads_axis));
  return heads_axis;
}

template <typename T>
AttentionShape attention_shape(const char* fn, const py::array_t<T>& q, const py::array_t<T>& k,
                               const py::array_t<T>& v, int heads_axis) {
  require_ndim(fn, "query", q, 4, 4);
  require_ndim(fn, "key", k, 4, 4);
  require_ndim(fn, "value", v, 4, 4);
  const auto qs = shape_of(q), ks = shape_of(k), vs = shape_of(v);
  const int t_axis = heads_axis == 2 ? 1 : 2;
  AttentionShape s;
  s.heads_axis = heads_axis;
  s.batch = qs[0];
  s.heads = qs[heads_axis];
  s.queries = qs[t_axis];
  s.keys = ks[t_axis];
  s.key_dim = qs[3];
  s.value_dim = vs[3];
  const char* layout = heads_axis == 2 ? "(batch, time, heads, features)"
                                       : "(batch, heads, time, features)";
  if (ks[0] != s.batch || vs[0] != s.batch || ks[heads_axis] != s.heads ||
      vs[heads_axis] != s.heads)
    throw py::value_error(cat(fn, ": 'query', 'key' and 'value' must agree in batch size and heads ",
                              layout, ", got shapes ", shape_str(qs), ", ", shape_str(ks), " and ",
                              shape_str(vs)));
  if (ks[3] != s.key_dim)
    throw py::value_error(cat(fn, ": 'key' must have the features of 'query' (", s.key_dim,
                              "), got shape ", shape_str(ks), " for query of shape ",
                              shape_str(qs)));
  if (vs[t_axis] != s.keys)
    throw py::value_error(cat(fn, ": 'value' must have the length of 'key' (", s.keys,
                              "), got shape ", shape_str(vs), " for key of shape ", shape_str(ks)));
  if (s.key_dim == 0)
    throw py::value_error(cat(fn, ": the features of 'query' and 'key' must be at least 1, got ",
                              "shape ", shape_str(qs)));
  // The probabilities and the dropout counter index batch·heads·T·S entries.
  Index total = 1;
  for (Index n : {s.batch, s.heads, s.queries, s.keys})
    if (n != 0 && total > PTRDIFF_MAX / n)
      throw py::value_error(cat(fn, ": batch·heads·T·S overflows 64 bits for query of shape ",
                                shape_str(qs), " and key of shape ", shape_str(ks)));
    else
      total *= n;
  return s;
}

template <typename T>
HeadsView<T> attention_view(T* data, const AttentionShape& s, Index time, Index d) {
  HeadsView<T> v;
  v.data = data;
  if (s.heads_axis == 2) {
    v.time_stride = s.heads * d;
    v.head_stride = d;
    v.batch_stride = time * s.heads * d;
  } else {
    v.time_stride = d;
    v.head_stride = time * d;
    v.batch_stride = s.heads * time * d;
  }
  return v;
}

// The strides that broadcast an array of `shape` against (batch, heads, T, S).
template <typename E>
ScoresView<E> scores_view(const char* fn, const char* name, const E* data,
                          const std::vector<Index>& shape, const AttentionShape& s) {
  const std::vector<Index> full{s.batch, s.heads, s.queries, s.keys};
  if (shape.size() > 4)
    throw py::value_error(cat(fn, ": '", name, "' must broadcast to (batch, heads, T, S) = ",
                              shape_str(full), ", got shape ", shape_str(shape)));
  Index strides[4] = {0, 0, 0, 0};
  Index stride = 1;
  const int offset = 4 - int(shape.size());
  for (int d = int(shape.size()) - 1; d >= 0; --d) {
    const Index n = shape[d], want = full[d + offset];
    if (n != want && n != 1)
      throw py::value_error(cat(fn, ": '", name, "' must broadcast to (batch, heads, T, S) = ",
                                shape_str(full), ", got shape ", shape_str(shape)));
    strides[d + offset] = n == 1 ? 0 : stride;
    stride *= n;
  }
  ScoresView<E> v;
  v.data = data;
  v.batch_stride = strides[0];
  v.head_stride = strides[1];
  v.query_stride = strides[2];
  v.key_stride = strides[3];
  return v;
}

// The options shared by forward and backward, checked; mask and bias kept alive in `keep_*`.
template <typename T>
void attention_options(const char* fn, AttentionArgs<T>& a, const AttentionShape& s,
                       py::handle mask_obj, py::handle bias_obj, double scale, bool causal,
                       double dropout_rate, uint64_t seed, py::array_t<uint8_t>& keep_mask,
                       py::array_t<T>& keep_bias) {
  if (!std::isfinite(scale))
    throw py::value_error(cat(fn, ": 'scale' must be a finite number, got ", scale));
  if (!(dropout_rate >= 0.0 && dropout_rate < 1.0))
    throw py::value_error(cat(fn, ": 'dropout_rate' must be in [0, 1), got ", dropout_rate));
  a.batch = s.batch;
  a.heads = s.heads;
  a.queries = s.queries;
  a.keys = s.keys;
  a.key_dim = s.key_dim;
  a.value_dim = s.value_dim;
  a.scale = scale;
  a.causal = causal;
  a.dropout_rate = dropout_rate;
  a.seed = seed;
  if (!mask_obj.is_none()) {
    py::array m = py::array::ensure(mask_obj);
    if (!m || (m.dtype().kind() != 'b'))
      throw py::type_error(cat(fn, ": 'mask' must be a boolean array (True = attend), got ",
                               describe(mask_obj)));
    keep_mask = py::array_t<uint8_t, py::array::c_style | py::array::forcecast>::ensure(m);
    a.mask = scores_view<uint8_t>(fn, "mask", keep_mask.data(), shape_of(keep_mask), s);
  }
  if (!bias_obj.is_none()) {
    keep_bias = input_array<T>(fn, {"bias", bias_obj});
    a.bias = scores_view<T>(fn, "bias", keep_bias.data(), shape_of(keep_bias), s);
  }
}

// What forward and backward both read: q, k, v and the options, checked, as kernel arguments.
template <typename T>
struct AttentionCall {
  py::array_t<T> q, k, v, bias;
  py::array_t<uint8_t> mask;
  AttentionShape shape;
  AttentionArgs<T> args;

  AttentionCall(const char* fn, py::handle q_obj, py::handle k_obj, py::handle v_obj,
                py::handle mask_obj, py::handle bias_obj, double scale, bool causal,
                double dropout_rate, uint64_t seed, int heads_axis) {
    heads_axis = attention_heads_axis(fn, heads_axis);
    q = input_array<T>(fn, {"query", q_obj});
    k = input_array<T>(fn, {"key", k_obj});
    v = input_array<T>(fn, {"value", v_obj});
    shape = attention_shape(fn, q, k, v, heads_axis);
    attention_options(fn, args, shape, mask_obj, bias_obj, scale, causal, dropout_rate, seed, mask,
                      bias);
    args.q = attention_view<const T>(q.data(), shape, shape.queries, shape.key_dim);
    args.k = attention_view<const T>(k.data(), shape, shape.keys, shape.key_dim);
    args.v = attention_view<const T>(v.data(), shape, shape.keys, shape.value_dim);
  }

  // A (batch, time, heads, d) tensor of the call's layout: its shape, and a view of `data`.
  std::vector<Index> tensor(Index time, Index d) const { return shape.tensor(time, d); }
  template <typename E>
  HeadsView<E> view(E* data, Index time, Index d) const {
    return attention_view<E>(data, shape, time, d);
  }
};

template <typename T>
py::tuple attention_forward_impl(py::handle q_obj, py::handle k_obj, py::handle v_obj,
                                 py::handle mask_obj, py::handle bias_obj, double scale,
                                 bool causal, double dropout_rate, uint64_t seed,
                                 bool return_probabilities, int heads_axis) {
  const AttentionCall<T> c("attention_forward", q_obj, k_obj, v_obj, mask_obj, bias_obj, scale,
                           causal, dropout_rate, seed, heads_axis);
  const AttentionShape& s = c.shape;
  auto out = new_array<T>(c.tensor(s.queries, s.value_dim));
  auto lse = new_array<T>({s.batch, s.heads, s.queries});
  py::object probs_out;
  T* probs = new_array_if<T>(return_probabilities, {s.batch, s.heads, s.queries, s.keys}, probs_out);
  {
    py::gil_scoped_release nogil;
    attention_forward<T>(c.args, c.view(out.mutable_data(), s.queries, s.value_dim),
                         lse.mutable_data(), probs);
  }
  return py::make_tuple(std::move(out), std::move(lse), probs_out);
}

template <typename T>
py::tuple attention_backward_impl(py::handle q_obj, py::handle k_obj, py::handle v_obj,
                                  py::handle out_obj, py::handle dout_obj, py::handle lse_obj,
                                  py::handle mask_obj, py::handle bias_obj, double scale,
                                  bool causal, double dropout_rate, uint64_t seed, int heads_axis,
                                  bool need_dq, bool need_dk, bool need_dv) {
  const char* fn = "attention_backward";
  const AttentionCall<T> c(fn, q_obj, k_obj, v_obj, mask_obj, bias_obj, scale, causal,
                           dropout_rate, seed, heads_axis);
  const AttentionShape& s = c.shape;
  auto out = input_array<T>(fn, {"out", out_obj});
  require_shape(fn, "out", out, c.tensor(s.queries, s.value_dim));
  auto dout = input_array<T>(fn, {"dout", dout_obj});
  require_shape(fn, "dout", dout, c.tensor(s.queries, s.value_dim));
  auto lse = input_array<T>(fn, {"logsumexp", lse_obj});
  require_shape(fn, "logsumexp", lse, {s.batch, s.heads, s.queries});
  py::object dq_out, dk_out, dv_out;
  T* dq = new_array_if<T>(need_dq, c.tensor(s.queries, s.key_dim), dq_out);
  T* dk = new_array_if<T>(need_dk, c.tensor(s.keys, s.key_dim), dk_out);
  T* dv = new_array_if<T>(need_dv, c.tensor(s.keys, s.value_dim), dv_out);
  {
    py::gil_scoped_release nogil;
    attention_backward<T>(c.args, c.view(out.data(), s.queries, s.value_dim),
                          c.view(dout.data(), s.queries, s.value_dim), lse.data(),
                          c.view(dq, s.queries, s.key_dim), c.view(dk, s.keys, s.key_dim),
                          c.view(dv, s.keys, s.value_dim));
  }
  return py::make_tuple(dq_out, dk_out, dv_out);
}

}  // namespace

void register_attention(py::module_& m) {
  m.def(
      "attention_forward",
      [](py::handle query, py::handle key, py::handle value, py::handle mask, py::handle bias,
         double scale, bool causal, double dropout_rate, uint64_t seed, bool return_probabilities,
         int heads_axis) {
        const DType dt = resolve_dtype("attention_forward",
                                       {{"query", query}, {"key", key}, {"value", value},
                                        {"bias", bias}});
        return dispatch(dt, [&](auto t) {
          return attention_forward_impl<decltype(t)>(query, key, value, mask, bias, scale, causal,
                                                     dropout_rate, seed, return_probabilities,
                                                     heads_axis);
        });
      },
      py::arg("query"), py::arg("key"), py::arg("value"), py::arg("mask") = py::none(),
      py::arg("bias") = py::none(), py::arg("scale") = 1.0, py::arg("causal") = false,
      py::arg("dropout_rate") = 0.0, py::arg("seed") = 0, py::arg("return_probabilities") = false,
      py::arg("heads_axis") = 2,
      "(out, logsumexp, probabilities or None): softmax(scale·Q Kᵀ + bias, masked) V per head.");
  m.def(
      "attention_backward",
      [](py::handle query, py::handle key, py::handle value, py::handle out, py::handle dout,
         py::handle logsumexp, py::handle mask, py::handle bias, double scale, bool causal,
         double dropout_rate, uint64_t seed, int heads_axis, bool need_dq, bool need_dk,
         bool need_dv) {
        const DType dt = resolve_dtype("attention_backward",
                                       {{"query", query}, {"key", key}, {"value", value},
                                        {"out", out}, {"dout", dout}, {"logsumexp", logsumexp},
                                        {"bias", bias}});
        return dispatch(dt, [&](auto t) {
          return attention_backward_impl<decltype(t)>(query, key, value, out, dout, logsumexp,
                                                      mask, bias, scale, causal, dropout_rate,
                                                      seed, heads_axis, need_dq, need_dk, need_dv);
        });
      },
      py::arg("query"), py::arg("key"), py::arg("value"), py::arg("out"), py::arg("dout"),
      py::arg("logsumexp"), py::arg("mask") = py::none(), py::arg("bias") = py::none(),
      py::arg("scale") = 1.0, py::arg("causal") = false, py::arg("dropout_rate") = 0.0,
      py::arg("seed") = 0, py::arg("heads_axis") = 2, py::arg("need_dq") = true,
      py::arg("need_dk") = true, py::arg("need_dv") = true,
      "(dq, dk, dv) for dout = dL/dout given the forward's out and logsumexp (None where not "
      "needed).");
}

}  // namespace fastnn::bindings
