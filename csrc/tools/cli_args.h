// edgetune-train's command line: the options, their parsing and the usage text.
//
// Parsing is separate from main() so the unit tests can check it, and so every mistake is a
// Status naming the option ("--epochs: expected a positive integer, got 'ten'") that main
// prints as one error line with exit status 2.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "core/status.h"

namespace edgetune {
namespace tools {

struct TrainArgs {
  std::string plan;                 // PLAN.etp (empty for a binary with the plan inside)
  // --inputs: one item per model input, split at commas and collected over repeated flags:
  // `--inputs a.npy,b.npy` (or `--inputs a.npy --inputs b.npy`) in the plan's model-input order,
  // or `--inputs input_ids=a.npy,attention_mask=b.npy` by the plan's input names, in any order.
  // Which items are NAME=FILE depends on the plan's names: order_inputs() below.
  std::vector<std::string> inputs;
  std::vector<std::string> targets; // --targets (one per target input; plans have one)
  int64_t epochs = 0;               // 0 = not given
  int64_t steps = 0;                // 0 = not given; --epochs and --steps exclude each other
  int64_t batch = 0;                // 0 = the plan's
  uint64_t seed = 0;
  int threads = 0;                  // 0 = all hardware threads
  std::string backend = "cpu";      // --backend cpu|cuda (RuntimeOptions::backend)
  double lr = 0;
  bool has_lr = false;
  std::string out;                  // --out FILE: every weight (state_dict names) as safetensors
  std::string adapter_out;          // --adapter-out DIR: the adapter files (Session.save_adapter's)
  std::string merged_out;           // --merged-out FILE: the base weights with the adapters merged in
  int64_t log_every = 0;            // 0 = about 20 lines per run
  std::string checkpoint;           // --checkpoint PATH (tools/checkpoint.h)
  int64_t checkpoint_every_steps = 0;      // --checkpoint-every N
  double checkpoint_every_seconds = 0;     // --checkpoint-every 30s / 10m / 2h (default 10m)
  std::string resume;               // --resume PATH, or "auto": --checkpoint's file if it exists
  bool shuffle = true;
  bool quiet = false;
  bool info = false;
  bool help = false;
  bool version = false;
};

// argv[1..argc). `embedded`: the plan is built into this binary, so no PLAN argument is taken.
Result<TrainArgs> parse_args(int argc, const char* const* argv, bool embedded);

std::string usage_text(bool embedded);

// The --inputs files in the plan's model-input order (`model_inputs`: the plan's model-input names,
// in order; `targets`: its target names, only to say where those go). An item is NAME=FILE when
// the text before its first '=' is one of the plan's input names, or looks like a name (no '/' and
// no '.': "x=1.npy" is refused as an unknown name, "./x=1.npy" is a file); every item is named or
// none is. Positional files must be as many as the plan's model inputs, in its order; named ones
// must name every model input exactly once. Each mistake is an invalid_argument naming the
// input(s) and file(s) involved.
Result<std::vector<std::string>> order_inputs(const TrainArgs& args, const std::vector<std::string>& model_inputs,
                                              const std::vector<std::string>& targets);

}  // namespace tools
}  // namespace edgetune
