// The extension module fastnn._core: checks that this CPU runs what the kernels were
// compiled for, then registers each kernel family's bindings.
//
// This file is compiled for the baseline instruction set (see CMakeLists.txt), so the
// check below runs before any AVX/AVX-512 instruction could fault.
#include <pybind11/pybind11.h>

#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "args.hpp"
#include "fastnn/build_info.hpp"

namespace py = pybind11;

namespace fastnn::bindings {
void register_activation(py::module_& m);
void register_attention(py::module_& m);
void register_batchnorm(py::module_& m);
void register_config(py::module_& m);
void register_conv(py::module_& m);
void register_dense(py::module_& m);
void register_dropout(py::module_& m);
void register_gemm(py::module_& m);
void register_image(py::module_& m);
void register_layernorm(py::module_& m);
void register_loss(py::module_& m);
void register_optim(py::module_& m);
void register_pool(py::module_& m);
void register_rnn(py::module_& m);
void register_qgemm(py::module_& m);

namespace {
// Writes the names of the features the build needs but this CPU lacks into `out` ("" when all
// are present). Only C strings: a std::string helper instantiated here could be merged at link
// time with the kernels' copy, compiled for the very instructions this CPU may lack (the kernels
// themselves run no code before this check: they have no static initialisers).
void missing_isa(char* out, std::size_t size) {
  out[0] = '\0';
#if defined(__x86_64__) || defined(__i386__)
  const unsigned need = required_isa();
  __builtin_cpu_init();
  const struct {
    unsigned bit;
    const char* name;
    bool present;
  } features[] = {
      {kIsaSse42, "sse4.2", bool(__builtin_cpu_supports("sse4.2"))},
      {kIsaAvx, "avx", bool(__builtin_cpu_supports("avx"))},
      {kIsaAvx2, "avx2", bool(__builtin_cpu_supports("avx2"))},
      {kIsaFma, "fma", bool(__builtin_cpu_supports("fma"))},
      {kIsaAvx512f, "avx512f", bool(__builtin_cpu_supports("avx512f"))},
      {kIsaAvx512dq, "avx512dq", bool(__builtin_cpu_supports("avx512dq"))},
      {kIsaAvx512bw, "avx512bw", bool(__builtin_cpu_supports("avx512bw"))},
      {kIsaAvx512vl, "avx512vl", bool(__builtin_cpu_supports("avx512vl"))},
  };
  for (const auto& f : features)
    if ((need & f.bit) && !f.present) {
      if (out[0]) std::strncat(out, ", ", size - std::strlen(out) - 1);
      std::strncat(out, f.name, size - std::strlen(out) - 1);
    }
#else
  (void)size;
#endif
}

// Every function gets a second overload taking anything. pybind11 tries all overloads without
// implicit conversions before any with them, so this one is reached both when an argument
// cannot convert and when it needs a conversion (an int for a double or bool): diagnose
// (fastnn._arguments) converts what pybind11 would and calls again, or raises the error that
// names the argument instead of pybind11's "incompatible function arguments".
void add_argument_diagnostics(py::module_& m) {
  std::vector<std::string> names;
  for (auto item : py::reinterpret_borrow<py::dict>(m.attr("__dict__")))
    if (PyCFunction_Check(item.second.ptr())) names.push_back(std::string(py::str(item.first)));
  for (const std::string& name : names) {
    const std::string doc = py::str(m.attr(name.c_str()).attr("__doc__"));
    const std::string signature = doc.substr(0, doc.find('\n'));
    m.def(name.c_str(), [name, signature](py::args args, py::kwargs kwargs) -> py::object {
      return py::module_::import("fastnn._arguments").attr("diagnose")(name, signature, args, kwargs);
    });
  }
}
}  // namespace
}  // namespace fastnn::bindings

PYBIND11_MODULE(_core, m) {
  using namespace fastnn::bindings;
  char missing[128];
  missing_isa(missing, sizeof missing);
  if (missing[0]) {
    char message[512];
    std::snprintf(message, sizeof message,
                  "fastnn was compiled for a CPU with %s, which this CPU lacks. Reinstall it on this machine "
                  "(pip install --force-reinstall --no-cache-dir fastnn), or build a portable copy with "
                  "FASTNN_ARCH=portable.",
                  missing);
    throw py::import_error(message);
  }
  m.doc() = "fastnn's C++ kernels (Eigen + OpenMP). Use fastnn.ops for the documented interface.";
  register_config(m);
  register_gemm(m);
  register_activation(m);
  register_dense(m);
  register_loss(m);
  register_optim(m);
  register_dropout(m);
  register_conv(m);
  register_image(m);
  register_pool(m);
  register_batchnorm(m);
  register_layernorm(m);
  register_attention(m);
  register_rnn(m);
  register_qgemm(m);
  add_argument_diagnostics(m);
}
