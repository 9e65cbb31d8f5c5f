// Runtime: one loaded, verified plan with its memory, ready to train.
//
// load() verifies the plan (core/plan_loader.h) and then allocates exactly three blocks, once,
// on the backend's device (core/device.h): the persistent region (initialised from the plan), the
// arena and the input region. step() allocates nothing: it runs every node in order with views the
// loader resolved, then applies the plan's state copies. forward() runs the forward-section nodes
// only. On cuda the memory is device memory (TensorView::data holds device pointers): read it with
// read() / write(), never through a view's pointer; set_input fills a pinned host mirror that the
// step copies in, and a step replays as two CUDA Graphs (core/cuda_device.cu).
//
// A NaN or Inf loss stops the step right after the node that produced it, before any backward
// or update node runs, so parameters and optimizer state keep their last good values. An update
// kernel whose result would be inf/NaN (an overflowed gradient, an absurd lr) refuses before it
// writes its parameter and stops the step there (kNumericError): updates run right after their
// gradients, so the ones before it have been applied — every weight and state stays finite.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "core/attrs.h"
#include "core/device.h"
#include "core/export_table.h"
#include "core/kernel.h"
#include "core/status.h"
#include "core/tensor.h"
#include "core/thread_pool.h"

namespace edgetune {

struct RuntimeOptions {
  std::string backend = "cpu";  // "cpu" | "cuda" (a build with the CUDA backend and a usable GPU)
  int num_threads = 0;          // 0 = all hardware threads; cuda runs no cpu kernels and uses 1
};

// One named tensor of the plan as the user sees it (an input, an output, a weight, a state).
struct Binding {
  std::string name;
  TensorView view;  // points into the runtime's memory (valid while the Runtime lives): device memory on
                    // cuda, so read and write it with Runtime::read / Runtime::write
};

struct MemoryStats {  // bytes of each region on the device
  size_t persistent_bytes = 0;  // params, buffers, optimizer state, constants
  size_t arena_bytes = 0;       // activations, gradients, temporaries, workspaces (planned peak)
  size_t input_bytes = 0;
  size_t total() const { return persistent_bytes + arena_bytes + input_bytes; }
};

class Runtime {
 public:
  // `data` is read during the call only; the caller may free it afterwards. Errors: kInvalidPlan
  // (the plan failed verification), kOutOfMemory (its memory could not be allocated),
  // kUnimplemented (backend not built, or cuda without a usable GPU: the message says why);
  // load_file also kNotFound / kIoError for the file.
  static Result<std::unique_ptr<Runtime>> load(const uint8_t* data, size_t size, const RuntimeOptions& options);
  static Result<std::unique_ptr<Runtime>> load_file(const std::string& path, const RuntimeOptions& options);
  ~Runtime();

  // step() arguments in order: the model inputs, then the target.
  const std::vector<Binding>& inputs() const { return inputs_; }
  int num_model_inputs() const { return num_model_inputs_; }
  // Copies `nbytes` (must equal the input's size) into input `index` (on cuda into the pinned host
  // mirror of the input region; the next step()/forward() copies it to the device).
  Status set_input(int index, const void* data, size_t nbytes);

  // The bytes of a binding (an input, output, weight or optimizer state of this runtime) copied to
  // or from host memory; `n` must be its size. On cpu a memcpy, on cuda a synchronous device copy.
  // These are the only way the host touches the runtime's memory (a view's data may be a device
  // pointer). write() of an input is overwritten by the next step's input copy: use set_input.
  Status read(const Binding& b, void* host, size_t n) const;
  Status write(const Binding& b, const void* host, size_t n);
  // The binding's bytes in place, when the host can read them directly (cpu); null on cuda. Lets
  // big readers (checkpoints, --out) skip a staging copy where there is nothing to stage.
  const void* host_data(const Binding& b) const;
  const std::string& backend() const { return device_->backend(); }
  std::string device_description() const { return device_->description(); }

  // One training step on the inputs set; returns the loss (before the update).
  Result<float> step();
  // The forward section only (model inputs must be set); read the result with output("output").
  Status forward();
  // "loss", "output": valid after step()/forward() until the next call.
  const Binding* output(const std::string& name) const;

