// The `layout` attr of conv2d / conv2d_grad_input / conv2d_grad_weight and batch_norm_* (what the
// compiler's layout pass writes: "nhwc" where a region of a CNN runs channels-last; absent or
// "nchw" is the NCHW layout every kernel has always run), and the NHWC convolution paths that
// conv.cc's op-named kernels hand such nodes to (conv_nhwc.cc says how they work).
//
// read_layout lives here rather than in cpu_util.h so that every kernel that must accept or refuse
// the attr (conv.cc, conv_winograd.cc, norm.cc, and the CUDA checks in kernels/cuda/) reads it the
// same way: one spelling of the error for an unknown layout.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

#include "core/kernel.h"
#include "core/thread_pool.h"
#include "kernels/cpu/gemm.h"

namespace edgetune {
namespace nhwc {

// The node's layout: *nhwc = false when the attr is absent or "nchw", true when "nhwc". Any other
// value (or a non-string attr) is an invalid_argument naming `kernel`. No allocation unless it fails.
inline Status read_layout(const Attrs& attrs, const char* kernel, bool* nhwc) {
  *nhwc = false;
  const Attr* at = attrs.find("layout");
  if (!at) return Status::Ok();
  if (at->kind != AttrKind::kString) return invalid_argument(std::string(kernel) + ": attr 'layout' must be a string");
  if (at->s == "nchw") return Status::Ok();
  if (at->s == "nhwc") {
    *nhwc = true;
    return Status::Ok();
  }
  return invalid_argument(std::string(kernel) + ": unknown layout '" + at->s + "' (want nchw or nhwc)");
}

// For the kernels that run NCHW only: an error when the node asks for anything but NCHW.
// `where` says what runs NHWC instead ("the conv2d kernel"), or null when nothing does.
inline Status refuse_nhwc(const Attrs& attrs, const char* kernel, const char* where) {
  bool is_nhwc;
  ET_RETURN_IF_ERROR(read_layout(attrs, kernel, &is_nhwc));
  if (!is_nhwc) return Status::Ok();
  if (!where) return invalid_argument(std::string(kernel) + " runs NCHW only; layout nhwc has no kernel here");
  return invalid_argument(std::string(kernel) + " runs NCHW only; layout nhwc runs on " + where);
}

// One NHWC convolution's geometry, in logical terms: x [N, H, W, C] (stored), w [O, C/G, KH, KW],
// y [N, HO, WO, O] (stored). Filled and validated by conv.cc.
struct ConvShape {
  int64_t N, C, H, W;
  int64_t O, KH, KW;
  int64_t HO, WO;
  int64_t SH, SW, PH, PW, DH, DW, G;
};

// What NHWC runs: a pointwise conv (1x1, stride 1, no padding, groups 1) is one GEMM over the
// N*H*W pixel rows; a depthwise conv with channel multiplier 1 (groups = C = O) runs direct loops
// over the contiguous channels. Every other geometry has no NHWC path (kNone).
enum class Kind { kNone = 0, kPointwise = 1, kDepthwise = 2 };
Kind kind_of(const ConvShape& s);

// Scratch bytes the NHWC paths need for one op (conv.cc's kForward, kGradInput, kGradWeight = 0, 1, 2):
// the depthwise forward / grad_input keep the filters tap-major ([KH*KW, C]) there, the pointwise
// grad_weight the partial products of its K chunks (when it splits K).
size_t workspace_bytes(const ConvShape& s, int op);

// y = clamp(conv(x, w) + bias, lo, hi); bias may be null. ws: workspace_bytes(s, 0) bytes.
void forward(const ConvShape& s, const float* x, const float* w, const float* bias, float lo, float hi, float* y,
             void* ws, ThreadPool* pool);
// dx = conv_transpose(dy, w), zeroed where mask (null: none) says; the mask indexes dx as stored.
// ws: workspace_bytes(s, 1) bytes.
void grad_input(const ConvShape& s, const float* dy, const float* w, const OutputMask* mask, float* dx, void* ws,
                ThreadPool* pool);
// dw[O, C/G, KH, KW] = the sums over the batch of dy (x) x. ws: workspace_bytes(s, 2) bytes.
void grad_weight(const ConvShape& s, const float* dy, const float* x, float* dw, void* ws, ThreadPool* pool);

}  // namespace nhwc
}  // namespace edgetune
