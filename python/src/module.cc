// SPDX-License-Identifier: Apache-2.0
// The extension module flowkv._flowkv: creates the module and hands it to
// each concept's Init function (errors first: the others raise its
// exceptions). The package flowkv (python/flowkv/__init__.py) re-exports it.

#include "bindings.h"
#include "flowkv/version.h"

PYBIND11_MODULE(_flowkv, m) {
  m.doc() =
      "flowkv's C++ library: KV layouts, block allocation, the UCX transfer "
      "engine, KvTransfer, schedulers and the cluster simulator. Import the "
      "package flowkv rather than this module.";
  m.attr("__version__") = flowkv::Version();
  m.def("version", &flowkv::Version,
        "The version of the linked C++ library (flowkv::Version()).");
  flowkv::python::InitErrors(m);
  flowkv::python::InitLayout(m);
  flowkv::python::InitAllocator(m);
  flowkv::python::InitTransferHandle(m);
  flowkv::python::InitEngine(m);
  flowkv::python::InitPoolMemory(m);
  flowkv::python::InitKvTransfer(m);
  flowkv::python::InitScheduler(m);
  flowkv::python::InitSim(m);
  flowkv::python::InitBench(m);
}
