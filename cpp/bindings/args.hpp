// Argument handling at the binding boundary, shared by every kernel family.
//
// The contract (documented for users in fastnn.ops):
// - float32 / float64 C-contiguous ndarrays pass through without a copy;
// - other array-likes (lists, integer or bool arrays, float16, non-contiguous views,
//   non-native byte order) are converted once to a C-contiguous array of the call's
//   compute dtype;
// - the compute dtype is that of the float32/float64 ndarrays among the arguments, which
//   must agree (mixing them is a TypeError, never a silent cast); float32 when none decides;
// - every rejection is a TypeError or ValueError naming the function, the argument, what
//   was expected and what came.
#pragma once

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <cstdint>
#include <initializer_list>
#include <sstream>
#include <string>
#include <vector>

#include "fastnn/parallel.hpp"

namespace fastnn::bindings {

namespace py = pybind11;

enum class DType { Float32, Float64 };

/// A named argument of a binding; value None means "not given".
struct Arg {
  const char* name;
  py::handle value;
};

/// Concatenates anything printable: error messages.
template <typename... Parts>
std::string cat(const Parts&... parts) {
  std::ostringstream s;
  (s << ... << parts);
  return s.str();
}

std::string shape_str(const std::vector<Index>& shape);  // "(2, 3)"
std::vector<Index> shape_of(const py::array& a);
/// What a value is, for error messages: "float64 array of shape (2, 3)", "list", "None".
std::string describe(py::handle value);

/// The compute dtype of a call (see the contract above).
DType resolve_dtype(const char* func, std::initializer_list<Arg> args);

/// arg.value as a C-contiguous ndarray of T (no copy when it already is one).
template <typename T>
py::array_t<T> input_array(const char* func, const Arg& arg);

/// arg.value as an ndarray the kernel may write: exactly dtype T, `shape`, C-contiguous,
/// writeable. Never copied (a copy would hide the result from the caller).
template <typename T>
py::array_t<T> output_array(const char* func, const Arg& arg, const std::vector<Index>& shape);

/// arg.value as an ndarray the kernel updates in place (parameters, optimizer state,
/// gradient buffers): exactly dtype T, C-contiguous, writeable, `size` values (any shape).
template <typename T>
py::array_t<T> inout_array(const char* func, const Arg& arg, Index size);

/// The optional output arg.value (output_array) kept in `keep`: its data, or nullptr for None.
template <typename T>
T* optional_output(const char* func, const Arg& arg, const std::vector<Index>& shape,
                   py::array_t<T>& keep) {
  if (arg.value.is_none()) return nullptr;
  keep = output_array<T>(func, arg, shape);
  return keep.mutable_data();
}

/// An integer argument: a Python int or anything with __index__ (NumPy integers), not a bool
/// or a float, in [min_value, max_value]; otherwise a TypeError / ValueError naming the
/// argument and the accepted range (never pybind11's "Unable to cast ... to C++ type").
Index int_arg(const char* func, const std::string& name, py::handle value, Index min_value,
              Index max_value = PTRDIFF_MAX);

/// Two such integers (a tuple or list of two, e.g. strides).
std::pair<Index, Index> int_pair_arg(const char* func, const char* name, py::handle value,
                                     Index min_value);

/// Arithmetic on sizes that come from users (shapes, strides, dilations, paddings, repeats):
/// exact, or a ValueError saying what overflows (`what`: "the output height"...), never a
/// wrap-around. Operands are >= 0.
Index checked_add(const char* func, const std::string& what, Index a, Index b);
Index checked_mul(const char* func, const std::string& what, Index a, Index b);

/// `shape` itself, once its size in bytes (elements of `itemsize` bytes) is known to fit in
/// 2**63 - 1 (NumPy's limit), so that a huge result is a ValueError naming the function.
std::vector<Index> checked_shape(const char* func, std::vector<Index> shape, Index itemsize = 8);

/// ValueError unless epsilon is a finite number > 0.
void require_epsilon(const char* func, double epsilon);

/// A new C-contiguous array of T with `shape`.
template <typename T>
py::array_t<T> new_array(const std::vector<Index>& shape) {
  return py::array_t<T>(std::vector<py::ssize_t>(shape.begin(), shape.end()));
}

/// When `want`: a new array of T with `shape` stored in `out`, and its data; else nullptr
/// (out left None). For outputs a caller may skip (dx with need_dx=False).
template <typename T>
T* new_array_if(bool want, const std::vector<Index>& shape, py::object& out) {
  out = py::none();
  if (!want) return nullptr;
  auto a = new_array<T>(shape);
  T* data = a.mutable_data();
  out = std::move(a);
  return data;
}

/// ValueError unless a's shape is `shape`.
void require_shape(const char* func, const char* name, const py::array& a,
                   const std::vector<Index>& shape);

/// ValueError unless min_ndim <= a.ndim() <= max_ndim (max_ndim < 0: no upper bound).
void require_ndim(const char* func, const char* name, const py::array& a, int min_ndim,
                  int max_ndim = -1);

/// ValueError when an output shares memory with an input (the kernel would read what it
/// has already overwritten).
void require_no_overlap(const char* func, const char* out_name, const py::array& out,
                        const char* in_name, const py::array& in);

/// Calls f(T{}) with T the C++ type of dtype.
template <typename F>
decltype(auto) dispatch(DType dtype, F&& f) {
  if (dtype == DType::Float32) return f(float{});
  return f(double{});
}

}  // namespace fastnn::bindings
