// Python bindings of the build description and the thread count.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include "args.hpp"
#include "fastnn/build_info.hpp"
#include "fastnn/parallel.hpp"

namespace fastnn::bindings {

void register_config(py::module_& m) {
  m.def(
      "build_info",
      [] {
        const BuildInfo info = fastnn::build_info();
        py::dict d;
        d["version"] = info.version;
        d["compiler"] = info.compiler;
        d["flags"] = info.flags;
        d["arch"] = info.arch;
        d["level"] = info.level;
        d["simd"] = info.simd;
        d["eigen"] = info.eigen_version;
        d["openmp"] = info.openmp;
        return d;
      },
      "What the kernels were compiled with (a dict).");
  m.def(
      "set_num_threads",
      [](py::handle n) {
        fastnn::set_num_threads(static_cast<int>(int_arg("set_num_threads", "n", n, 1, 1 << 16)));
      },
      py::arg("n"), "Sets the number of threads fastnn's kernels use.");
  m.def("get_num_threads", &fastnn::configured_threads, "Number of threads fastnn's kernels use.");
  m.def(
      "set_thread_limit",
      [](int limit) {
        if (limit < 0) throw py::value_error(cat("set_thread_limit: 'limit' must be >= 0, got ", limit));
        fastnn::set_thread_limit(limit);
      },
      py::arg("limit"), "Caps the threads kernels use (0: no cap) without changing the configured count.");
  m.def("thread_limit", &fastnn::thread_limit, "The current thread cap (0: none).");
  m.def("threads_in_use", &fastnn::num_threads, "Threads kernels use now: the configured count, capped.");
  m.def("release_threads", &fastnn::release_threads,
        "Ends OpenMP's worker threads (they restart when needed); called before fork.");
  m.def("num_processors", &fastnn::num_processors, "Processors available to OpenMP.");
  m.def("have_openmp", &fastnn::have_openmp, "Whether this build runs kernels on several threads.");
  m.attr("parallel_min_flops") = kParallelMinFlops;
}

}  // namespace fastnn::bindings
