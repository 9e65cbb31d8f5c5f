// Compiles edgetune-train's library pieces (csrc/tools/*.cc except the one holding main())
// into the C++ test binary, so the Tools* tests can call them.
//
// Why an #include of .cc files: csrc/CMakeLists.txt builds csrc/tools/*.cc only into the
// edgetune-train executable, and the test binary links just the runtime library. Listing the
// sources here (once, in this one file) keeps the tests buildable without a CMake change. If
// the build ever gains an edgetune_tools library linked into the tests, delete this file.
#include "tools/atomic_file.cc"    // NOLINT(bugprone-suspicious-include)
#include "tools/cli_args.cc"       // NOLINT(bugprone-suspicious-include)
#include "tools/embedded_plan.cc"  // NOLINT(bugprone-suspicious-include)
#include "tools/npy.cc"            // NOLINT(bugprone-suspicious-include)
#include "tools/safetensors.cc"    // NOLINT(bugprone-suspicious-include)
#include "tools/shuffle.cc"        // NOLINT(bugprone-suspicious-include)
