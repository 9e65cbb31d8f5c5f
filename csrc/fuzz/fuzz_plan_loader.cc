// libFuzzer harness: PlanLoader (Runtime::load) on arbitrary bytes. See csrc/fuzz/README.md.
//
// Each input is loaded twice:
//   1. as is: exercises the container checks (size, identifier, footer, CRC-32);
//   2. with its checksum footer rewritten (an existing "ETCK" footer is stripped, then CRC-32 +
//      "ETCK" appended), so mutations of a valid plan get past the checksum and reach the
//      FlatBuffers verifier, the region/tensor/node/binding checks and the kernels' check().
// Loading must return a Status for every input: a crash, a sanitizer report or a leak is a bug.
// A plan with an adapter export table (seed: corpus/plan_loader/mlp_dora_pissa.etp) also has its
// recipes checked against its weights (tools/adapter_export.h, shapes only: no values are
// computed, so a recipe's result size cannot exhaust memory): a Status again, never a crash.
//
// Resource cap: the loader allocates the three regions a verified plan declares, up to 1 TiB each
// by design (kMaxRegionBytes; a failed allocation is kOutOfMemory), so an 8 KB input can ask for
// gigabytes and trip libFuzzer's malloc/RSS limit (reproducers/plan_loader/oom_16gib_arena.etp).
// Inputs whose FlatBuffer verifies and declares more than kMaxFuzzRegionBytes in all are skipped.
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <vector>

#include "core/crc32.h"
#include "core/runtime.h"
#include "plan_generated.h"
#include "tools/adapter_export.h"

namespace {

constexpr char kFooterMagic[4] = {'E', 'T', 'C', 'K'};  // plan_loader.cc's footer: CRC-32 LE + "ETCK"
constexpr size_t kFooterSize = 8;
constexpr uint64_t kMaxFuzzRegionBytes = uint64_t{256} << 20;

// True when `body` (a plan without its footer) verifies and declares regions above the cap.
bool declares_too_much(const std::vector<uint8_t>& body) {
  flatbuffers::Verifier verifier(body.data(), body.size(), /*max_depth=*/64, /*max_tables=*/50'000'000);
  if (!edgetune::plan::VerifyPlanBuffer(verifier)) return false;
  const auto* plan = edgetune::plan::GetPlan(body.data());
  const uint64_t p = plan->persistent_bytes(), a = plan->arena_bytes(), i = plan->input_bytes();
  return p > kMaxFuzzRegionBytes || a > kMaxFuzzRegionBytes || i > kMaxFuzzRegionBytes ||
         p + a + i > kMaxFuzzRegionBytes;
}

void load(const uint8_t* data, size_t size) {
  edgetune::RuntimeOptions options;
  options.num_threads = 1;  // the fuzzer runs one input at a time; no worker threads to start
  auto rt = edgetune::Runtime::load(data, size, options);
  if (rt.ok()) {
    // a verified plan: its bindings must be readable
    const auto& runtime = *rt.value();
    for (const auto& b : runtime.inputs()) (void)b.view.nbytes();
    for (const auto& b : runtime.weights()) (void)b.view.nbytes();
    (void)runtime.memory().total();
    if (const edgetune::ExportTable* table = runtime.export_table()) {
      std::vector<edgetune::tools::SafetensorsEntry> weights;
      for (const auto& b : runtime.weights())
        weights.push_back({b.name, b.view.dtype, std::vector<int64_t>(b.view.shape, b.view.shape + b.view.rank),
                           nullptr, b.view.nbytes()});
      edgetune::tools::RecipeState state(weights);
      (void)edgetune::tools::adapter_files(*table, state, /*shapes_only=*/true).ok();
      (void)edgetune::tools::merged_tensors(*table, state, /*shapes_only=*/true).ok();
    }
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  size_t body = size;
  if (size >= kFooterSize && std::memcmp(data + size - 4, kFooterMagic, 4) == 0) body = size - kFooterSize;
  std::vector<uint8_t> fixed(data, data + body);
  if (declares_too_much(fixed)) return 0;

  load(data, size);
  const uint32_t crc = edgetune::crc32(fixed.data(), fixed.size());
  for (int i = 0; i < 4; ++i) fixed.push_back(static_cast<uint8_t>(crc >> (8 * i)));
  fixed.insert(fixed.end(), kFooterMagic, kFooterMagic + 4);
  if (fixed.size() != size || std::memcmp(fixed.data(), data, size) != 0) load(fixed.data(), fixed.size());
  return 0;
}