  // Model weights under their state_dict names (tied weights: one view per name).
  const std::vector<Binding>& weights() const { return weights_; }
  const Binding* weight(const std::string& name) const;
  bool is_trainable(const std::string& name) const;

  // Inputs that a class-index loss (cross_entropy, nll_loss) reads directly as its targets: each
  // value must be ignore_index or in [0, classes). Lets a caller check a whole data file up front
  // instead of failing at the batch that holds a bad label.
  struct ClassTargets {
    int input = 0;  // index into inputs()
    int64_t classes = 0;
    int64_t ignore_index = -100;
  };
  std::vector<ClassTargets> class_targets() const;
  // A frozen weight whose value the compiler folded into constants: changing it would leave them stale.
  bool is_baked(const std::string& name) const;
  const std::vector<Binding>& optimizer_state() const { return optimizer_state_; }

  MemoryStats memory() const { return memory_; }

  // Per-node wall time, summed over the steps run while profiling is on (off by default; the
  // counters are allocated at load, so profiling allocates nothing either).
  void set_profiling(bool on) { profiling_ = on; }
  void reset_profile();
  struct NodeProfile {
    const std::string* op;
    const std::string* kernel;  // the registered kernel that ran it ("conv2d.winograd")
    const std::string* source;
    int section;  // a plan::Section value (csrc/schema/plan.fbs)
    double seconds;
    int64_t calls;
  };
  std::vector<NodeProfile> profile() const;
  int64_t steps_done() const { return steps_; }
  // A resumed run continues the count (a checkpoint holds it), so messages name the true step.
  void set_steps_done(int64_t steps) { steps_ = steps; }
  // SHA-256 of the plan file's bytes (core/sha256.h): the identity a checkpoint records.
  const std::string& plan_sha256() const { return plan_sha256_; }
  const std::string& model_label() const { return model_label_; }
  // What the plan's adapters export (core/export_table.h); null for a plan without adapters.
  const ExportTable* export_table() const { return export_.get(); }
  int num_threads() const { return pool_->num_threads(); }
  size_t num_nodes() const { return nodes_.size(); }

 private:
  Runtime() = default;
  struct Node {
    const KernelDef* kernel = nullptr;
    std::string op, source;
    int section = 0;
    std::vector<TensorView> inputs, outputs;
    Attrs attrs;
    void* workspace = nullptr;
    size_t workspace_bytes = 0;
    bool produces_loss = false;
    double seconds = 0;  // profiling
    int64_t calls = 0;
  };
  struct Copy {
    TensorView src, dst;
  };
  Status run_node(Node& n);
  Status check_binding(const Binding& b, size_t n, const char* what) const;
  // The step's numeric refusals, worded the same on every backend.
  static bool is_param_update(const Node& n);  // an optimizer update node (counted in the refusal)
  Status loss_not_finite(float loss) const;
  Status update_refused(const std::string& why, int updates_done) const;
  friend class PlanLoader;
  friend class CudaDevice;  // core/cuda_device.cu: the step hooks run the nodes (core/device.h)

  std::unique_ptr<Device> device_;  // first member: outlives everything below
  void* device_context_ = nullptr;  // device_->kernel_context(), for every KernelArgs
  uint8_t* persistent_ = nullptr;
  uint8_t* arena_ = nullptr;
  uint8_t* input_ = nullptr;
  uint8_t* input_host_ = nullptr;  // what set_input writes: input_ on cpu, its pinned mirror on cuda
  MemoryStats memory_;
  std::unique_ptr<ThreadPool> pool_;
  std::vector<Node> nodes_;
  std::vector<Copy> copies_;
  std::vector<Binding> inputs_, outputs_, weights_, optimizer_state_;
  std::vector<std::string> trainable_;
  std::vector<std::string> baked_;
  int num_model_inputs_ = 0;
  const float* loss_value_ = nullptr;  // the 'loss' output, checked after its node runs (host loop only)
  int64_t steps_ = 0;
  bool profiling_ = false;
  std::string model_label_;
  std::string plan_sha256_;
  std::unique_ptr<ExportTable> export_;
};

}  // namespace edgetune
