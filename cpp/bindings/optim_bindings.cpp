// Python bindings of the optimizer kernels: each update is one call over a flat buffer.
// Parameters, gradients and state must be arrays of one float dtype, C-contiguous, of the
// same size; parameters and state are updated in place.
#include <pybind11/pybind11.h>

#include <cmath>

#include "args.hpp"
#include "fastnn/optim.hpp"

namespace fastnn::bindings {
namespace {

// The parameter buffer (named `name` in messages) decides the dtype and the size; the others
// must match it.
template <typename F>
auto with_params(const char* fn, py::handle w, F&& body, const char* name = "w") {
  if (!py::isinstance<py::array>(w))
    throw py::type_error(cat(fn, ": '", name, "' must be a numpy.ndarray of float32 or float64, got ",
                             describe(w)));
  const auto dt = py::reinterpret_borrow<py::array>(w).dtype();
  if (dt.kind() != 'f' || (dt.itemsize() != 4 && dt.itemsize() != 8))
    throw py::type_error(cat(fn, ": '", name, "' must be float32 or float64, got ", describe(w)));
  return dispatch(dt.itemsize() == 4 ? DType::Float32 : DType::Float64, std::forward<F>(body));
}

// A 1-D array argument of the segment helpers, converted only from the kinds of NumPy arrays
// `kinds` names ("iu": integers, "biuf": real numbers): not from fractions, complex numbers,
// strings or objects, which a forcecast would truncate or parse.
template <typename V>
py::array_t<V> vector_arg(const char* fn, const char* name, py::handle obj, const char* kinds) {
  const py::array raw = py::module_::import("numpy").attr("asarray")(obj);
  if (std::string(kinds).find(raw.dtype().kind()) == std::string::npos)
    throw py::type_error(cat(fn, ": '", name, "' must hold ",
                             std::string(kinds) == "iu" ? "integers" : "real numbers", ", got ",
                             describe(obj)));
  if (raw.ndim() != 1)
    throw py::value_error(cat(fn, ": '", name, "' must be 1-D, got shape ", shape_str(shape_of(raw))));
  return py::array_t<V, py::array::c_style | py::array::forcecast>::ensure(raw);
}

template <typename T>
struct Buffers {
  const char* fn;
  Index n;
  py::array_t<T> w, g;
  std::vector<py::array_t<T>> keep;  // state arrays, alive until the call ends

