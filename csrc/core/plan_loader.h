// PlanLoader: turns the bytes of a plan file (.etp, csrc/schema/plan.fbs) into a Runtime.
//
// Loading trusts nothing in the file. It runs in steps, each refusing the plan with a
// kInvalidPlan Status that names the tensor or node at fault, before any kernel has run:
//
//   1. container  size, file identifier "ETPL", the CRC-32 footer, the FlatBuffers verifier,
//                 the format version; then alignment, region sizes and persistent_init
//   2. tensors    dtype, rank, shape, byte size, region, offset alignment and bounds
//   3. memory     the runtime's only three allocations (persistent, arena, input; kOutOfMemory
//                 when one fails), the persistent region initialised, tensor views resolved
//   4. nodes      kernel registered for the backend, section, tensor indices, attributes,
//                 workspace bounds, the kernel's own check() and its workspace request
//   5. bindings   inputs, outputs, weights, optimizer state, baked and trainable names, the
//                 scalar f32 'loss', state copies
//   6. export     the adapters' export table copied out as plain data (core/export_table.h);
//                 its recipes are checked when they run (tools/adapter_export.h)
//
// Runtime::load() and Runtime::load_file() (core/runtime.h) are the way in; the file itself is
// written by compiler/plan_file.py.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <vector>

#include "core/runtime.h"
#include "core/status.h"
#include "core/tensor.h"

namespace edgetune {

namespace plan {  // plan_generated.h, generated from csrc/schema/plan.fbs
struct Plan;
enum class Region : int8_t;
}  // namespace plan

class PlanLoader {
 public:
  // `data` is copied for the verifier; the caller may free it afterwards.
  static Result<std::unique_ptr<Runtime>> load(const uint8_t* data, size_t size, const RuntimeOptions& options);

 private:
  explicit PlanLoader(const RuntimeOptions& options) : options_(options) {}

  // One tensor of the plan: its view (data = offset within the region until memory exists).
  struct Placed {
    TensorView view;
    plan::Region region{};
    uint64_t offset = 0;
  };

  Status load_container(const uint8_t* data, size_t size);
  Status load_regions();
  Status load_tensors();
  Status allocate_memory();
  Status load_nodes();
  Status load_bindings();
  Status load_export();

  uint64_t region_size(plan::Region r) const;
  bool tensor_index_ok(uint32_t index) const { return index < placed_.size(); }

  const RuntimeOptions& options_;
  std::unique_ptr<Runtime> rt_;
  std::unique_ptr<uint8_t[]> body_;  // the plan without its footer: an aligned copy for the verifier
  const plan::Plan* plan_ = nullptr;
  uint64_t alignment_ = 0;
  std::vector<Placed> placed_;
};

}  // namespace edgetune
