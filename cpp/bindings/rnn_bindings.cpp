// Python bindings of the recurrent kernels (LSTM, GRU, SimpleRNN over whole sequences) and
// of the embedding lookup.
#include <pybind11/pybind11.h>

#include <cstdint>
#include <string>

#include "activation_args.hpp"
#include "fastnn/embedding.hpp"
#include "fastnn/rnn.hpp"

namespace fastnn::bindings {
namespace {

using MaskArray = py::array_t<std::uint8_t, py::array::c_style | py::array::forcecast>;
using IdArray = py::array_t<std::int64_t, py::array::c_style | py::array::forcecast>;

const char* kind_name(RnnKind kind) {
  return kind == RnnKind::Lstm ? "lstm" : kind == RnnKind::SimpleRnn ? "simple_rnn" : "gru";
}

// Keras' names of the recurrent kernels' activations, in RnnActivation's order.
constexpr const char* kRnnActivationNames[kRnnActivationCount] = {
    "linear", "relu", "sigmoid", "tanh", "hard_sigmoid", "softsign",
    "elu", "selu", "softplus", "leaky_relu", "relu6", "hard_tanh"};

RnnActivation rnn_activation(const char* fn, const char* name, int kind) {
  if (kind < 0 || kind >= kRnnActivationCount) {
    std::string names;
    for (const char* n : kRnnActivationNames) names += std::string(names.empty() ? "" : ", ") + n;
    throw py::value_error(cat(fn, ": '", name, "' must be one of ", names, " (activation kind ", kind, " given)"));
  }
  return static_cast<RnnActivation>(kind);
}

// The arrays of one call, checked, and the kernel's arguments pointing into them.
template <typename T>
struct CheckedRnn {
  py::array_t<T> x, kernel, recurrent, bias, h0, c0, scale;
  MaskArray mask;
  RnnArgs<T> args;
};

template <typename T>
CheckedRnn<T> check_rnn(RnnKind kind, py::handle x, py::handle kernel, py::handle recurrent,
                 py::handle bias, py::handle h0, py::handle c0, py::handle mask,
                 py::handle scale, bool go_backwards, int act, int ract, bool projected = false) {
  const char* fn = kind_name(kind);
  CheckedRnn<T> c;
  RnnArgs<T>& a = c.args;
  a.kind = kind;
  a.go_backwards = go_backwards;
  a.act = rnn_activation(fn, "activation", act);
  a.recurrent_act = rnn_activation(fn, "recurrent_activation", ract);
  c.x = input_array<T>(fn, {"inputs", x});
  if (c.x.ndim() != 3)
    throw py::value_error(cat(fn, ": 'inputs' must be 3-D (batch, timesteps, features), got ",
                              describe(c.x)));
  if (projected && !kernel.is_none())
    throw py::value_error(cat(fn, ": 'kernel' must be None when the inputs are the projections"));
  if (!projected) {
    c.kernel = input_array<T>(fn, {"kernel", kernel});
    require_ndim(fn, "kernel", c.kernel, 2, 2);
  }
  c.recurrent = input_array<T>(fn, {"recurrent_kernel", recurrent});
  require_ndim(fn, "recurrent_kernel", c.recurrent, 2, 2);
  a.batch = c.x.shape(0);
  a.steps = c.x.shape(1);
  a.input = c.x.shape(2);
  a.units = c.recurrent.shape(0);
  const Index width = a.width();
  if (a.input == 0) throw py::value_error(cat(fn, ": 'inputs' has 0 features"));
  if (a.units == 0) throw py::value_error(cat(fn, ": 'recurrent_kernel' has 0 units"));
  require_shape(fn, "recurrent_kernel", c.recurrent, {a.units, width});
  if (projected) {
    if (a.input != width)
      throw py::value_error(cat(fn, ": the projected 'inputs' must have ", width, " features (gates × units), got ",
                                a.input));
  } else {
    if (c.kernel.shape(0) != a.input)
      throw py::value_error(cat(fn, ": 'inputs' has ", a.input, " features but 'kernel' expects ",
                                c.kernel.shape(0), " (kernel.shape=", shape_str(shape_of(c.kernel)), ")"));
    require_shape(fn, "kernel", c.kernel, {a.input, width});
  }
  a.x = c.x.data();
  a.kernel = projected ? nullptr : c.kernel.data();
  a.recurrent = c.recurrent.data();
  if (!bias.is_none()) {
    c.bias = input_array<T>(fn, {"bias", bias});
    if (kind == RnnKind::Gru) require_shape(fn, "bias", c.bias, {2, width});  // reset_after
    else require_shape(fn, "bias", c.bias, {width});
    a.bias = c.bias.data();
  }
  if (!h0.is_none()) {
    c.h0 = input_array<T>(fn, {"initial_state[0]", h0});
    require_shape(fn, "initial_state[0]", c.h0, {a.batch, a.units});
    a.h0 = c.h0.data();
  }
  if (!c0.is_none()) {
    if (kind != RnnKind::Lstm) throw py::value_error(cat(fn, ": has one state, a cell state was given"));
    c.c0 = input_array<T>(fn, {"initial_state[1]", c0});
    require_shape(fn, "initial_state[1]", c.c0, {a.batch, a.units});
    a.c0 = c.c0.data();
  }
  if (!mask.is_none()) {
    c.mask = MaskArray::ensure(mask);
    if (!c.mask) throw py::type_error(cat(fn, ": 'mask' must be a boolean array, got ", describe(mask)));
    require_shape(fn, "mask", c.mask, {a.batch, a.steps});
    a.mask = c.mask.data();
  }
  if (!scale.is_none()) {
    c.scale = input_array<T>(fn, {"recurrent_scale", scale});
    require_shape(fn, "recurrent_scale", c.scale, {a.batch, a.units});
    a.recurrent_scale = c.scale.data();
  }
  return c;
}

// The tape's arrays (time-major, see fastnn/rnn.hpp): (h, c, act_c, gates, rh), None where
// the kind keeps nothing.
template <typename T>
py::tuple new_tape(const RnnArgs<T>& a, RnnTape<T>& tape) {
  const std::vector<Index> states{a.steps + 1, a.batch, a.units}, steps{a.steps, a.batch, a.units};
  auto h = new_array<T>(states);
  tape.h = h.mutable_data();
  py::object c = py::none(), act_c = py::none(), gates = py::none(), rh = py::none();
  if (a.kind == RnnKind::Lstm) {
    auto ca = new_array<T>(states), aa = new_array<T>(steps);
    tape.c = ca.mutable_data();
    tape.act_c = aa.mutable_data();
    c = std::move(ca);
    act_c = std::move(aa);
  }
  if (a.kind != RnnKind::SimpleRnn) {
    auto ga = new_array<T>({a.steps, a.batch, a.gate_stride()});
    tape.gates = ga.mutable_data();
    gates = std::move(ga);
  }
  if (a.kind == RnnKind::Gru || a.kind == RnnKind::GruResetBefore) {
    auto ra = new_array<T>(steps);
    tape.rh = ra.mutable_data();
    rh = std::move(ra);
  }
  return py::make_tuple(std::move(h), c, act_c, gates, rh);
}

template <typename T>
py::tuple rnn_forward_impl(RnnKind kind, py::handle x, py::handle kernel, py::handle recurrent,
                       py::handle bias, py::handle h0, py::handle c0, py::handle mask,
                       py::handle scale, bool go_backwards, int act, int ract, bool projected) {
  auto c = check_rnn<T>(kind, x, kernel, recurrent, bias, h0, c0, mask, scale, go_backwards, act, ract, projected);
  RnnTape<T> tape;
  py::tuple out = new_tape(c.args, tape);
  {
    py::gil_scoped_release nogil;
    rnn_forward<T>(c.args, tape);
  }
  return out;
}

// A tape array given back by Python: exactly the forward's shape.
template <typename T>
py::array_t<T> tape_array(const char* fn, const char* name, py::handle value,
                          const std::vector<Index>& shape) {
  if (value.is_none()) throw py::value_error(cat(fn, ": the tape lacks '", name, "'"));
  auto arr = input_array<T>(fn, {name, value});
  require_shape(fn, name, arr, shape);
  return arr;
}

template <typename T>
py::tuple rnn_backward_impl(RnnKind kind, py::handle x, py::handle kernel, py::handle recurrent,
                        py::handle bias, py::handle h0, py::handle c0, py::handle mask,
                        py::handle scale, bool go_backwards, int act, int ract, py::tuple tape_in, py::handle dy,
                        py::handle dh_last, py::handle dc_last, py::handle dkernel,
                        py::handle drecurrent, py::handle dbias, bool accumulate, bool need_dx) {
  const char* fn = kind_name(kind);
  auto c = check_rnn<T>(kind, x, kernel, recurrent, bias, h0, c0, mask, scale, go_backwards, act, ract);
  const RnnArgs<T>& a = c.args;
  if (tape_in.size() != 5) throw py::value_error(cat(fn, ": 'tape' must be the forward's 5-tuple"));
  const std::vector<Index> states{a.steps + 1, a.batch, a.units}, steps{a.steps, a.batch, a.units};
  const std::vector<Index> last{a.batch, a.units}, outputs{a.batch, a.steps, a.units};
  std::vector<py::array_t<T>> keep;
  RnnTape<T> tape;
  auto take = [&](const char* name, int i, const std::vector<Index>& shape) -> T* {
    keep.push_back(tape_array<T>(fn, name, tape_in[i], shape));
    return const_cast<T*>(keep.back().data());
  };
  tape.h = take("h", 0, states);
  if (kind == RnnKind::Lstm) {
    tape.c = take("c", 1, states);
    tape.act_c = take("act_c", 2, steps);
  }
  if (kind != RnnKind::SimpleRnn) tape.gates = take("gates", 3, {a.steps, a.batch, a.gate_stride()});
  if (kind == RnnKind::Gru || kind == RnnKind::GruResetBefore) tape.rh = take("rh", 4, steps);

  auto optional_in = [&](const char* name, py::handle v, const std::vector<Index>& shape) -> const T* {
    if (v.is_none()) return nullptr;
    keep.push_back(input_array<T>(fn, {name, v}));
    require_shape(fn, name, keep.back(), shape);
    return keep.back().data();
  };
  const T* dy_p = optional_in("d_outputs", dy, outputs);
  const T* dh_p = optional_in("d_h", dh_last, last);
  const T* dc_p = nullptr;
  if (!dc_last.is_none()) {
    if (kind != RnnKind::Lstm) throw py::value_error(cat(fn, ": has no cell state to take 'd_c'"));
    dc_p = optional_in("d_c", dc_last, last);
  }

  RnnGrads<T> g;
  g.accumulate = accumulate;
  auto output = [&](const char* name, py::handle v, const std::vector<Index>& shape) -> py::array_t<T> {
    if (v.is_none()) return new_array<T>(shape);
    return output_array<T>(fn, {name, v}, shape);
  };
  const Index width = a.width();
  auto dk = output("dkernel", dkernel, {a.input, width});
  auto dr = output("drecurrent", drecurrent, {a.units, width});
  std::vector<Index> bias_shape{width};
  if (kind == RnnKind::Gru) bias_shape = {2, width};
  py::object db_out = py::none();
  if (a.bias) {
    auto db = output("dbias", dbias, bias_shape);
    g.dbias = db.mutable_data();
    db_out = std::move(db);
  }
  g.dkernel = dk.mutable_data();
  g.drecurrent = dr.mutable_data();
  py::object dx_out = py::none(), dc0_out = py::none();
  if (need_dx) {
    auto dxa = new_array<T>({a.batch, a.steps, a.input});
    g.dx = dxa.mutable_data();
    dx_out = std::move(dxa);
  }
  auto dh0 = new_array<T>(last);
  g.dh0 = dh0.mutable_data();
  if (kind == RnnKind::Lstm) {
    auto dc0 = new_array<T>(last);
    g.dc0 = dc0.mutable_data();
    dc0_out = std::move(dc0);
  }
  {
    py::gil_scoped_release nogil;
    rnn_backward<T>(a, tape, dy_p, dh_p, dc_p, g);
  }
  return py::make_tuple(dx_out, std::move(dk), std::move(dr), db_out, std::move(dh0), dc0_out);
}

RnnKind make_kind(int kind) {
  if (kind < 0 || kind > static_cast<int>(RnnKind::GruResetBefore))
    throw py::value_error(cat("rnn: unknown kind ", kind));
  return static_cast<RnnKind>(kind);
}

IdArray check_ids(const char* fn, py::handle ids, Index vocabulary) {
  py::array raw = py::array::ensure(ids);
  if (!raw) throw py::type_error(cat(fn, ": 'indices' must be an integer array, got ", describe(ids)));
  const char k = raw.dtype().kind();
  if (k != 'i' && k != 'u' && k != 'b')
    throw py::type_error(cat(fn, ": 'indices' must hold integers, got ", describe(ids)));
  IdArray arr = IdArray::ensure(raw);
  const Index bad = embedding_first_invalid(arr.data(), arr.size(), vocabulary);
  if (bad >= 0)
    throw py::value_error(cat(fn, ": index ", arr.data()[bad], " in 'indices' is outside [0, ",
                              vocabulary, ") (input_dim = ", vocabulary, ")"));
  return arr;
}

template <typename T>
py::array_t<T> embedding_forward_impl(py::handle table_obj, py::handle ids_obj) {
  const char* fn = "embedding";
  auto table = input_array<T>(fn, {"embeddings", table_obj});
  require_ndim(fn, "embeddings", table, 2, 2);
  const Index vocabulary = table.shape(0), dim = table.shape(1);
  IdArray ids = check_ids(fn, ids_obj, vocabulary);
  std::vector<Index> shape = shape_of(ids);
  shape.push_back(dim);
  auto out = new_array<T>(shape);
  {
    py::gil_scoped_release nogil;
    embedding_forward<T>(table.data(), vocabulary, dim, ids.data(), ids.size(), out.mutable_data());
  }
  return out;
}

template <typename T>
py::array_t<T> embedding_backward_impl(py::handle ids_obj, py::handle dy_obj, py::handle dtable_obj,
                                       Index vocabulary, bool accumulate) {
  const char* fn = "embedding_backward";
  if (vocabulary < 0)
    throw py::value_error(cat(fn, ": 'vocabulary' must be >= 0, got ", vocabulary));
  auto dy = input_array<T>(fn, {"dy", dy_obj});
  require_ndim(fn, "dy", dy, 1);
  const Index dim = dy.shape(dy.ndim() - 1);
  IdArray ids = check_ids(fn, ids_obj, vocabulary);
  std::vector<Index> expected = shape_of(ids);
  expected.push_back(dim);
  require_shape(fn, "dy", dy, expected);
  auto dtable = dtable_obj.is_none() ? new_array<T>(checked_shape(fn, {vocabulary, dim}, sizeof(T)))
                                     : output_array<T>(fn, {"dtable", dtable_obj}, {vocabulary, dim});
  if (dtable.size() != 0) {  // (empty: no scratch sized by the vocabulary)
    py::gil_scoped_release nogil;
    embedding_backward<T>(ids.data(), ids.size(), dy.data(), vocabulary, dim, dtable.mutable_data(),
                          accumulate && !dtable_obj.is_none());
  }
  return dtable;
}

}  // namespace

void register_rnn(py::module_& m) {
  py::dict activations;
  for (int k = 0; k < kRnnActivationCount; ++k) activations[kRnnActivationNames[k]] = k;
  m.attr("rnn_activation_kinds") = activations;
  m.def(
      "rnn_forward",
      [](int kind, py::handle x, py::handle kernel, py::handle recurrent, py::handle bias,
         py::handle h0, py::handle c0, py::handle mask, py::handle scale, bool go_backwards, int act,
         int ract, bool projected) {
        const RnnKind k = make_kind(kind);
        const DType dt = resolve_dtype(kind_name(k), {{"inputs", x}, {"kernel", kernel},
                                                      {"recurrent_kernel", recurrent}, {"bias", bias},
                                                      {"initial_state[0]", h0}, {"initial_state[1]", c0},
                                                      {"recurrent_scale", scale}});
        return dispatch(dt, [&](auto t) {
          using T = decltype(t);
          return rnn_forward_impl<T>(k, x, kernel, recurrent, bias, h0, c0, mask, scale, go_backwards, act,
                                 ract, projected);
        });
      },
      py::arg("kind"), py::arg("x"), py::arg("kernel"), py::arg("recurrent_kernel"), py::arg("bias"),
      py::arg("h0"), py::arg("c0"), py::arg("mask"), py::arg("recurrent_scale"), py::arg("go_backwards"),
      py::arg("activation"),
      py::arg("recurrent_activation"), py::arg("projected") = false,
      "Runs an LSTM (kind 0), GRU (1; 3: reset_after=False) or SimpleRNN (2) over a sequence; returns the tape "
      "(h, c, act_c, gates, rh). Use fastnn.ops.lstm / gru / simple_rnn.");
  m.def(
      "rnn_backward",
      [](int kind, py::handle x, py::handle kernel, py::handle recurrent, py::handle bias,
         py::handle h0, py::handle c0, py::handle mask, py::handle scale, bool go_backwards, int act,
         int ract, py::tuple tape, py::handle dy, py::handle dh, py::handle dc, py::handle dkernel,
         py::handle drecurrent, py::handle dbias, bool accumulate, bool need_dx) {
        const RnnKind k = make_kind(kind);
        const DType dt = resolve_dtype(kind_name(k), {{"inputs", x}, {"kernel", kernel},
                                                      {"recurrent_kernel", recurrent}, {"bias", bias},
                                                      {"initial_state[0]", h0}, {"initial_state[1]", c0},
                                                      {"recurrent_scale", scale}, {"d_outputs", dy}, {"d_h", dh}, {"d_c", dc}});
        return dispatch(dt, [&](auto t) {
          using T = decltype(t);
          return rnn_backward_impl<T>(k, x, kernel, recurrent, bias, h0, c0, mask, scale, go_backwards,
                                  act, ract, tape, dy, dh, dc, dkernel, drecurrent, dbias, accumulate,
                                  need_dx);
        });
      },
      py::arg("kind"), py::arg("x"), py::arg("kernel"), py::arg("recurrent_kernel"), py::arg("bias"),
      py::arg("h0"), py::arg("c0"), py::arg("mask"), py::arg("recurrent_scale"), py::arg("go_backwards"),
      py::arg("activation"),
      py::arg("recurrent_activation"), py::arg("tape"), py::arg("dy"), py::arg("dh"), py::arg("dc"),
      py::arg("dkernel"), py::arg("drecurrent"), py::arg("dbias"), py::arg("accumulate"),
      py::arg("need_dx"),
      "Backward through time; returns (dx, dkernel, drecurrent, dbias, dh0, dc0).");
  m.def(
      "embedding_forward",
      [](py::handle table, py::handle ids) {
        return dispatch(resolve_dtype("embedding", {{"embeddings", table}}), [&](auto t) {
          return py::object(embedding_forward_impl<decltype(t)>(table, ids));
        });
      },
      py::arg("embeddings"), py::arg("indices"), "Rows of the table at the indices.");
  m.def(
      "embedding_backward",
      [](py::handle ids, py::handle dy, py::handle dtable, Index vocabulary, bool accumulate) {
        return dispatch(resolve_dtype("embedding_backward", {{"dy", dy}, {"dtable", dtable}}),
                        [&](auto t) {
                          return py::object(embedding_backward_impl<decltype(t)>(ids, dy, dtable,
                                                                                 vocabulary, accumulate));
                        });
      },
      py::arg("indices"), py::arg("dy"), py::arg("dtable"), py::arg("vocabulary"),
      py::arg("accumulate") = false, "Scatter-adds dy's rows into the table's gradient at the indices.");
}

}  // namespace fastnn::bindings
