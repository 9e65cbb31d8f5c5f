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
  std::vector<std::string> inputs;  // --inputs, in the plan's model-input order
  std::vector<std::string> targets; // --targets (one per target input; plans have one)
  int64_t epochs = 0;               // 0 = not given
  int64_t steps = 0;                // 0 = not given; --epochs and --steps exclude each other
  int64_t batch = 0;                // 0 = the plan's
  uint64_t seed = 0;
  int threads = 0;                  // 0 = all hardware threads
  std::string backend = "cpu";      // --backend cpu|cuda (RuntimeOptions::backend)
  double lr = 0;
  bool has_lr = false;
  std::string out;
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

}  // namespace tools
}  // namespace edgetune
