// CPU kernels for compiler/ops/dropout.py (placeholder until the kernels land).
#include "core/kernel.h"

namespace edgetune {

void register_dropout_kernels(KernelRegistry& r) { (void)r; }

}  // namespace edgetune
