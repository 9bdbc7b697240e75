// Arguments shared by the bindings of kernels with a fused activation (dense, conv) and of
// the activations themselves.
#pragma once

#include <vector>

#include "args.hpp"
#include "fastnn/activation.hpp"

namespace fastnn::bindings {

/// The activation with kernel number `kind` (fastnn.ops' names map to these numbers).
inline Activation make_activation(const char* fn, int kind, double alpha) {
  if (kind < 0 || kind > static_cast<int>(ActivationKind::Softmax))
    throw py::value_error(cat(fn, ": unknown activation kind ", kind));
  return Activation{static_cast<ActivationKind>(kind), alpha};
}

/// The arrays of a backward call through a fused activation: y and dy (the output's shape),
/// z when the activation's derivative needs it, and the optional gradient outputs dw and db
/// (null pointers when not given: a default array_t is an empty array, not null).
template <typename T>
struct FusedBackwardArrays {
  py::array_t<T> y, dy, z, dw, db;
  const T* z_ptr = nullptr;
  T* dw_ptr = nullptr;
  T* db_ptr = nullptr;

  FusedBackwardArrays(const char* fn, const Activation& act, py::handle y_obj, py::handle dy_obj,
                      py::handle z_obj, const std::vector<Index>& out_shape, py::handle dw_obj,
                      const std::vector<Index>& w_shape, py::handle db_obj, Index bias_size) {
    y = input_array<T>(fn, {"y", y_obj});
    dy = input_array<T>(fn, {"dy", dy_obj});
    require_shape(fn, "y", y, out_shape);
    require_shape(fn, "dy", dy, out_shape);
    if (activation_backward_needs_input(act.kind)) {
      if (z_obj.is_none())
        throw py::value_error(cat(fn, ": this activation's derivative needs 'z' (pre-activation)"));
      z = input_array<T>(fn, {"z", z_obj});
      require_shape(fn, "z", z, out_shape);
      z_ptr = z.data();
    }
    if (!dw_obj.is_none()) {
      dw = output_array<T>(fn, {"dw", dw_obj}, w_shape);
      dw_ptr = dw.mutable_data();
    }
    if (!db_obj.is_none()) {
      db = output_array<T>(fn, {"db", db_obj}, {bias_size});
      db_ptr = db.mutable_data();
    }
  }
};

}  // namespace fastnn::bindings
