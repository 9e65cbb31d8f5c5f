// CPU kernels for compiler/ops/conv.py (placeholder until the kernels land).
#include "core/kernel.h"

namespace edgetune {

void register_conv_kernels(KernelRegistry& r) { (void)r; }

}  // namespace edgetune
