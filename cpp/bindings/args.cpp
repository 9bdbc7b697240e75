#include "args.hpp"

#include <cmath>

#include <cstdint>

namespace fastnn::bindings {

std::string shape_str(const std::vector<Index>& shape) {
  std::string s = "(";
  for (size_t i = 0; i < shape.size(); ++i) {
    if (i) s += ", ";
    s += std::to_string(shape[i]);
  }
  if (shape.size() == 1) s += ",";
  return s + ")";
}

std::vector<Index> shape_of(const py::array& a) {
  return std::vector<Index>(a.shape(), a.shape() + a.ndim());
}

std::string describe(py::handle value) {
  if (value.is_none()) return "None";
  if (py::isinstance<py::array>(value)) {
    auto a = py::reinterpret_borrow<py::array>(value);
    return cat(std::string(py::str(a.dtype())), " array of shape ", shape_str(shape_of(a)));
  }
  return std::string(py::str(py::type::handle_of(value).attr("__name__")));
}

namespace {
// float32/float64 ndarrays decide the compute dtype; 0 = this argument does not decide.
int deciding_bits(py::handle value) {
  if (!py::isinstance<py::array>(value)) return 0;
  auto dt = py::reinterpret_borrow<py::array>(value).dtype();
  if (dt.kind() != 'f') return 0;
  if (dt.itemsize() == 4) return 32;
  if (dt.itemsize() == 8) return 64;
  return 0;
}
}  // namespace

Index int_arg(const char* func, const std::string& name, py::handle value, Index min_value,
              Index max_value) {
  const auto range = [&] {
    return max_value == PTRDIFF_MAX ? cat(">= ", min_value) : cat("in [", min_value, ", ", max_value, "]");
  };
  if (PyBool_Check(value.ptr()) || !PyIndex_Check(value.ptr()))
    throw py::type_error(cat(func, ": '", name, "' must be an int ", range(), ", got ",
                             describe(value)));
  py::object index = py::reinterpret_steal<py::object>(PyNumber_Index(value.ptr()));
  if (!index) throw py::error_already_set();
  int overflow = 0;
  const long long v = PyLong_AsLongLongAndOverflow(index.ptr(), &overflow);
  if (overflow || v < min_value || v > max_value)
    throw py::value_error(cat(func, ": '", name, "' must be an int ", range(), ", got ",
                              std::string(py::str(index))));
  return Index(v);
}

std::pair<Index, Index> int_pair_arg(const char* func, const char* name, py::handle value,
                                     Index min_value) {
  if (!(py::isinstance<py::tuple>(value) || py::isinstance<py::list>(value)) || py::len(value) != 2)
    throw py::type_error(cat(func, ": '", name, "' must be a pair of ints >= ", min_value, ", got ",
                             std::string(py::repr(value))));
  const auto items = py::reinterpret_borrow<py::sequence>(value);
  return {int_arg(func, name, items[0], min_value), int_arg(func, name, items[1], min_value)};
}

Index checked_add(const char* func, const std::string& what, Index a, Index b) {
  Index r = 0;
  if (__builtin_add_overflow(a, b, &r))
    throw py::value_error(cat(func, ": ", what, " (", a, " + ", b, ") exceeds 2**63 - 1"));
  return r;
}

Index checked_mul(const char* func, const std::string& what, Index a, Index b) {
  Index r = 0;
  if (__builtin_mul_overflow(a, b, &r))
    throw py::value_error(cat(func, ": ", what, " (", a, " × ", b, ") exceeds 2**63 - 1"));
  return r;
}

std::vector<Index> checked_shape(const char* func, std::vector<Index> shape, Index itemsize) {
  // NumPy bounds the product of the nonzero sizes even for an empty array ("array is too
  // big", naming no function): the same bound here, named.
  Index bytes = itemsize;
  for (Index d : shape)
    if (d == 0)
      continue;
    else if (bytes > PTRDIFF_MAX / d)
      throw py::value_error(cat(func, ": the result would have shape ", shape_str(shape),
                                ": its sizes (zeros aside) times ", itemsize,
                                " bytes pass 2**63 - 1"));
    else
      bytes *= d;
  return shape;
}

DType resolve_dtype(const char* func, std::initializer_list<Arg> args) {
  const Arg* decided = nullptr;
  int bits = 0;
  for (const Arg& arg : args) {
    const int b = deciding_bits(arg.value);
    if (!b) continue;
    if (!decided) {
      decided = &arg;
      bits = b;
    } else if (b != bits) {
      throw py::type_error(cat(func, ": '", decided->name, "' is float", bits, " but '", arg.name,
                               "' is float", b, "; fastnn does not mix precisions silently: "
                               "cast one of them (e.g. x.astype(np.float32))"));
    }
  }
  return bits == 64 ? DType::Float64 : DType::Float32;
}

template <typename T>
py::array_t<T> input_array(const char* func, const Arg& arg) {
  using Array = py::array_t<T, py::array::c_style | py::array::forcecast>;
  py::handle value = arg.value;
  if (py::array_t<T, py::array::c_style>::check_(value))  // fast path: no copy
    return py::reinterpret_borrow<py::array_t<T>>(value);
  if (value.is_none())
    throw py::type_error(cat(func, ": '", arg.name, "' must be an array, got None"));

  py::array array;
  if (py::isinstance<py::array>(value)) {
    array = py::reinterpret_borrow<py::array>(value);
  } else {
    try {
      array = py::module_::import("numpy").attr("asarray")(value);
    } catch (py::error_already_set& e) {
      const std::string why = cat(func, ": '", arg.name, "' could not be read as a numeric array (",
                                  describe(value), "): ", e.what());
      if (e.matches(PyExc_ValueError)) throw py::value_error(why);
      throw py::type_error(why);
    }
  }
  const char kind = array.dtype().kind();
  if (kind != 'f' && kind != 'i' && kind != 'u' && kind != 'b')
    throw py::type_error(cat(func, ": '", arg.name,
                             "' must hold real numbers (float32 or float64), got ",
                             describe(array)));
  Array converted = Array::ensure(array);
  if (!converted) {
    PyErr_Clear();
    throw py::type_error(cat(func, ": '", arg.name, "' could not be converted to ",
                             sizeof(T) == 4 ? "float32" : "float64", " (", describe(array), ")"));
  }
  return converted;
}

template <typename T>
py::array_t<T> output_array(const char* func, const Arg& arg, const std::vector<Index>& shape) {
  const char* want = sizeof(T) == 4 ? "float32" : "float64";
  if (!py::isinstance<py::array>(arg.value))
    throw py::type_error(cat(func, ": '", arg.name, "' must be a numpy.ndarray of ", want,
                             " and shape ", shape_str(shape), ", got ", describe(arg.value)));
  auto array = py::reinterpret_borrow<py::array>(arg.value);
  if (!py::array_t<T>::check_(array))
    throw py::type_error(cat(func, ": '", arg.name, "' must have dtype ", want,
                             " (the dtype of this call), got ", describe(array)));
  if (shape_of(array) != shape)
    throw py::value_error(cat(func, ": '", arg.name, "' must have shape ", shape_str(shape),
                              ", got ", shape_str(shape_of(array))));
  if (!(array.flags() & py::array::c_style))
    throw py::value_error(cat(func, ": '", arg.name,
                              "' must be C-contiguous (results are written into it in place)"));
  if (!array.writeable())
    throw py::value_error(cat(func, ": '", arg.name, "' is read-only"));
  return py::reinterpret_borrow<py::array_t<T>>(array);
}

template <typename T>
py::array_t<T> inout_array(const char* func, const Arg& arg, Index size) {
  const char* want = sizeof(T) == 4 ? "float32" : "float64";
  if (!py::isinstance<py::array>(arg.value))
    throw py::type_error(cat(func, ": '", arg.name, "' must be a numpy.ndarray of ", want,
                             ", got ", describe(arg.value)));
  auto array = py::reinterpret_borrow<py::array>(arg.value);
  if (!py::array_t<T>::check_(array))
    throw py::type_error(cat(func, ": '", arg.name, "' must have dtype ", want, ", got ",
                             describe(array)));
  if (array.size() != size)
    throw py::value_error(cat(func, ": '", arg.name, "' must hold ", size, " values, got ",
                              array.size(), " (shape ", shape_str(shape_of(array)), ")"));
  if (!(array.flags() & py::array::c_style))
    throw py::value_error(cat(func, ": '", arg.name, "' must be C-contiguous (updated in place)"));
  if (!array.writeable()) throw py::value_error(cat(func, ": '", arg.name, "' is read-only"));
  return py::reinterpret_borrow<py::array_t<T>>(array);
}

void require_shape(const char* func, const char* name, const py::array& a,
                   const std::vector<Index>& shape) {
  if (shape_of(a) != shape)
    throw py::value_error(cat(func, ": '", name, "' must have shape ", shape_str(shape), ", got ",
                              shape_str(shape_of(a))));
}

void require_ndim(const char* func, const char* name, const py::array& a, int min_ndim,
                  int max_ndim) {
  const int nd = static_cast<int>(a.ndim());
  if (nd >= min_ndim && (max_ndim < 0 || nd <= max_ndim)) return;
  std::string expected = max_ndim < 0          ? cat("at least ", min_ndim)
                         : min_ndim == max_ndim ? cat(min_ndim)
                                                : cat(min_ndim, " to ", max_ndim);
  throw py::value_error(cat(func, ": '", name, "' must have ", expected, " dimension",
                            (max_ndim == 1 && min_ndim == 1) ? "" : "s", ", got ", nd,
                            " (shape ", shape_str(shape_of(a)), ")"));
}

void require_no_overlap(const char* func, const char* out_name, const py::array& out,
                        const char* in_name, const py::array& in) {
  if (out.size() == 0 || in.size() == 0) return;
  // Both are C-contiguous here, so each spans [data, data + nbytes).
  const auto o = reinterpret_cast<std::uintptr_t>(out.data());
  const auto i = reinterpret_cast<std::uintptr_t>(in.data());
  const auto o_end = o + static_cast<std::uintptr_t>(out.nbytes());
  const auto i_end = i + static_cast<std::uintptr_t>(in.nbytes());
  if (o < i_end && i < o_end)
    throw py::value_error(cat(func, ": '", out_name, "' shares memory with '", in_name,
                              "'; pass a separate output array"));
}

void require_epsilon(const char* func, double epsilon) {
  if (!(epsilon > 0) || !std::isfinite(epsilon))
    throw py::value_error(cat(func, ": 'epsilon' must be a finite number > 0, got ", epsilon));
}

template py::array_t<float> inout_array<float>(const char*, const Arg&, Index);
template py::array_t<double> inout_array<double>(const char*, const Arg&, Index);
template py::array_t<float> input_array<float>(const char*, const Arg&);
template py::array_t<double> input_array<double>(const char*, const Arg&);
template py::array_t<float> output_array<float>(const char*, const Arg&, const std::vector<Index>&);
template py::array_t<double> output_array<double>(const char*, const Arg&,
                                                  const std::vector<Index>&);

}  // namespace fastnn::bindings
