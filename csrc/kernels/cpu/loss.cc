// CPU kernels for compiler/ops/loss.py (placeholder until the kernels land).
#include "core/kernel.h"

namespace edgetune {

void register_loss_kernels(KernelRegistry& r) { (void)r; }

}  // namespace edgetune
