// oneDNN convolutions (NCHW, f32, one group): the variants "conv2d.onednn",
// "conv2d_grad_input.onednn" and "conv2d_grad_weight.onednn" of the own kernels in conv.cc. Built
// only where cmake/onednn.cmake found oneDNN 3.x (EDGETUNE_HAVE_ONEDNN); the kernel-selection pass
// times or estimates them against the own kernels per node, like every other variant.
//
// Why: a dense k x k convolution at ~90% of the machine's sgemm peak needs a direct convolution with
// per-shape register blocking over a blocked layout (nChw16c on AVX-512). oneDNN's brgemm / JIT
// convolutions are that (and are what PyTorch runs); im2col + sgemm stays near 60-75% because of
// the column copies and the small GEMMs of late stages. Measured on ResNet-18's 3x3 layers (Intel
// Xeon, 2 threads, batch 8, the layout conversions below included): 310-400 GFLOP/s against
// 150-260 for the own kernels (benchmarks/kernel_bench.cc "oneDNN").
//
// Layout: the plan's tensors stay NCHW (plain); each run converts (oneDNN reorders) into the
// layouts oneDNN's primitive asked for, in the node's workspace:
//   [weights, blocked][input chunk, blocked][output chunk, blocked]
// (a buffer is absent where the primitive takes the plain layout itself, e.g. a 3-channel input).
// Weights are converted on every run (they may be trainable). Images go through in chunks of
// `chunk_images` so the two activation buffers stay near kChunkBudget: the workspace is what the
// memory planner sees, and the kernel-selection pass keeps the variant only where its workspace
// leaves the planned peak where it was.
//
// grad_input: dx = conv_backward_data(dy, w), then the optional activation mask (u8 bits or the f32
// activation output) zeroes dx where the producing activation had zero slope, per image as it lands.
// grad_weight: dw = sum over chunks of conv_backward_weights(x chunk, dy chunk); chunk 0 writes dw,
// later chunks add (a reorder with a sum post-op), so the chunking fixes the order of the sums.
// Forward: bias and the fused activation (relu / hardtanh) are oneDNN attributes (an eltwise
// post-op), computed while the output block is in registers.
//
// Threads: oneDNN here runs on OpenMP (the PyPI wheel's runtime); each run sets the calling thread's
// OpenMP thread count to the session's (ThreadPool::num_threads), and primitives are created per
// thread count. The forward and input-gradient results do not depend on it (each output element
// is one thread's sum; the C++ tests compare 1 and 2 threads bitwise); the weight gradient's
// reduction over images is oneDNN's and may round differently for another thread count.
// oneDNN keeps its own scratchpad (library mode): a few KiB to the size of one image's blocked
// rows per thread, outside the planned arena, allocated once per primitive.
//
// Primitives (JIT-compiled per shape) are created once per geometry, chunk size and thread count,
// on first use (check / workspace at plan load), and cached for the process: a run looks them up
// under a mutex and allocates nothing itself. Check refuses what oneDNN would run with its
// reference implementation ("ref:any": orders of magnitude slower), grouped convolutions (the
// depthwise kernels cover those), pointwise ones (1x1, stride 1, no padding: a single GEMM on the
// plan's own layout, conv.cc) and layout nhwc.
#include "kernels/cpu/conv_onednn.h"

#ifdef EDGETUNE_HAVE_ONEDNN

#include <oneapi/dnnl/dnnl.hpp>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <limits>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <tuple>
#include <unordered_map>

#include "core/kernel.h"
#include "kernels/cpu/conv_nhwc.h"
#include "kernels/cpu/cpu_util.h"
#include "kernels/cpu/gemm.h"

// libgomp's (the oneDNN wheel's OpenMP runtime): the calling thread's team size for the next run
extern "C" void omp_set_num_threads(int num_threads);

