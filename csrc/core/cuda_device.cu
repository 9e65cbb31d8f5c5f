// The cuda Device (core/device.h): plan memory on the GPU and a training step as two CUDA Graphs.
//
// Built only with EDGETUNE_HAVE_CUDA (csrc/CMakeLists.txt puts this file in the CUDA library).
//
// Memory. One cudaMalloc per plan region (the arena is one block, as planned; a plan alignment
// above cudaMalloc's 256 bytes is met by over-allocating), zeroed at load; the persistent region is
// initialised by one copy of the plan's persistent_init. set_input writes a pinned host mirror of the
// input region (cudaMallocHost), which the step copies in asynchronously. The host holds nothing
// else of the model: weights and state are read and written through Runtime::read / write (a
// synchronous copy on the stream) when asked. MemoryStats stays the bytes of each region on the
// device. On an integrated GPU (Jetson Orin: cudaDeviceProp::integrated) the same path runs:
// cudaMalloc memory is the same DRAM, and no weight is duplicated in host memory. (The input mirror
// could be mapped zero-copy memory there, cudaHostAllocMapped, saving one small copy per step; not
// done: one code path for both, and the copy is the input batch only.)
//
// Step. Nodes [0, split) run up to and including the last node that writes the loss; the rest
// are backward and updates. Two graphs, captured on the context's stream:
//   A  input mirror -> input region (H2D), nodes [0, split), loss -> pinned host (D2H)
//   B  update guard := 0, nodes [split, n), the plan's state copies, guard -> pinned host (D2H)
// step(): launch A, sync, check the loss on the host exactly as the CPU does (NaN/Inf: the same
// kNumericError, B is not launched, nothing is updated); launch B, sync, read the guard: set means
// an update refused (kernels/cuda/optim.cu) and the message names it as the CPU's does. The state
// copies are a guarded copy kernel (not cudaMemcpyAsync) so that they too write nothing after a
// refusal: like the CPU, which returns before its copies (a copy of a skipped update's output
// would write a stale arena buffer into a parameter).
//
// The first step runs the same operations uncaptured: it loads every kernel's module (lazy
// loading) and lets cuBLASLt initialise outside a capture. The graphs are captured right after it
// and replayed from the second step on. If capture or instantiation fails (a kernel that is not
// capturable, an old driver), the steps keep running uncaptured and stderr says so once.
// Profiling (Runtime::set_profiling) runs uncaptured with a pair of cudaEvents around every node;
// forward() always runs uncaptured (forward-section nodes only, as on the CPU).
//
// Every CUDA call's error becomes a Status with the API's error name and string. No CUDA call is
// made while a stream is capturing except what a graph may hold (kernel launches, memset and
// memcpy nodes between device and pinned host memory), and cudaGetLastError.
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "core/device.h"
#include "core/runtime.h"
#include "kernels/cuda/cuda_context.h"
#include "plan_generated.h"

namespace edgetune {
namespace {

std::string cuda_error_text(cudaError_t e) {
  return std::string(cudaGetErrorName(e)) + " (" + cudaGetErrorString(e) + ")";
}

Status cuda_call(cudaError_t e, const char* what) {
  if (e == cudaSuccess) return Status::Ok();
  return internal_error(std::string("cuda: ") + what + ": " + cuda_error_text(e));
}

#define ET_CUDA_CALL(expr) ET_RETURN_IF_ERROR(cuda_call((expr), #expr))

// The state copies of a step, written only while no update of the step refused (see the top).
// 16-byte words for the aligned bulk (plan tensors are at least 16-byte aligned), bytes for a tail.
__global__ void guarded_copy(uint8_t* dst, const uint8_t* src, size_t bytes, const unsigned int* guard) {
  if (*guard) return;
  const size_t words = bytes / 16;
  const size_t stride = static_cast<size_t>(blockDim.x) * gridDim.x;
  const size_t first = static_cast<size_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  for (size_t i = first; i < words; i += stride)
    reinterpret_cast<uint4*>(dst)[i] = reinterpret_cast<const uint4*>(src)[i];
  for (size_t i = words * 16 + first; i < bytes; i += stride) dst[i] = src[i];
}

// What kernels/cpu/optim.cc's refuse_nonfinite_update() says, word for word: the runtime's message
// for a refused update is the same on both backends.
const char* kNonfiniteUpdate =
    "the update would write inf or NaN into the parameter or its optimizer state (a gradient holds inf/NaN or "
    "overflowed, or the learning rate is too large); this parameter was not changed";

struct Pinned {  // the two values a step copies back (cudaMallocHost)
  float loss = 0;
  unsigned int guard = 0;
};

}  // namespace

class CudaDevice final : public Device {
 public:
  static Result<std::unique_ptr<Device>> create();
  ~CudaDevice() override;

