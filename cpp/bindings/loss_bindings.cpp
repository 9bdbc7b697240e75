// Python bindings of the loss kernels: value and gradient in one call.
#include <pybind11/pybind11.h>

#include <cmath>

#include "args.hpp"
#include "fastnn/loss.hpp"

namespace fastnn::bindings {
namespace {

template <typename T>
py::tuple loss_impl(const LossSpec& spec, py::handle y_true_obj, py::handle y_pred_obj,
                    py::handle weight_obj, double scale, bool want_grad, bool want_probs,
                    bool want_rows) {
  const char* fn = "loss";
  auto pred = input_array<T>(fn, {"y_pred", y_pred_obj});
  require_ndim(fn, "y_pred", pred, 1);
  const auto ps = shape_of(pred);
  const Index cols = ps.back();
  Index rows = 1;
  bool many = false;  // rows past 2**63 - 1 (only with cols == 0: the array's size fits otherwise)
  for (std::size_t i = 0; i + 1 < ps.size(); ++i) many |= __builtin_mul_overflow(rows, ps[i], &rows);
  for (std::size_t i = 0; i + 1 < ps.size(); ++i) many &= ps[i] != 0;
  if (cols == 0 && (rows != 0 || many))  // no per-row loss (a mean over nothing) to return
    throw py::value_error(cat(fn, ": 'y_pred' of shape ", shape_str(ps),
                              " has an empty last (class) axis: each of its ", rows,
                              " rows needs at least one value"));
  LossArgs<T> a;
  a.rows = rows;
  a.cols = cols;
  a.pred = pred.data();
  a.scale = T(scale);
  py::array_t<T> y_true;
  py::array_t<int64_t> labels;
  if (spec.kind == LossKind::SparseCategoricalCrossentropy) {
    // Labels: shape y_pred.shape[:-1] (or with a trailing 1), integer valued.
    auto raw = py::module_::import("numpy").attr("asarray")(y_true_obj);
    auto arr = py::reinterpret_borrow<py::array>(raw);
    const char kind = arr.dtype().kind();
    if (kind != 'i' && kind != 'u' && kind != 'f' && kind != 'b')
      throw py::type_error(cat(fn, ": 'y_true' must hold integer class labels, got ", describe(arr)));
    if (kind == 'f') {
      auto f = py::array_t<double, py::array::c_style | py::array::forcecast>::ensure(arr);
      for (Index i = 0; i < f.size(); ++i)
        if (!(std::floor(f.data()[i]) == f.data()[i]))
          throw py::value_error(cat(fn, ": 'y_true' must hold integer class labels, got ",
                                    f.data()[i], " at flat index ", i));
    }
    labels = py::array_t<int64_t, py::array::c_style | py::array::forcecast>::ensure(arr);
    if (labels.size() != rows)
      throw py::value_error(cat(fn, ": 'y_true' must hold one label per row of 'y_pred' (",
                                rows, " for y_pred.shape=", shape_str(ps), "), got shape ",
                                shape_str(shape_of(arr))));
    a.labels = labels.data();
  } else {
    y_true = input_array<T>(fn, {"y_true", y_true_obj});
    require_shape(fn, "y_true", y_true, ps);
    a.y_true = y_true.data();
  }
  py::array_t<T> weights;
  if (!weight_obj.is_none()) {
    weights = input_array<T>(fn, {"sample_weight", weight_obj});
    if (weights.size() != rows)
      throw py::value_error(cat(fn, ": 'sample_weight' must hold one weight per row (", rows,
                                "), got shape ", shape_str(shape_of(weights))));
    a.weights = weights.data();
  }
  py::object grad_out = py::none(), probs_out = py::none();
  T* grad = nullptr;
  T* probs = nullptr;
  if (want_grad) {
    auto g = new_array<T>(ps);
    grad = g.mutable_data();
    grad_out = std::move(g);
  }
  if (want_probs && spec.from_logits) {
    auto p = new_array<T>(ps);
    probs = p.mutable_data();
    probs_out = std::move(p);
  }
  py::object rows_out = py::none();
  if (want_rows) {
    auto r = new_array<T>(std::vector<Index>(ps.begin(), ps.end() - 1));
    a.row_losses = r.mutable_data();
    rows_out = std::move(r);
  }
  double total;
  try {
    py::gil_scoped_release nogil;
    total = loss_forward_backward<T>(spec, a, grad, probs);
  } catch (const std::invalid_argument& e) {
    throw py::value_error(cat(fn, ": 'y_true' ", e.what()));
  }
  return py::make_tuple(total, grad_out, probs_out, rows_out);
}

}  // namespace

void register_loss(py::module_& m) {
  py::dict kinds;
  kinds["mean_squared_error"] = int(LossKind::MeanSquaredError);
  kinds["mean_absolute_error"] = int(LossKind::MeanAbsoluteError);
  kinds["huber"] = int(LossKind::Huber);
  kinds["binary_crossentropy"] = int(LossKind::BinaryCrossentropy);
  kinds["categorical_crossentropy"] = int(LossKind::CategoricalCrossentropy);
  kinds["sparse_categorical_crossentropy"] = int(LossKind::SparseCategoricalCrossentropy);
  kinds["kl_divergence"] = int(LossKind::KLDivergence);
  m.attr("loss_kinds") = kinds;
  m.def(
      "loss",
      [](int kind, py::handle y_true, py::handle y_pred, py::handle sample_weight,
         bool from_logits, double label_smoothing, double delta, double scale, bool want_grad,
         bool want_probs, bool want_rows) {
        if (kind < 0 || kind > int(LossKind::KLDivergence))
          throw py::value_error(cat("loss: unknown loss kind ", kind));
        LossSpec spec;
        spec.kind = static_cast<LossKind>(kind);
        spec.from_logits = from_logits;
        spec.label_smoothing = label_smoothing;
        spec.delta = delta;
        const bool sparse = spec.kind == LossKind::SparseCategoricalCrossentropy;
        const DType dt = resolve_dtype(
            "loss", {{"y_pred", y_pred}, {"y_true", sparse ? py::handle(py::none()) : y_true},
                     {"sample_weight", sample_weight}});
        return dispatch(dt, [&](auto t) {
          return loss_impl<decltype(t)>(spec, y_true, y_pred, sample_weight, scale, want_grad,
                                        want_probs, want_rows);
        });
      },
      py::arg("kind"), py::arg("y_true"), py::arg("y_pred"), py::arg("sample_weight"),
      py::arg("from_logits") = false, py::arg("label_smoothing") = 0.0, py::arg("delta") = 1.0,
      py::arg("scale") = 1.0, py::arg("want_grad") = true, py::arg("want_probs") = false,
      py::arg("want_rows") = false,
      "(Σ w·loss, grad·scale or None, probabilities or None, per-row w·loss or None).");
}

}  // namespace fastnn::bindings
