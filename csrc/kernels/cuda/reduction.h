// Sums over a set of dims on the device (sum, mean, sum_to): kernels/cpu/broadcast.h's Reduction,
// deterministic the same way: each output element is summed in an order fixed by the shapes (float
// sums in double, integer sums in int64), by one thread (many outputs along a kept inner dim) or
// one block with a fixed tree; a huge reduced range over few outputs is cut into splits fixed by
// the shapes, whose partials (in the workspace) are added in split order by a second kernel.
#pragma once

#include "kernels/cuda/cuda_util.h"

namespace edgetune {
namespace cuda {

// Scratch bytes reduction_run needs for `in` with `reduced[d]` marking the summed dims.
size_t reduction_workspace(const TensorView& in, const bool* reduced);

// out = sum (or mean) of `in` over the marked dims; `in` is f32, f64, i64 or i32 (mean: floats),
// out has in's dtype and the kept dims in order. Empty sums are 0 (mean: NaN).
Status reduction_run(const KernelArgs& a, const TensorView& in, const bool* reduced, const TensorView& out, bool mean);

}  // namespace cuda
}  // namespace edgetune