  const std::string& backend() const override { return name_; }
  std::string description() const override { return description_; }
  bool host_accessible() const override { return false; }

  Result<uint8_t*> allocate(size_t bytes, size_t alignment) override;
  void release(uint8_t* p) override;
  Result<uint8_t*> allocate_host(size_t bytes) override;
  void release_host(uint8_t* p) override;
  Status copy_to_device(void* dst, const void* src, size_t n) override;
  Status copy_to_host(void* dst, const void* src, size_t n) override;
  void* kernel_context() override { return &ctx_; }

  bool runs_steps() const override { return true; }
  Status prepare(Runtime& rt) override;
  Result<float> step(Runtime& rt) override;
  Status forward(Runtime& rt) override;

 private:
  CudaDevice() = default;
  enum class Mode { kFirst, kGraphs, kUncaptured };

  Status use_device() { return cuda_call(cudaSetDevice(device_), "cudaSetDevice"); }
  Status launch(Runtime& rt, size_t i, bool timed);
  Status enqueue_a(Runtime& rt, bool timed);
  Status enqueue_b(Runtime& rt, bool timed);
  Status sync() { return cuda_call(cudaStreamSynchronize(ctx_.stream), "cudaStreamSynchronize (running the step)"); }
  Status ensure_events(size_t n);
  Status add_times(Runtime& rt, size_t begin, size_t end, bool forward_only);
  Status capture(Runtime& rt, bool graph_a, cudaGraphExec_t* out);
  Status capture_graphs(Runtime& rt);
  Status check_loss(Runtime& rt);
  Status check_guard(Runtime& rt);