namespace edgetune {
namespace {
// Own namespace: unity builds put this file in one translation unit with conv.cc.
namespace onednn {

using dnnl::memory;
using Tag = memory::format_tag;

// Bytes of the two blocked activation buffers of one chunk (input + output) before a run splits
// the batch into chunks. 4 MiB: ResNet-18 224's 56x56x64 stage runs two images per primitive call;
// measured, the calls of more images were not faster per image beyond that (the primitive already
// splits one image's rows and channel blocks across the threads).
constexpr int64_t kChunkBudget = int64_t{4} << 20;
// Bytes of one part's blocked weights. Big layers (ResNet's 512x512x3x3: 9.4 MiB) run as several
// convolutions over slices of the output channels (input channels for grad_input), so the weights'
// blocked copy in the workspace stays small enough not to raise a plan's peak; measured, a 512->64
// slice of that layer runs at 337 GFLOP/s against 358 for the whole (oneDNN alone, 2 threads).
constexpr int64_t kWeightBudget = int64_t{2} << 20;
constexpr int64_t kChannelBlock = 16;  // oneDNN's channel block on AVX-512
constexpr size_t kAlign = 64;

enum Op { kForward = 0, kGradInput = 1, kGradWeight = 2 };
constexpr const char* kNames[3] = {"conv2d.onednn", "conv2d_grad_input.onednn", "conv2d_grad_weight.onednn"};

struct Geometry {
  int64_t N, C, H, W, O, KH, KW, HO, WO, SH, SW, PH, PW, DH, DW;
  float act_lo = -std::numeric_limits<float>::infinity(), act_hi = std::numeric_limits<float>::infinity();
  bool bias = false;
  int64_t per_image_bytes() const { return (C * H * W + O * HO * WO) * static_cast<int64_t>(sizeof(float)); }
  int64_t chunk_images() const { return std::max<int64_t>(1, std::min<int64_t>(N, kChunkBudget / per_image_bytes())); }
  // The channels an op splits into parts (output channels; input channels for grad_input, whose
  // output is dx) and the channels of every part but the last: weights of a part stay under
  // kWeightBudget, in whole blocks of kChannelBlock.
  int64_t split_dim(Op op) const { return op == kGradInput ? C : O; }
  int64_t part_channels(Op op) const {
    const int64_t dim = split_dim(op);
    const int64_t bytes = O * C * KH * KW * static_cast<int64_t>(sizeof(float));
    const int64_t parts = (bytes + kWeightBudget - 1) / kWeightBudget;
    if (parts <= 1) return dim;
    const int64_t per = ((dim + parts - 1) / parts + kChannelBlock - 1) / kChannelBlock * kChannelBlock;
    return std::min(dim, per);
  }
  bool clamps() const {
    return act_lo > -std::numeric_limits<float>::infinity() || act_hi < std::numeric_limits<float>::infinity();
  }
  // everything a primitive depends on, for the cache key
  auto key(Op op, int64_t images, int64_t part, int threads) const {
    return std::make_tuple(static_cast<int>(op), images, part, threads, C, H, W, O, KH, KW, SH, SW, PH, PW, DH,
                           DW, act_lo, act_hi, bias);
  }
};
using Key = decltype(std::declval<Geometry>().key(kForward, 0, 0, 0));

// Geometry from x's shape [N, C, H, W] (the logical input), the weight shape and the attrs; checks
// that `y` (the output, or dy) is [N, O, HO, WO].
Status make_geometry(Op op, const Attrs& attrs, const int64_t* xs, const int64_t* ws, const TensorView& y,
                     Geometry* g) {
  const char* kernel = kNames[op];
  cpu::ConvParams cp;
  ET_RETURN_IF_ERROR(cpu::read_conv_params(kernel, attrs, &cp));
  if (cp.SH < 1 || cp.SW < 1 || cp.DH < 1 || cp.DW < 1 || cp.PH < 0 || cp.PW < 0)
    return invalid_argument(std::string(kernel) + ": stride and dilation must be >= 1, padding >= 0");
  if (cp.G != 1)
    return invalid_argument(std::string(kernel) + ": runs one group only, got groups " + std::to_string(cp.G) +
                            " (grouped and depthwise convolutions run on the conv2d kernels)");
  if (ws[2] == 1 && ws[3] == 1 && cp.SH == 1 && cp.SW == 1 && cp.PH == 0 && cp.PW == 0)
    return invalid_argument(std::string(kernel) +
                            ": 1x1 stride-1 unpadded convolutions run on the pointwise GEMM kernels (one GEMM each "
                            "way; the conversions to oneDNN's layouts would only add)");
  if (xs[1] != ws[1])
    return invalid_argument(std::string(kernel) + ": input channels " + std::to_string(xs[1]) +
                            " do not fit weight " + cpu::dims_string(ws[0], ws[1], ws[2], ws[3]));
  Geometry& c = *g;
  c.N = xs[0], c.C = xs[1], c.H = xs[2], c.W = xs[3];
  c.O = ws[0], c.KH = ws[2], c.KW = ws[3];
  c.SH = cp.SH, c.SW = cp.SW, c.PH = cp.PH, c.PW = cp.PW, c.DH = cp.DH, c.DW = cp.DW;
  if (c.KH < 1 || c.KW < 1) return invalid_argument(std::string(kernel) + ": empty kernel window");
  c.HO = cpu::conv_out_size(c.H, c.KH, c.SH, c.PH, c.DH);
  c.WO = cpu::conv_out_size(c.W, c.KW, c.SW, c.PW, c.DW);
  if (c.HO <= 0 || c.WO <= 0) return invalid_argument(std::string(kernel) + ": output would be empty");
  if (!cpu::is_shape(y, c.N, c.O, c.HO, c.WO))
    return invalid_argument(std::string(kernel) + ": output/gradient " + y.shape_string() + " is not " +
                            cpu::dims_string(c.N, c.O, c.HO, c.WO));
  return Status::Ok();
}

// Geometry of a node, from its inputs / attrs, as each op stores it.
Status read_geometry(Op op, const KernelArgs& a, Geometry* g) {
  const char* kernel = kNames[op];
  constexpr const char* kOwn[3] = {"the conv2d kernel", "the conv2d_grad_input kernel", "the conv2d_grad_weight kernel"};
  ET_RETURN_IF_ERROR(nhwc::refuse_nhwc(a.attr(), kernel, kOwn[op]));
  if (op == kForward) {
    ET_RETURN_IF_ERROR(expect_arity(a, kernel, 2, 3, 1));
    ET_RETURN_IF_ERROR(cpu::expect_all_f32(a, kernel, a.num_inputs));
    const TensorView &x = a.in(0), &w = a.in(1);
    if (x.rank != 4 || w.rank != 4)
      return invalid_argument(std::string(kernel) + ": wants 4-d input and weight, got " + x.shape_string() +
                              " and " + w.shape_string());
    ET_RETURN_IF_ERROR(make_geometry(op, a.attr(), x.shape, w.shape, a.out(0), g));
    if (a.num_inputs == 3 && (a.in(2).rank != 1 || a.in(2).shape[0] != g->O))
      return invalid_argument(std::string(kernel) + ": bias " + a.in(2).shape_string() + " does not fit " +
                              std::to_string(g->O) + " output channels");
    g->bias = a.num_inputs == 3;
    return read_activation(a.attr(), kernel, &g->act_lo, &g->act_hi);
  }
  if (op == kGradInput) {
    ET_RETURN_IF_ERROR(expect_arity(a, kernel, 2, 3, 1));
    ET_RETURN_IF_ERROR(cpu::expect_all_f32(a, kernel, 2));
    const TensorView &dy = a.in(0), &w = a.in(1);
    if (dy.rank != 4 || w.rank != 4)
      return invalid_argument(std::string(kernel) + ": wants 4-d dy and weight, got " + dy.shape_string() + " and " +
                              w.shape_string());
    int64_t xs[4];
    if (!cpu::read_shape4(a.attr(), "input_shape", xs))
      return invalid_argument(std::string(kernel) + ": attr input_shape must be 4 ints");
    if (!cpu::is_shape(a.out(0), xs[0], xs[1], xs[2], xs[3]))
      return invalid_argument(std::string(kernel) + ": output " + a.out(0).shape_string() + " is not input_shape " +
                              cpu::dims_string(xs[0], xs[1], xs[2], xs[3]));
    ET_RETURN_IF_ERROR(make_geometry(op, a.attr(), xs, w.shape, dy, g));
    OutputMask m;
    return read_output_mask(a, 2, a.out(0), kernel, &m);
  }
  ET_RETURN_IF_ERROR(expect_arity(a, kernel, 2, 2, 1));
  ET_RETURN_IF_ERROR(cpu::expect_all_f32(a, kernel, 2));
  const TensorView &dy = a.in(0), &x = a.in(1);
  if (dy.rank != 4 || x.rank != 4)
    return invalid_argument(std::string(kernel) + ": wants 4-d dy and input, got " + dy.shape_string() + " and " +
                            x.shape_string());
  int64_t ws[4];
  if (!cpu::read_shape4(a.attr(), "weight_shape", ws))
    return invalid_argument(std::string(kernel) + ": attr weight_shape must be 4 ints");
  if (!cpu::is_shape(a.out(0), ws[0], ws[1], ws[2], ws[3]))
    return invalid_argument(std::string(kernel) + ": output " + a.out(0).shape_string() + " is not weight_shape " +
                            cpu::dims_string(ws[0], ws[1], ws[2], ws[3]));
  return make_geometry(op, a.attr(), x.shape, ws, dy, g);
}

// ---- primitives --------------------------------------------------------------------------------

const dnnl::engine& cpu_engine() {
  static const dnnl::engine engine(dnnl::engine::kind::cpu, 0);
  return engine;
}

// One geometry's primitives for chunks of `images` images: the convolution, and the reorders
// between the plan's plain layout and the one the convolution chose (absent where it is plain).
struct Prim {
  memory::desc x_plain, y_plain, w_plain;  // the plan's layouts: nchw / oihw
  memory::desc x_conv, y_conv, w_conv;     // what the primitive wants (x: src or diff_src, y: dst or diff_dst)
  dnnl::primitive conv;
  dnnl::reorder x_in, y_in, w_in;          // plain -> conv layout (those the op reads)
  dnnl::reorder x_out, y_out, w_out;       // conv -> plain (the op's output); w_out_add adds into dw
  dnnl::reorder w_out_add;
  std::string impl;
  bool reorder_x() const { return x_conv != x_plain; }
  bool reorder_y() const { return y_conv != y_plain; }
  bool reorder_w() const { return w_conv != w_plain; }
  // bytes of each buffer in the workspace (Layout), 64-byte aligned; 0 where the layout is plain
  // (the weight gradient always has its buffer: each chunk's dw lands there, then is added to dw)
  bool grad_weight = false;
  size_t w_bytes() const { return reorder_w() || grad_weight ? round(w_conv.get_size()) : 0; }
  size_t x_bytes() const { return reorder_x() ? round(x_conv.get_size()) : 0; }
  size_t y_bytes() const { return reorder_y() ? round(y_conv.get_size()) : 0; }
  size_t workspace_bytes() const { return w_bytes() + x_bytes() + y_bytes(); }
  static size_t round(size_t n) { return (n + kAlign - 1) / kAlign * kAlign; }
};

dnnl::reorder reorder(const memory::desc& from, const memory::desc& to, bool add = false) {
  const dnnl::engine& e = cpu_engine();
  dnnl::primitive_attr attr;
  if (add) {
    dnnl::post_ops ops;
    ops.append_sum(1.0f);
    attr.set_post_ops(ops);
  }
  return dnnl::reorder(dnnl::reorder::primitive_desc(e, from, e, to, attr));
}

// Primitives for `n` images and `part` channels of the split dimension (Geometry::split_dim): the
// plain descriptors address that slice inside the plan's whole tensors (their strides are the
// whole tensor's), so reorders read and write the slices in place.
std::unique_ptr<Prim> make_prim(Op op, const Geometry& c, int64_t n, int64_t part) {
  using dnnl::algorithm;
  using dnnl::prop_kind;
  const dnnl::engine& e = cpu_engine();
  auto p = std::make_unique<Prim>();
  const int64_t Cp = op == kGradInput ? part : c.C, Op_ = op == kGradInput ? c.O : part;
  const memory::dims xd = {n, Cp, c.H, c.W}, yd = {n, Op_, c.HO, c.WO}, wd = {Op_, Cp, c.KH, c.KW};
  const memory::dims strides = {c.SH, c.SW}, dil = {c.DH - 1, c.DW - 1}, pad_l = {c.PH, c.PW};
  // right padding: what makes oneDNN's output size the one PyTorch's formula gave
  const memory::dims pad_r = {(c.HO - 1) * c.SH + (c.KH - 1) * c.DH + 1 - c.H - c.PH,
                              (c.WO - 1) * c.SW + (c.KW - 1) * c.DW + 1 - c.W - c.PW};
  const auto f32 = memory::data_type::f32;
  p->x_plain = memory::desc(xd, f32, memory::dims{c.C * c.H * c.W, c.H * c.W, c.W, 1});
  p->y_plain = memory::desc(yd, f32, memory::dims{c.O * c.HO * c.WO, c.HO * c.WO, c.WO, 1});
  p->w_plain = memory::desc(wd, f32, memory::dims{c.C * c.KH * c.KW, c.KH * c.KW, c.KW, 1});
  const memory::desc b_md = c.bias ? memory::desc({Op_}, f32, Tag::a) : memory::desc();
  const memory::desc x_any(xd, f32, Tag::any), y_any(yd, f32, Tag::any), w_any(wd, f32, Tag::any);
  dnnl::primitive_attr attr;
  if (op == kForward && c.clamps()) {
    dnnl::post_ops ops;
    if (c.act_lo == 0.0f && c.act_hi == std::numeric_limits<float>::infinity())
      ops.append_eltwise(algorithm::eltwise_relu, 0.0f, 0.0f);
    else
      ops.append_eltwise(algorithm::eltwise_clip, c.act_lo, c.act_hi);
    attr.set_post_ops(ops);
  }
  // the forward descriptor: the op itself, or the hint the backward ones need
  const auto fwd = dnnl::convolution_forward::primitive_desc(
      e, prop_kind::forward_training, algorithm::convolution_direct, x_any, w_any, op == kForward ? b_md : memory::desc(), y_any, strides, dil, pad_l, pad_r, attr);
  if (op == kForward) {
    p->x_conv = fwd.src_desc(), p->y_conv = fwd.dst_desc(), p->w_conv = fwd.weights_desc();
    p->impl = fwd.impl_info_str();
    p->conv = dnnl::convolution_forward(fwd);
    if (p->reorder_x()) p->x_in = reorder(p->x_plain, p->x_conv);
    if (p->reorder_w()) p->w_in = reorder(p->w_plain, p->w_conv);
    if (p->reorder_y()) p->y_out = reorder(p->y_conv, p->y_plain);
  } else if (op == kGradInput) {
    const auto bwd = dnnl::convolution_backward_data::primitive_desc(e, algorithm::convolution_direct, x_any, w_any,
                                                                     y_any, strides, dil, pad_l, pad_r, fwd);
    p->x_conv = bwd.diff_src_desc(), p->y_conv = bwd.diff_dst_desc(), p->w_conv = bwd.weights_desc();
    p->impl = bwd.impl_info_str();
    p->conv = dnnl::convolution_backward_data(bwd);
    if (p->reorder_y()) p->y_in = reorder(p->y_plain, p->y_conv);
    if (p->reorder_w()) p->w_in = reorder(p->w_plain, p->w_conv);
    if (p->reorder_x()) p->x_out = reorder(p->x_conv, p->x_plain);
  } else {
    const auto bwd = dnnl::convolution_backward_weights::primitive_desc(
        e, algorithm::convolution_direct, x_any, w_any, y_any, strides, dil, pad_l, pad_r, fwd);
    p->x_conv = bwd.src_desc(), p->y_conv = bwd.diff_dst_desc(), p->w_conv = bwd.diff_weights_desc();
    p->impl = bwd.impl_info_str();
    p->conv = dnnl::convolution_backward_weights(bwd);
    p->grad_weight = true;
    if (p->reorder_x()) p->x_in = reorder(p->x_plain, p->x_conv);
    if (p->reorder_y()) p->y_in = reorder(p->y_plain, p->y_conv);
    // dw: the first chunk writes, later ones add (in the blocked layout when there is one)
    p->w_out = reorder(p->w_conv, p->w_plain);
    p->w_out_add = reorder(p->w_conv, p->w_plain, /*add=*/true);
  }
  return p;
}

// The cached primitives of (op, geometry, chunk, threads); created on first use. A failure
// (oneDNN has no implementation, or only its reference one) is cached too, as its message.
struct Cached {
  std::unique_ptr<Prim> prim;
  std::string error;
};

Status get_prim(Op op, const Geometry& c, int64_t images, int64_t part, int threads, const Prim** out) {
  static std::mutex mu;
  static std::map<Key, Cached> cache;
  const Key key = c.key(op, images, part, threads);
  std::lock_guard<std::mutex> lock(mu);
  auto it = cache.find(key);
  if (it == cache.end()) {
    Cached entry;
    try {
      omp_set_num_threads(threads);  // primitives size their work split for this many threads
      entry.prim = make_prim(op, c, images, part);
      if (entry.prim->impl.rfind("ref", 0) == 0) {
        entry.error = "oneDNN has only its reference implementation (" + entry.prim->impl +
                      ") for this geometry on this CPU";
        entry.prim.reset();
      }
    } catch (const dnnl::error& e) {
      entry.error = std::string("oneDNN cannot run this geometry: ") + e.what();
    }
    it = cache.emplace(key, std::move(entry)).first;
  }
  if (!it->second.prim)
    return invalid_argument(std::string(kNames[op]) + ": " + it->second.error + " (" +
                            cpu::dims_string(c.N, c.C, c.H, c.W) + " * " + cpu::dims_string(c.O, c.C, c.KH, c.KW) +
                            ", stride " + std::to_string(c.SH) + "x" + std::to_string(c.SW) + ")");
  *out = it->second.prim.get();
  return Status::Ok();
}

int threads_of(const KernelArgs& a) { return a.pool ? std::max(1, a.pool->num_threads()) : 1; }

// The workspace, laid out the same for every chunk and part: [weights of a part][the tensor every
// part reads (x; dy for grad_input)][the part's slice of the op's other tensor], each region as big
// as the biggest chunk's first part (the largest) needs.
struct Layout {
  size_t w = 0, shared = 0, part = 0;
  size_t bytes() const { return w + shared + part; }
};

// Which of a Prim's buffers is the shared one: x, except for grad_input (dy).
size_t shared_bytes(Op op, const Prim& p) { return op == kGradInput ? p.y_bytes() : p.x_bytes(); }
size_t part_bytes(Op op, const Prim& p) { return op == kGradInput ? p.x_bytes() : p.y_bytes(); }

Status layout_of(Op op, const Geometry& c, int threads, Layout* out) {
  const int64_t per = c.chunk_images(), tail = c.N % per, part = c.part_channels(op);
  const int64_t last = c.split_dim(op) - (c.split_dim(op) - 1) / part * part;
  *out = Layout{};
  for (int64_t images : {per, tail}) {
    if (!images) continue;
    for (int64_t channels : {part, last}) {
      const Prim* p = nullptr;
      ET_RETURN_IF_ERROR(get_prim(op, c, images, channels, threads, &p));
      out->w = std::max(out->w, p->w_bytes());
      out->shared = std::max(out->shared, shared_bytes(op, *p));
      out->part = std::max(out->part, part_bytes(op, *p));
    }
  }
  return Status::Ok();
}

Status check(Op op, const KernelArgs& a) {
  Geometry c;
  ET_RETURN_IF_ERROR(read_geometry(op, a, &c));
  Layout l;
  return layout_of(op, c, threads_of(a), &l);
}

size_t workspace(Op op, const KernelArgs& a) {
  Geometry c;
  Layout l;
  if (!read_geometry(op, a, &c).ok() || !layout_of(op, c, threads_of(a), &l).ok()) return 0;
  return l.bytes();
}

Status run(Op op, const KernelArgs& a) {
  const char* kernel = kNames[op];
  Geometry c;
  ET_RETURN_IF_ERROR(read_geometry(op, a, &c));
  const int threads = threads_of(a);
  Layout l;
  ET_RETURN_IF_ERROR(layout_of(op, c, threads, &l));
  if (a.workspace_bytes < l.bytes() || (l.bytes() && !a.workspace))
    return internal_error(std::string(kernel) + ": workspace of " + std::to_string(a.workspace_bytes) +
                          " bytes, needs " + std::to_string(l.bytes()));
  OutputMask mask;
  if (op == kGradInput) ET_RETURN_IF_ERROR(read_output_mask(a, 2, a.out(0), kernel, &mask));
  // the plan's tensors: x (input / dx), y (output / dy), w (weight / dw)
  float* x = op == kForward ? const_cast<float*>(a.in(0).as<float>())
                            : op == kGradInput ? a.out(0).as<float>() : const_cast<float*>(a.in(1).as<float>());
  float* y = op == kForward ? a.out(0).as<float>() : const_cast<float*>(a.in(0).as<float>());
  float* w = op == kGradWeight ? a.out(0).as<float>() : const_cast<float*>(a.in(1).as<float>());
  const float* bias = op == kForward && c.bias ? a.in(2).as<float>() : nullptr;
  const int64_t x_image = c.C * c.H * c.W, y_image = c.O * c.HO * c.WO;
  const int64_t per = c.chunk_images(), part = c.part_channels(op), dim = c.split_dim(op);
  char* ws = static_cast<char*>(a.workspace);
  char* w_buf = ws;
  char* shared_buf = ws + l.w;
  char* part_buf = ws + l.w + l.shared;
  try {
    omp_set_num_threads(threads);
    const dnnl::engine& e = cpu_engine();
    dnnl::stream s(e);
    for (int64_t n0 = 0; n0 < c.N; n0 += per) {
      const int64_t nb = std::min(per, c.N - n0);
      memory::desc shared_in_buffer;  // the layout the shared buffer holds for this chunk
      for (int64_t c0 = 0; c0 < dim; c0 += part) {
        const int64_t cp = std::min(part, dim - c0);
        const Prim* p = nullptr;
        ET_RETURN_IF_ERROR(get_prim(op, c, nb, cp, threads, &p));
        // the slices of this chunk and part inside the plan's tensors
        float* xs = x + n0 * x_image + (op == kGradInput ? c0 * c.H * c.W : 0);
        float* ys = y + n0 * y_image + (op == kGradInput ? 0 : c0 * c.HO * c.WO);
        float* wsl = w + (op == kGradInput ? c0 * c.KH * c.KW : c0 * c.C * c.KH * c.KW);
        memory w_plain(p->w_plain, e, wsl), x_plain(p->x_plain, e, xs), y_plain(p->y_plain, e, ys);
        char* x_at = op == kGradInput ? part_buf : shared_buf;
        char* y_at = op == kGradInput ? shared_buf : part_buf;
        memory w_conv = p->reorder_w() ? memory(p->w_conv, e, w_buf) : w_plain;
        memory x_conv = p->reorder_x() ? memory(p->x_conv, e, x_at) : x_plain;
        memory y_conv = p->reorder_y() ? memory(p->y_conv, e, y_at) : y_plain;
        // the weights of one part stay in the buffer across chunks when there is only one part
        const bool load_w = p->reorder_w() && (n0 == 0 || cp != dim);
        if (op == kForward) {
          if (load_w) p->w_in.execute(s, w_plain, w_conv);
          if (p->reorder_x() && shared_in_buffer != p->x_conv) {
            p->x_in.execute(s, x_plain, x_conv);
            shared_in_buffer = p->x_conv;
          }
          std::unordered_map<int, memory> args = {
              {DNNL_ARG_SRC, x_conv}, {DNNL_ARG_WEIGHTS, w_conv}, {DNNL_ARG_DST, y_conv}};
          if (bias)
            args.emplace(DNNL_ARG_BIAS, memory(memory::desc({cp}, memory::data_type::f32, Tag::a), e,
                                               const_cast<float*>(bias + c0)));
          p->conv.execute(s, args);
          if (p->reorder_y()) p->y_out.execute(s, y_conv, y_plain);
        } else if (op == kGradInput) {
          if (load_w) p->w_in.execute(s, w_plain, w_conv);
          if (p->reorder_y() && shared_in_buffer != p->y_conv) {
            p->y_in.execute(s, y_plain, y_conv);
            shared_in_buffer = p->y_conv;
          }
          p->conv.execute(s, {{DNNL_ARG_DIFF_DST, y_conv}, {DNNL_ARG_WEIGHTS, w_conv}, {DNNL_ARG_DIFF_SRC, x_conv}});
          if (p->reorder_x()) p->x_out.execute(s, x_conv, x_plain);
        } else {
          if (p->reorder_x() && shared_in_buffer != p->x_conv) {
            p->x_in.execute(s, x_plain, x_conv);
            shared_in_buffer = p->x_conv;
          }
          if (p->reorder_y()) p->y_in.execute(s, y_plain, y_conv);
          // the chunk's dw in the weights buffer, then written (first chunk) or added into dw
          memory dw_chunk(p->w_conv, e, w_buf);
          p->conv.execute(s,
                          {{DNNL_ARG_SRC, x_conv}, {DNNL_ARG_DIFF_DST, y_conv}, {DNNL_ARG_DIFF_WEIGHTS, dw_chunk}});
          (n0 == 0 ? p->w_out : p->w_out_add).execute(s, dw_chunk, w_plain);
        }
      }
      s.wait();
      if (op == kGradInput && mask.active()) {
        a.pool->parallel_for(nb * c.C, std::max<int64_t>(1, 16384 / std::max<int64_t>(c.H * c.W, 1)),
                             [&](int64_t p0, int64_t p1) {
                               const int64_t plane = c.H * c.W, first = n0 * x_image + p0 * plane;
                               mask.apply(x + first, first, (p1 - p0) * plane);
                             });
      }
    }
  } catch (const dnnl::error& e) {
    return internal_error(std::string(kernel) + ": oneDNN: " + e.what());
  }
  return Status::Ok();
}

template <Op O> Status check_at(const KernelArgs& a) { return check(O, a); }
template <Op O> size_t workspace_at(const KernelArgs& a) { return workspace(O, a); }
template <Op O> Status run_at(const KernelArgs& a) { return run(O, a); }

}  // namespace onednn
}  // namespace

void register_onednn_kernels(KernelRegistry& r) {
  using namespace onednn;
  r.add({"conv2d", kNames[kForward], check_at<kForward>, workspace_at<kForward>, run_at<kForward>});
  r.add({"conv2d_grad_input", kNames[kGradInput], check_at<kGradInput>, workspace_at<kGradInput>,
         run_at<kGradInput>});
  r.add({"conv2d_grad_weight", kNames[kGradWeight], check_at<kGradWeight>, workspace_at<kGradWeight>,
         run_at<kGradWeight>});
}

std::string onednn_version() {
  const dnnl_version_t* v = dnnl::version();
  return std::to_string(v->major) + "." + std::to_string(v->minor) + "." + std::to_string(v->patch);
}

}  // namespace edgetune

#else  // no oneDNN in this build

namespace edgetune {
std::string onednn_version() { return ""; }
}  // namespace edgetune

#endif  // EDGETUNE_HAVE_ONEDNN
