// CPU kernels for compiler/ops/optim.py (placeholder until the kernels land).
#include "core/kernel.h"

namespace edgetune {

void register_optim_kernels(KernelRegistry& r) { (void)r; }

}  // namespace edgetune