  std::string name_ = "cuda";
  std::string description_;
  int device_ = 0;
  CudaContext ctx_;
  std::vector<std::pair<uint8_t*, void*>> blocks_;  // (aligned pointer handed out, cudaMalloc's pointer)
  std::vector<uint8_t*> host_blocks_;               // cudaMallocHost
  unsigned int* guard_ = nullptr;                   // device: the update guard (CudaContext::update_guard)
  Pinned* pinned_ = nullptr;                        // host, pinned: loss and guard copied back
  const void* loss_ = nullptr;                      // device: the 'loss' output
  size_t split_ = 0;                                // graph A runs nodes [0, split_)
  Mode mode_ = Mode::kFirst;
  cudaGraphExec_t graph_a_ = nullptr, graph_b_ = nullptr;
  std::vector<cudaEvent_t> begin_, end_;  // profiling: around every node, created on first use
};

Result<std::unique_ptr<Device>> make_cuda_device() { return CudaDevice::create(); }

Result<std::unique_ptr<Device>> CudaDevice::create() {
  auto unusable = [](const std::string& why) {
    cudaGetLastError();  // a failed query must not linger as the "last error" of later launches
    return unimplemented("backend 'cuda' cannot run here: " + why);
  };
  int count = 0;
  cudaError_t e = cudaGetDeviceCount(&count);
  if (e != cudaSuccess) return unusable("no usable GPU: cudaGetDeviceCount failed: " + cuda_error_text(e));
  if (count == 0) return unusable("cudaGetDeviceCount found no CUDA device (see CUDA_VISIBLE_DEVICES)");
  std::unique_ptr<CudaDevice> d(new CudaDevice());
  // The calling thread's current device: 0 unless the program chose another (cudaSetDevice).
  if ((e = cudaGetDevice(&d->device_)) != cudaSuccess) return unusable("cudaGetDevice failed: " + cuda_error_text(e));
  if ((e = cudaSetDevice(d->device_)) != cudaSuccess)
    return unusable("cudaSetDevice(" + std::to_string(d->device_) + ") failed: " + cuda_error_text(e));
  cudaDeviceProp prop;
  if ((e = cudaGetDeviceProperties(&prop, d->device_)) != cudaSuccess)
    return unusable("cudaGetDeviceProperties failed: " + cuda_error_text(e));
  d->ctx_.sm_count = prop.multiProcessorCount;
  d->ctx_.cc_major = prop.major;
  d->ctx_.cc_minor = prop.minor;
  char desc[512];
  std::snprintf(desc, sizeof desc, "%s, sm_%d%d, %d SMs, %.1f GiB%s, device %d", prop.name, prop.major, prop.minor,
                prop.multiProcessorCount, static_cast<double>(prop.totalGlobalMem) / (1024.0 * 1024.0 * 1024.0),
                prop.integrated ? " shared with the CPU (integrated)" : "", d->device_);
  d->description_ = desc;
  // Non-blocking: no implicit synchronisation with the legacy default stream (and capturable).
  if ((e = cudaStreamCreateWithFlags(&d->ctx_.stream, cudaStreamNonBlocking)) != cudaSuccess)
    return unusable("cudaStreamCreateWithFlags failed: " + cuda_error_text(e));
  const cublasStatus_t b = cublasLtCreate(&d->ctx_.cublaslt);
  if (b != CUBLAS_STATUS_SUCCESS) return unusable(std::string("cublasLtCreate failed: ") + cublasGetStatusString(b));
  return std::unique_ptr<Device>(std::move(d));
}

CudaDevice::~CudaDevice() {
  // Errors are ignored here: at process exit the CUDA runtime may already be unloading.
  cudaSetDevice(device_);
  if (ctx_.stream) cudaStreamSynchronize(ctx_.stream);
  if (graph_a_) cudaGraphExecDestroy(graph_a_);
  if (graph_b_) cudaGraphExecDestroy(graph_b_);
  for (cudaEvent_t ev : begin_) cudaEventDestroy(ev);
  for (cudaEvent_t ev : end_) cudaEventDestroy(ev);
  for (auto& blk : blocks_) cudaFree(blk.second);
  for (uint8_t* p : host_blocks_) cudaFreeHost(p);
  if (ctx_.cublaslt) cublasLtDestroy(ctx_.cublaslt);
  if (ctx_.stream) cudaStreamDestroy(ctx_.stream);
  cudaGetLastError();
}

// ---- memory --------------------------------------------------------------------------------------
Result<uint8_t*> CudaDevice::allocate(size_t bytes, size_t alignment) {
  ET_RETURN_IF_ERROR(use_device());
  size_t rounded = (bytes + alignment - 1) / alignment * alignment;
  if (rounded == 0) rounded = alignment;
  const size_t extra = alignment > 256 ? alignment : 0;  // cudaMalloc aligns to 256 bytes
  void* raw = nullptr;
  cudaError_t e = cudaMalloc(&raw, rounded + extra);
  if (e != cudaSuccess) {
    cudaGetLastError();
    size_t free_b = 0, total_b = 0;
    std::string mem;
    if (cudaMemGetInfo(&free_b, &total_b) == cudaSuccess)
      mem = "; the GPU has " + std::to_string(free_b) + " of " + std::to_string(total_b) + " bytes free";
    cudaGetLastError();
    return out_of_memory("cudaMalloc(" + std::to_string(rounded + extra) + ") failed: " + cuda_error_text(e) + mem);
  }
  blocks_.push_back({nullptr, raw});  // owned from here on, even if the memset fails
  const uintptr_t a = (reinterpret_cast<uintptr_t>(raw) + alignment - 1) / alignment * alignment;
  blocks_.back().first = reinterpret_cast<uint8_t*>(a);
  ET_CUDA_CALL(cudaMemsetAsync(raw, 0, rounded + extra, ctx_.stream));
  ET_CUDA_CALL(cudaStreamSynchronize(ctx_.stream));
  return blocks_.back().first;
}

void CudaDevice::release(uint8_t* p) {
  if (!p) return;
  for (size_t i = 0; i < blocks_.size(); ++i)
    if (blocks_[i].first == p) {
      cudaSetDevice(device_);
      cudaFree(blocks_[i].second);  // waits for the device; an error here has no one to go to
      blocks_.erase(blocks_.begin() + static_cast<std::ptrdiff_t>(i));
      return;
    }
}

Result<uint8_t*> CudaDevice::allocate_host(size_t bytes) {
  ET_RETURN_IF_ERROR(use_device());
  void* p = nullptr;
  const size_t n = std::max<size_t>(bytes, 1);
  cudaError_t e = cudaMallocHost(&p, n);
  if (e != cudaSuccess) {
    cudaGetLastError();
    return out_of_memory("cudaMallocHost(" + std::to_string(n) + ") (pinned host memory) failed: " + cuda_error_text(e));
  }
  std::memset(p, 0, n);
  host_blocks_.push_back(static_cast<uint8_t*>(p));
  return static_cast<uint8_t*>(p);
}

void CudaDevice::release_host(uint8_t* p) {
  auto it = std::find(host_blocks_.begin(), host_blocks_.end(), p);
  if (it == host_blocks_.end()) return;
  cudaFreeHost(p);
  host_blocks_.erase(it);
}

// On the stream, then a sync: ordered after every step queued, complete on return (a pageable
// cudaMemcpy may return before its DMA ends, and it runs on the legacy stream, not ours).
Status CudaDevice::copy_to_device(void* dst, const void* src, size_t n) {
  if (!n) return Status::Ok();
  ET_RETURN_IF_ERROR(use_device());
  ET_CUDA_CALL(cudaMemcpyAsync(dst, src, n, cudaMemcpyHostToDevice, ctx_.stream));
  return cuda_call(cudaStreamSynchronize(ctx_.stream), "cudaStreamSynchronize (copy to the GPU)");
}

Status CudaDevice::copy_to_host(void* dst, const void* src, size_t n) {
  if (!n) return Status::Ok();
  ET_RETURN_IF_ERROR(use_device());
  ET_CUDA_CALL(cudaMemcpyAsync(dst, src, n, cudaMemcpyDeviceToHost, ctx_.stream));
  return cuda_call(cudaStreamSynchronize(ctx_.stream), "cudaStreamSynchronize (copy from the GPU)");
}

// ---- load: the guard, the pinned values, where the step splits ------------------------------------
Status CudaDevice::prepare(Runtime& rt) {
  auto guard = allocate(sizeof(unsigned int), 256);
  if (!guard.ok()) return guard.status();
  guard_ = reinterpret_cast<unsigned int*>(guard.value());
  ctx_.update_guard = guard_;
  auto pinned = allocate_host(sizeof(Pinned));
  if (!pinned.ok()) return pinned.status();
  pinned_ = reinterpret_cast<Pinned*>(pinned.value());
  const Binding* loss = rt.output("loss");
  if (!loss) return internal_error("cuda: the plan has no 'loss' output");  // the loader checked it
  loss_ = loss->view.data;
  split_ = 0;
  for (size_t i = 0; i < rt.nodes_.size(); ++i)
    if (rt.nodes_[i].produces_loss) split_ = i + 1;
  return Status::Ok();
}

// ---- running nodes ---------------------------------------------------------------------------------
// Node i's kernel launched on the stream (Runtime::run_node's arguments and error wording; the
// runtime's host timing is not used: a launch returns before the work is done).
Status CudaDevice::launch(Runtime& rt, size_t i, bool timed) {
  Runtime::Node& n = rt.nodes_[i];
  ctx_.node_tag = static_cast<unsigned int>(i + 1);
  KernelArgs args{n.inputs.data(), static_cast<int>(n.inputs.size()), n.outputs.data(),
                  static_cast<int>(n.outputs.size()), &n.attrs, n.workspace, n.workspace_bytes, rt.pool_.get(),
                  &ctx_};
  if (timed) ET_CUDA_CALL(cudaEventRecord(begin_[i], ctx_.stream));
  Status st = n.kernel->run(args);
  if (!st.ok()) return Status(st.code(), n.op + (n.source.empty() ? "" : " at " + n.source) + ": " + st.message());
  if (timed) ET_CUDA_CALL(cudaEventRecord(end_[i], ctx_.stream));
  return Status::Ok();
}

Status CudaDevice::enqueue_a(Runtime& rt, bool timed) {
  const size_t in_bytes = rt.memory_.input_bytes;
  if (in_bytes)
    ET_CUDA_CALL(cudaMemcpyAsync(rt.input_, rt.input_host_, in_bytes, cudaMemcpyHostToDevice, ctx_.stream));
  for (size_t i = 0; i < split_; ++i) ET_RETURN_IF_ERROR(launch(rt, i, timed));
  ET_CUDA_CALL(cudaMemcpyAsync(&pinned_->loss, loss_, sizeof(float), cudaMemcpyDeviceToHost, ctx_.stream));
  return Status::Ok();
}

Status CudaDevice::enqueue_b(Runtime& rt, bool timed) {
  ET_CUDA_CALL(cudaMemsetAsync(guard_, 0, sizeof(unsigned int), ctx_.stream));
  for (size_t i = split_; i < rt.nodes_.size(); ++i) ET_RETURN_IF_ERROR(launch(rt, i, timed));
  for (const Runtime::Copy& c : rt.copies_) {
    const size_t bytes = c.dst.nbytes();
    if (!bytes || c.dst.data == c.src.data) continue;
    const size_t words = std::max<size_t>(1, bytes / 16);
    const unsigned grid = static_cast<unsigned>(std::min<size_t>((words + 255) / 256, 1024));
    guarded_copy<<<grid, 256, 0, ctx_.stream>>>(static_cast<uint8_t*>(c.dst.data),
                                                static_cast<const uint8_t*>(c.src.data), bytes, guard_);
    ET_CUDA_CALL(cudaGetLastError());
  }
  ET_CUDA_CALL(cudaMemcpyAsync(&pinned_->guard, guard_, sizeof(unsigned int), cudaMemcpyDeviceToHost, ctx_.stream));
  return Status::Ok();
}

Status CudaDevice::check_loss(Runtime& rt) {
  const float loss = pinned_->loss;
  if (!std::isfinite(loss)) return rt.loss_not_finite(loss);
  return Status::Ok();
}

Status CudaDevice::check_guard(Runtime& rt) {
  const unsigned int tag = pinned_->guard;
  if (tag == 0) return Status::Ok();
  if (tag > rt.nodes_.size()) return internal_error("cuda: update guard holds " + std::to_string(tag) + ", not a node");
  const size_t at = tag - 1;
  const Runtime::Node& n = rt.nodes_[at];
  int updates_done = 0;  // like the CPU's count: parameter updates that ran before the refusal
  for (size_t i = 0; i < at; ++i)
    if (Runtime::is_param_update(rt.nodes_[i])) ++updates_done;
  return rt.update_refused(n.op + (n.source.empty() ? "" : " at " + n.source) + ": " + kNonfiniteUpdate, updates_done);
}

// ---- profiling: a cudaEvent pair around every node ---------------------------------------------------
Status CudaDevice::ensure_events(size_t n) {
  while (begin_.size() < n) {
    cudaEvent_t b = nullptr, e = nullptr;
    ET_CUDA_CALL(cudaEventCreate(&b));
    begin_.push_back(b);
    ET_CUDA_CALL(cudaEventCreate(&e));
    end_.push_back(e);
  }
  return Status::Ok();
}

Status CudaDevice::add_times(Runtime& rt, size_t begin, size_t end, bool forward_only) {
  for (size_t i = begin; i < end; ++i) {
    Runtime::Node& n = rt.nodes_[i];
    if (forward_only && n.section != static_cast<int>(plan::Section::forward)) continue;
    float ms = 0;
    ET_CUDA_CALL(cudaEventElapsedTime(&ms, begin_[i], end_[i]));
    n.seconds += 1e-3 * static_cast<double>(ms);
    ++n.calls;
  }
  return Status::Ok();
}

// ---- graphs ------------------------------------------------------------------------------------------
Status CudaDevice::capture(Runtime& rt, bool graph_a, cudaGraphExec_t* out) {
  // ThreadLocal: only this thread's unsafe calls invalidate the capture; other threads (another
  // Runtime in another Python thread) may allocate meanwhile.
  ET_CUDA_CALL(cudaStreamBeginCapture(ctx_.stream, cudaStreamCaptureModeThreadLocal));
  Status body = graph_a ? enqueue_a(rt, false) : enqueue_b(rt, false);
  cudaGraph_t graph = nullptr;
  const cudaError_t ended = cudaStreamEndCapture(ctx_.stream, &graph);  // always: leaves capture mode
  if (!body.ok() || ended != cudaSuccess) {
    if (graph) cudaGraphDestroy(graph);
    cudaGetLastError();
    return body.ok() ? cuda_call(ended, "cudaStreamEndCapture") : body;
  }
  const cudaError_t inst = cudaGraphInstantiate(out, graph, 0);
  cudaGraphDestroy(graph);  // the executable graph does not need it
  if (inst != cudaSuccess) {
    *out = nullptr;
    cudaGetLastError();
    return cuda_call(inst, "cudaGraphInstantiate");
  }
  return cuda_call(cudaGraphUpload(*out, ctx_.stream), "cudaGraphUpload");
}

Status CudaDevice::capture_graphs(Runtime& rt) {
  // (no `st = ...` assignments: nvcc warns that Status& from operator= is discarded)
  const Status st = [&]() -> Status {
    ET_RETURN_IF_ERROR(capture(rt, true, &graph_a_));
    ET_RETURN_IF_ERROR(capture(rt, false, &graph_b_));
    return sync();  // the uploads
  }();
  if (st.ok()) {
    mode_ = Mode::kGraphs;
    return st;
  }
  if (graph_a_) cudaGraphExecDestroy(graph_a_);
  if (graph_b_) cudaGraphExecDestroy(graph_b_);
  graph_a_ = graph_b_ = nullptr;
  cudaGetLastError();
  mode_ = Mode::kUncaptured;
  std::fprintf(stderr,
               "edgetune: cuda: capturing the training step as a CUDA Graph failed (%s); running its kernels "
               "uncaptured instead (same results, more launch overhead)\n",
               st.message().c_str());
  return Status::Ok();
}

Result<float> CudaDevice::step(Runtime& rt) {
  ET_RETURN_IF_ERROR(use_device());
  const bool timed = rt.profiling_;
  if (mode_ == Mode::kGraphs && !timed) {
    ET_CUDA_CALL(cudaGraphLaunch(graph_a_, ctx_.stream));
    ET_RETURN_IF_ERROR(sync());
    ET_RETURN_IF_ERROR(check_loss(rt));
    ET_CUDA_CALL(cudaGraphLaunch(graph_b_, ctx_.stream));
    ET_RETURN_IF_ERROR(sync());
    ET_RETURN_IF_ERROR(check_guard(rt));
    ++rt.steps_;
    return pinned_->loss;
  }
  // Uncaptured: the same operations in the same order (so the same bits as a replay).
  if (timed) ET_RETURN_IF_ERROR(ensure_events(rt.nodes_.size()));
  ET_RETURN_IF_ERROR(enqueue_a(rt, timed));
  ET_RETURN_IF_ERROR(sync());
  if (timed) ET_RETURN_IF_ERROR(add_times(rt, 0, split_, false));
  ET_RETURN_IF_ERROR(check_loss(rt));
  ET_RETURN_IF_ERROR(enqueue_b(rt, timed));
  ET_RETURN_IF_ERROR(sync());
  if (timed) ET_RETURN_IF_ERROR(add_times(rt, split_, rt.nodes_.size(), false));
  ET_RETURN_IF_ERROR(check_guard(rt));
  const float loss = pinned_->loss;
  ++rt.steps_;
  // Every kernel has run once now: capture for the next steps (a failure falls back, see the top).
  if (mode_ == Mode::kFirst && !timed) ET_RETURN_IF_ERROR(capture_graphs(rt));
  return loss;
}

Status CudaDevice::forward(Runtime& rt) {
  ET_RETURN_IF_ERROR(use_device());
  const bool timed = rt.profiling_;
  if (timed) ET_RETURN_IF_ERROR(ensure_events(rt.nodes_.size()));
  const size_t in_bytes = rt.memory_.input_bytes;
  if (in_bytes)
    ET_CUDA_CALL(cudaMemcpyAsync(rt.input_, rt.input_host_, in_bytes, cudaMemcpyHostToDevice, ctx_.stream));
  for (size_t i = 0; i < rt.nodes_.size(); ++i)
    if (rt.nodes_[i].section == static_cast<int>(plan::Section::forward)) ET_RETURN_IF_ERROR(launch(rt, i, timed));
  ET_RETURN_IF_ERROR(sync());
  if (timed) ET_RETURN_IF_ERROR(add_times(rt, 0, rt.nodes_.size(), true));
  return Status::Ok();
}

}  // namespace edgetune