  Buffers(const char* fn_, py::handle w_obj, py::handle g_obj) : fn(fn_) {
    w = inout_array<T>(fn, {"w", w_obj}, py::reinterpret_borrow<py::array>(w_obj).size());
    n = w.size();
    resolve_dtype(fn, {{"w", w_obj}, {"g", g_obj}});  // float32 with float64: TypeError
    g = input_array<T>(fn, {"g", g_obj});
    if (g.size() != n)
      throw py::value_error(cat(fn, ": 'g' must hold ", n, " values like 'w', got ", g.size()));
  }
  T* state(const char* name, py::handle obj) {  // nullptr for None
    if (obj.is_none()) return nullptr;
    keep.push_back(inout_array<T>(fn, {name, obj}, n));
    return keep.back().mutable_data();
  }
  T* required(const char* name, py::handle obj) {
    if (obj.is_none()) throw py::value_error(cat(fn, ": '", name, "' is required"));
    return state(name, obj);
  }
};

// The step counter of the bias-corrected updates: 1 for the first update (0 or less would
// divide by 1 − β^step = 0 and turn the weights into NaN).
void require_step(const char* fn, double step) {
  if (!(step >= 1.0 && std::isfinite(step)))
    throw py::value_error(cat(fn, ": 'step' must be >= 1 (the number of this update, from 1), got ", step));
}

}  // namespace

void register_optim(py::module_& m) {
  m.def(
      "sgd_update",
      [](py::handle w, py::handle g, py::handle momentum_buf, double lr, double momentum,
         bool nesterov) {
        with_params("sgd_update", w, [&](auto t) {
          using T = decltype(t);
          Buffers<T> b("sgd_update", w, g);
          T* mb = b.state("m", momentum_buf);
          py::gil_scoped_release nogil;
          sgd_update<T>(b.w.mutable_data(), b.g.data(), mb, b.n, lr, momentum, nesterov);
        });
      },
      py::arg("w"), py::arg("g"), py::arg("m"), py::arg("lr"), py::arg("momentum"),
      py::arg("nesterov"));
  m.def(
      "adagrad_update",
      [](py::handle w, py::handle g, py::handle acc, double lr, double eps) {
        with_params("adagrad_update", w, [&](auto t) {
          using T = decltype(t);
          Buffers<T> b("adagrad_update", w, g);
          T* a = b.required("acc", acc);
          py::gil_scoped_release nogil;
          adagrad_update<T>(b.w.mutable_data(), b.g.data(), a, b.n, lr, eps);
        });
      },
      py::arg("w"), py::arg("g"), py::arg("acc"), py::arg("lr"), py::arg("epsilon"));
  m.def(
      "rmsprop_update",
      [](py::handle w, py::handle g, py::handle v, py::handle mean_g, py::handle mom, double lr,
         double rho, double momentum, double eps) {
        with_params("rmsprop_update", w, [&](auto t) {
          using T = decltype(t);
          Buffers<T> b("rmsprop_update", w, g);
          T* vp = b.required("v", v);
          T* cp = b.state("mean_g", mean_g);
          T* mp = b.state("m", mom);
          py::gil_scoped_release nogil;
          rmsprop_update<T>(b.w.mutable_data(), b.g.data(), vp, cp, mp, b.n, lr, rho, momentum, eps);
        });
      },
      py::arg("w"), py::arg("g"), py::arg("v"), py::arg("mean_g"), py::arg("m"), py::arg("lr"),
      py::arg("rho"), py::arg("momentum"), py::arg("epsilon"));
  m.def(
      "adadelta_update",
      [](py::handle w, py::handle g, py::handle acc_g, py::handle acc_d, double lr, double rho,
         double eps) {
        with_params("adadelta_update", w, [&](auto t) {
          using T = decltype(t);
          Buffers<T> b("adadelta_update", w, g);
          T* ag = b.required("acc_g", acc_g);
          T* ad = b.required("acc_d", acc_d);
          py::gil_scoped_release nogil;
          adadelta_update<T>(b.w.mutable_data(), b.g.data(), ag, ad, b.n, lr, rho, eps);
        });
      },
      py::arg("w"), py::arg("g"), py::arg("acc_g"), py::arg("acc_d"), py::arg("lr"),
      py::arg("rho"), py::arg("epsilon"));
  m.def(
      "adam_update",
      [](py::handle w, py::handle g, py::handle mo, py::handle vo, py::handle vmax, double lr,
         double beta1, double beta2, double eps, double step, double weight_decay) {
        require_step("adam_update", step);
        with_params("adam_update", w, [&](auto t) {
          using T = decltype(t);
          Buffers<T> b("adam_update", w, g);
          T* mp = b.required("m", mo);
          T* vp = b.required("v", vo);
          T* hp = b.state("v_max", vmax);
          py::gil_scoped_release nogil;
          adam_update<T>(b.w.mutable_data(), b.g.data(), mp, vp, hp, b.n, lr, beta1, beta2, eps,
                         step, weight_decay);
        });
      },
      py::arg("w"), py::arg("g"), py::arg("m"), py::arg("v"), py::arg("v_max"), py::arg("lr"),
      py::arg("beta_1"), py::arg("beta_2"), py::arg("epsilon"), py::arg("step"),
      py::arg("weight_decay") = 0.0);
  m.def(
      "nadam_update",
      [](py::handle w, py::handle g, py::handle mo, py::handle vo, double lr, double beta1,
         double beta2, double eps, double step, double u_product_t, double u_product_t1,
         double weight_decay) {
        require_step("nadam_update", step);
        with_params("nadam_update", w, [&](auto t) {
          using T = decltype(t);
          Buffers<T> b("nadam_update", w, g);
          T* mp = b.required("m", mo);
          T* vp = b.required("v", vo);
          py::gil_scoped_release nogil;
          nadam_update<T>(b.w.mutable_data(), b.g.data(), mp, vp, b.n, lr, beta1, beta2, eps,
                          step, u_product_t, u_product_t1, weight_decay);
        });
      },
      py::arg("w"), py::arg("g"), py::arg("m"), py::arg("v"), py::arg("lr"), py::arg("beta_1"),
      py::arg("beta_2"), py::arg("epsilon"), py::arg("step"), py::arg("u_product_t"),
      py::arg("u_product_t1"), py::arg("weight_decay") = 0.0);
  m.def(
      "sum_squares",
      [](py::handle g_obj, py::handle offsets_obj) {
        auto offsets = vector_arg<Index>("sum_squares", "offsets", offsets_obj, "iu");
        if (offsets.size() < 1)
          throw py::value_error("sum_squares: 'offsets' must hold at least one position");
        return with_params("sum_squares", g_obj, [&](auto t) {
          using T = decltype(t);
          auto g = input_array<T>("sum_squares", {"g", g_obj});
          const Index segments = offsets.size() - 1;
          const Index* off = offsets.data();
          for (Index s = 0; s < segments; ++s)
            if (off[s] < 0 || off[s] > off[s + 1] || off[s + 1] > g.size())
              throw py::value_error("sum_squares: 'offsets' must be increasing within g");
          py::array_t<double> out(segments);
          {
            py::gil_scoped_release nogil;
            sum_squares<T>(g.data(), off, segments, out.mutable_data());
          }
          return out;
        }, "g");
      },
      py::arg("g"), py::arg("offsets"), "Σ g² per segment [offsets[s], offsets[s+1]), in double.");
  m.def(
      "regularize",
      [](py::handle w_obj, py::handle g_obj, py::handle offsets_obj, py::handle l1_obj,
         py::handle l2_obj) {
        auto offsets = vector_arg<Index>("regularize", "offsets", offsets_obj, "iu");
        auto l1 = vector_arg<double>("regularize", "l1", l1_obj, "biuf");
        auto l2 = vector_arg<double>("regularize", "l2", l2_obj, "biuf");
        if (l1.size() + 1 != offsets.size() || l2.size() != l1.size())
          throw py::value_error("regularize: need 1-D offsets with len(l1) + 1 = len(l2) + 1 entries");
        return with_params("regularize", w_obj, [&](auto t) {
          using T = decltype(t);
          auto w = input_array<T>("regularize", {"w", w_obj});
          resolve_dtype("regularize", {{"w", w_obj}, {"g", g_obj}});
          const Index* off = offsets.data();
          const Index segments = l1.size();
          for (Index s = 0; s < segments; ++s)
            if (off[s] < 0 || off[s] > off[s + 1] || off[s + 1] > w.size())
              throw py::value_error("regularize: 'offsets' must be increasing within w");
          auto g = inout_array<T>("regularize", {"g", g_obj}, w.size());
          double total;
          {
            py::gil_scoped_release nogil;
            total = regularize<T>(w.data(), g.mutable_data(), off, segments, l1.data(), l2.data());
          }
          return total;
        });
      },
      py::arg("w"), py::arg("g"), py::arg("offsets"), py::arg("l1"), py::arg("l2"),
      "g += l1·sign(w) + 2·l2·w per segment, in place; returns the penalty Σ l1|w| + l2·w².");
  m.def(
      "ema_update",
      [](py::handle ema_obj, py::handle w_obj, double momentum) {
        if (!(momentum >= 0.0 && momentum <= 1.0))
          throw py::value_error(cat("ema_update: 'momentum' must be in [0, 1], got ", momentum));
        with_params("ema_update", ema_obj, [&](auto t) {
          using T = decltype(t);
          auto ema = inout_array<T>("ema_update", {"ema", ema_obj},
                                    py::reinterpret_borrow<py::array>(ema_obj).size());
          resolve_dtype("ema_update", {{"ema", ema_obj}, {"w", w_obj}});
          auto w = input_array<T>("ema_update", {"w", w_obj});
          if (w.size() != ema.size())
            throw py::value_error(cat("ema_update: 'w' must hold ", ema.size(), " values like 'ema', got ", w.size()));
          py::gil_scoped_release nogil;
          ema_update<T>(ema.mutable_data(), w.data(), ema.size(), momentum);
        }, "ema");
      },
      py::arg("ema"), py::arg("w"), py::arg("momentum"), "ema = m·ema + (1 - m)·w, in place.");
  m.def(
      "clip_by_value",
      [](py::handle g_obj, double c) {
        with_params("clip_by_value", g_obj, [&](auto t) {
          using T = decltype(t);
          auto g = inout_array<T>("clip_by_value", {"g", g_obj}, py::reinterpret_borrow<py::array>(g_obj).size());
          py::gil_scoped_release nogil;
          clip_by_value<T>(g.mutable_data(), g.size(), c);
        }, "g");
      },
      py::arg("g"), py::arg("clipvalue"));
  m.def(
      "scale_segments",
      [](py::handle g_obj, py::handle offsets_obj, py::handle factors_obj) {
        auto offsets = vector_arg<Index>("scale_segments", "offsets", offsets_obj, "iu");
        auto factors = vector_arg<double>("scale_segments", "factors", factors_obj, "biuf");
        if (offsets.size() != factors.size() + 1)
          throw py::value_error("scale_segments: need len(offsets) == len(factors) + 1");
        with_params("scale_segments", g_obj, [&](auto t) {
          using T = decltype(t);
          auto g = inout_array<T>("scale_segments", {"g", g_obj}, py::reinterpret_borrow<py::array>(g_obj).size());
          const Index* off = offsets.data();
          for (Index s = 0; s < factors.size(); ++s)
            if (off[s] < 0 || off[s] > off[s + 1] || off[s + 1] > g.size())
              throw py::value_error("scale_segments: 'offsets' must be increasing within g");
          py::gil_scoped_release nogil;
          scale_segments<T>(g.mutable_data(), off, factors.size(), factors.data());
        }, "g");
      },
      py::arg("g"), py::arg("offsets"), py::arg("factors"));
}

}  // namespace fastnn::bindings
