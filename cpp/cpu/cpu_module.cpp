// The extension module fastnn._cpu: which instruction-set features this CPU and its operating
// system offer, read with cpuid and xgetbv (x86-64) or the kernel's hardware capabilities
// (aarch64).
//
// fastnn/isa.py calls it before it loads a kernel module, so it must run on any CPU: it is
// compiled for the baseline, with the Python C API only (no Eigen, no OpenMP, no pybind11).
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#define FASTNN_CPU_X86 1
#elif defined(__aarch64__) && defined(__linux__)
#include <sys/auxv.h>
#define FASTNN_CPU_ARM64 1
#endif

namespace {

#ifdef FASTNN_CPU_X86
struct Registers {
  unsigned eax = 0, ebx = 0, ecx = 0, edx = 0;
};

Registers cpuid(unsigned leaf, unsigned subleaf = 0) {
  Registers r;
  if (!__get_cpuid_count(leaf, subleaf, &r.eax, &r.ebx, &r.ecx, &r.edx)) r = Registers{};
  return r;
}

// The register-state components the OS saves on a context switch (XCR0). AVX needs the
// SSE and AVX states (bits 1-2), AVX-512 also the opmask and both ZMM halves (bits 5-7):
// a CPU with AVX-512 under an OS that does not save them cannot use it.
std::uint64_t xgetbv0() {
  unsigned lo = 0, hi = 0;
  __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
  return (std::uint64_t(hi) << 32) | lo;
}

bool bit(unsigned reg, int n) { return (reg >> n) & 1u; }

// Names follow the x86-64 psABI's level definitions (and GCC's -m options).
std::vector<const char*> features() {
  std::vector<const char*> out;
  const unsigned max_leaf = cpuid(0).eax;
  const Registers l1 = cpuid(1);
  const Registers l7 = max_leaf >= 7 ? cpuid(7, 0) : Registers{};
  const Registers l7s1 = max_leaf >= 7 && l7.eax >= 1 ? cpuid(7, 1) : Registers{};
  const unsigned max_ext = cpuid(0x80000000u).eax;
  const Registers e1 = max_ext >= 0x80000001u ? cpuid(0x80000001u) : Registers{};

  const bool osxsave = bit(l1.ecx, 27);
  const std::uint64_t xcr0 = osxsave ? xgetbv0() : 0;
  const bool avx_state = (xcr0 & 0x6) == 0x6;
  const bool avx512_state = avx_state && (xcr0 & 0xe0) == 0xe0;

  auto add = [&out](bool present, const char* name) {
    if (present) out.push_back(name);
  };
  add(bit(l1.edx, 26), "sse2");
  add(bit(l1.ecx, 0), "sse3");
  add(bit(l1.ecx, 9), "ssse3");
  add(bit(l1.ecx, 19), "sse4.1");
  add(bit(l1.ecx, 20), "sse4.2");
  add(bit(l1.ecx, 23), "popcnt");
  add(bit(l1.ecx, 13), "cx16");
  add(bit(e1.ecx, 0), "lahf");
  add(bit(l1.ecx, 22), "movbe");
  add(osxsave, "osxsave");
  add(bit(l7.ebx, 3), "bmi1");
  add(bit(l7.ebx, 8), "bmi2");
  add(bit(e1.ecx, 5), "lzcnt");
  // The vector extensions count only when the OS saves their registers.
  add(avx_state && bit(l1.ecx, 28), "avx");
  add(avx_state && bit(l1.ecx, 12), "fma");
  add(avx_state && bit(l1.ecx, 29), "f16c");
  add(avx_state && bit(l7.ebx, 5), "avx2");
  add(avx_state && bit(l7s1.eax, 4), "avxvnni");
  add(avx512_state && bit(l7.ebx, 16), "avx512f");
  add(avx512_state && bit(l7.ebx, 17), "avx512dq");
  add(avx512_state && bit(l7.ebx, 28), "avx512cd");
  add(avx512_state && bit(l7.ebx, 30), "avx512bw");
  add(avx512_state && bit(l7.ebx, 31), "avx512vl");
  add(avx512_state && bit(l7.ecx, 11), "avx512vnni");
  add(avx512_state && bit(l7s1.eax, 5), "avx512bf16");
  add(avx512_state && bit(l7.edx, 23), "avx512fp16");
  return out;
}

std::string vendor() {
  const Registers r = cpuid(0);
  char name[13] = {};
  std::memcpy(name, &r.ebx, 4);
  std::memcpy(name + 4, &r.edx, 4);
  std::memcpy(name + 8, &r.ecx, 4);
  return name;
}

std::string brand() {
  if (cpuid(0x80000000u).eax < 0x80000004u) return "";
  char text[49] = {};
  for (unsigned i = 0; i < 3; ++i) {
    const Registers r = cpuid(0x80000002u + i);
    std::memcpy(text + 16 * i, &r.eax, 4);
    std::memcpy(text + 16 * i + 4, &r.ebx, 4);
    std::memcpy(text + 16 * i + 8, &r.ecx, 4);
    std::memcpy(text + 16 * i + 12, &r.edx, 4);
  }
  std::string s(text);
  const auto first = s.find_first_not_of(' ');
  const auto last = s.find_last_not_of(' ');
  return first == std::string::npos ? "" : s.substr(first, last - first + 1);
}
#elif defined(FASTNN_CPU_ARM64)
std::vector<const char*> features() {
  std::vector<const char*> out;
  const unsigned long hwcap = getauxval(AT_HWCAP);
  // Bit numbers of the Linux arm64 hwcaps (asm/hwcap.h).
  if (hwcap & (1ul << 0)) out.push_back("fp");
  if (hwcap & (1ul << 1)) out.push_back("asimd");
  if (hwcap & (1ul << 20)) out.push_back("asimddp");
  if (hwcap & (1ul << 22)) out.push_back("sve");
  return out;
}
std::string vendor() { return ""; }
std::string brand() { return ""; }
#else
std::vector<const char*> features() { return {}; }
std::string vendor() { return ""; }
std::string brand() { return ""; }
#endif

PyObject* py_features(PyObject*, PyObject*) {
  const std::vector<const char*> names = features();
  PyObject* tuple = PyTuple_New(Py_ssize_t(names.size()));
  if (!tuple) return nullptr;
  for (std::size_t i = 0; i < names.size(); ++i) {
    PyObject* name = PyUnicode_FromString(names[i]);
    if (!name) {
      Py_DECREF(tuple);
      return nullptr;
    }
    PyTuple_SET_ITEM(tuple, Py_ssize_t(i), name);
  }
  return tuple;
}

PyObject* py_vendor(PyObject*, PyObject*) { return PyUnicode_FromString(vendor().c_str()); }
PyObject* py_brand(PyObject*, PyObject*) { return PyUnicode_FromString(brand().c_str()); }

PyMethodDef methods[] = {
    {"features", py_features, METH_NOARGS,
     "features()\n--\n\nThe instruction-set features this CPU has and its OS enables, as a tuple of names."},
    {"vendor", py_vendor, METH_NOARGS, "vendor()\n--\n\nThe CPU's vendor string (\"\" where unknown)."},
    {"brand", py_brand, METH_NOARGS, "brand()\n--\n\nThe CPU's model name (\"\" where unknown)."},
    {nullptr, nullptr, 0, nullptr},
};

PyModuleDef module = {PyModuleDef_HEAD_INIT, "_cpu",
                      "What the CPU offers: fastnn.isa reads it to choose a kernel module.", -1, methods,
                      nullptr, nullptr, nullptr, nullptr};

}  // namespace

PyMODINIT_FUNC PyInit__cpu() { return PyModule_Create(&module); }
