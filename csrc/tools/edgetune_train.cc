// edgetune-train: trains a compiled edgetune plan on .npy data with no Python on the device,
// and writes the tuned weights as .safetensors.
//
//   edgetune-train PLAN.etp --inputs x.npy --targets y.npy --epochs 3 --out tuned.safetensors
//   edgetune-train PLAN.etp --inputs ids.npy,mask.npy --targets y.npy ...     (several model inputs,
//   edgetune-train PLAN.etp --inputs input_ids=ids.npy,attention_mask=mask.npy ...  in order or by name)
//   ./train --inputs x.npy --targets y.npy ...      (a binary from --emit-binary: plan inside)
//   edgetune-train PLAN.etp --info                  (what the plan takes, holds and needs)
//   edgetune-train LORA.etp ... --adapter-out adapter/ --merged-out merged.safetensors
//                                                   (a plan with adapters: PEFT files, merged weights)
//
// Flow, in run()'s four steps: load: find an embedded plan (embedded_plan.h) or load PLAN.etp
// through the runtime API (core/runtime.h); bind: the --inputs files put in the plan's input
// order (cli_args.h order_inputs), each .npy file to a plan input (npy.h: shape check, same-kind
// dtype conversion, same sample count in every file), and check --out can be written *before*
// training; train: for each step gather the same B shuffled rows (shuffle.h) of every file into
// the inputs and call Runtime::step(), with progress lines showing the mean loss over the steps
// since the previous line, and a checkpoint (checkpoint.h) every --checkpoint-every; write: every
// weight under its state_dict name (safetensors.h, atomically: atomic_file.h); for a plan with
// adapters, --adapter-out's files and --merged-out's weights from the plan's export recipes
// (adapter_export.h: the files Session.save_adapter / state_dict(merged=True) give, with no
// Python; checked against the plan, created and reserved before training). --resume restores a
// checkpoint after bind and continues from its step: same batches, same dropout stream, so the
// weights end bit-identical to a run that was never stopped.
//
// Errors are one "edgetune-train: error: ..." line on stderr. Exit status: 0 ok; 1 plan or
// runtime failure (the loader's message, a failed write of the result, memory that could not be
// allocated); 2 usage or input error (flags, data files, shapes, an unwritable --out or
// --checkpoint, a checkpoint of another plan or run); 3 the loss or an update became NaN/Inf —
// nothing is written then, and an existing --out file is left as it was; 128+N: signal N
// stopped the run after a whole step, and the checkpoint and --out were written.
//
// Test hook: EDGETUNE_TEST_KILL=after-step:N | checkpoint-write:K | out-write makes the process
// SIGKILL itself after step N, halfway through writing its K-th checkpoint, or halfway through
// writing --out (tests/tools/test_edgetune_train_resume.py proves nothing is lost then).
#include <unistd.h>

#include <sys/stat.h>

#include <algorithm>
#include <csignal>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <exception>
#include <memory>
#include <new>
#include <string>
#include <type_traits>
#include <vector>

#include "core/crc32.h"
#include "core/runtime.h"
#include "tools/adapter_export.h"
#include "tools/atomic_file.h"
#include "tools/checkpoint.h"
#include "tools/cli_args.h"
#include "tools/embedded_plan.h"
#include "tools/npy.h"
#include "tools/safetensors.h"
#include "tools/shuffle.h"

#ifndef EDGETUNE_VERSION
#define EDGETUNE_VERSION "0.1.0"  // CMake passes project(VERSION); this is for builds without it
#endif

namespace edgetune {
namespace tools {
namespace {

enum ExitCode { kExitOk = 0, kExitRuntime = 1, kExitUsage = 2, kExitNumeric = 3 };

int fail(int code, const std::string& message) {
  std::fflush(stdout);
  std::fprintf(stderr, "edgetune-train: error: %s\n", message.c_str());
  return code;
}

std::string human_bytes(double n) {
  const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  int u = 0;
  while (n >= 1024 && u < 4) {
    n /= 1024;
    ++u;
  }
  char buf[32];
  std::snprintf(buf, sizeof buf, u == 0 ? "%.0f %s" : "%.1f %s", n, units[u]);
  return buf;
}

std::string fmt_loss(double v) {
  char buf[32];
  double a = std::fabs(v);
  std::snprintf(buf, sizeof buf, (a != 0 && (a < 1e-3 || a >= 1e5)) ? "%.3e" : "%.4f", v);
  return buf;
}

std::string fmt(const char* f, double v) {
  char buf[64];
  std::snprintf(buf, sizeof buf, f, v);
  return buf;
}

// Milliseconds with about three significant digits: tiny models step in microseconds.
std::string fmt_ms(double ms) { return fmt(ms < 1 ? "%.3f" : ms < 10 ? "%.2f" : "%.1f", ms); }

std::vector<int64_t> view_shape(const TensorView& v) { return std::vector<int64_t>(v.shape, v.shape + v.rank); }

// A safetensors entry (name, dtype, shape, size; no data yet) for one weight binding.
SafetensorsEntry entry_for(const Binding& b) {
  SafetensorsEntry e;
  e.name = b.name;
  e.dtype = b.view.dtype;
  e.shape = view_shape(b.view);
  e.nbytes = b.view.nbytes();
  return e;
}

const Binding* find_state(const Runtime& rt, const std::string& name) {
  for (const auto& b : rt.optimizer_state()) {
    if (b.name == name) return &b;
  }
  return nullptr;
}

// A scalar (0-d or one-element) f32/f64 state such as optim.lr, read or written through the runtime
// (its memory may be on a GPU); false when the binding is not one such value or the copy fails.
bool is_float_scalar(const TensorView& v) {
  return v.numel() == 1 && v.data != nullptr && (v.dtype == DType::f32 || v.dtype == DType::f64);
}

bool read_scalar(const Runtime& rt, const Binding& b, double* out) {
  if (!is_float_scalar(b.view)) return false;
  if (b.view.dtype == DType::f32) {
    float v;
    if (!rt.read(b, &v, sizeof v).ok()) return false;
    *out = v;
  } else {
    if (!rt.read(b, out, sizeof *out).ok()) return false;
  }
  return true;
}

bool write_scalar(Runtime& rt, const Binding& b, double value) {
  if (!is_float_scalar(b.view)) return false;
  if (b.view.dtype == DType::f32) {
    const float v = static_cast<float>(value);
    return rt.write(b, &v, sizeof v).ok();
  }
  return rt.write(b, &value, sizeof value).ok();
}

int print_info(const Runtime& rt, const std::string& source) {
  std::printf("plan: %s\n", source.c_str());
  if (!rt.model_label().empty()) std::printf("model: %s\n", rt.model_label().c_str());
  const auto& ins = rt.inputs();
  size_t width = 4;
  for (const auto& b : ins) width = std::max(width, b.name.size());
  for (const auto& b : rt.weights()) width = std::max(width, b.name.size());
  for (const auto& b : rt.optimizer_state()) width = std::max(width, b.name.size());
  const int w = static_cast<int>(width);
  std::printf("inputs (step() order%s):\n",
              !ins.empty() && ins[0].view.rank > 0 ? (", batch " + std::to_string(ins[0].view.shape[0])).c_str() : "");
  const int n_model = rt.num_model_inputs();
  for (size_t i = 0; i < ins.size(); ++i) {
    // what the .npy file for it holds: dtype and shape, N samples first
    std::string file = "N";
    for (int d = 1; d < ins[i].view.rank; ++d) file += "," + std::to_string(ins[i].view.shape[d]);
    const char* descr = npy_descr(ins[i].view.dtype);
    file = std::string(".npy '") + (*descr ? descr : dtype_name(ins[i].view.dtype)) + "' [" + file + "]";
    const std::string role = static_cast<int>(i) < n_model
                                 ? (n_model > 1 ? "model input " + std::to_string(i + 1) + " of " + std::to_string(n_model)
                                                : std::string("model input")) + " (--inputs)"
                                 : std::string("target (--targets)");
    std::printf("  %-*s  %-18s  %s: %s\n", w, ins[i].name.c_str(), ins[i].view.shape_string().c_str(), role.c_str(),
                file.c_str());
  }
  if (n_model > 1) {
    std::string named;
    for (int i = 0; i < n_model; ++i) named += (i ? "," : "") + ins[static_cast<size_t>(i)].name + "=FILE.npy";
    std::printf("data: --inputs %s (or the files in this order, comma-separated) --targets FILE.npy\n", named.c_str());
  }
  std::printf("outputs:\n");
  for (const char* name : {"loss", "output"}) {
    if (const Binding* b = rt.output(name)) {
      std::printf("  %-*s  %s\n", w, b->name.c_str(), b->view.shape_string().c_str());
    }
  }
  int64_t total = 0, trainable = 0;
  size_t n_trainable = 0;
  for (const auto& b : rt.weights()) {
    total += b.view.numel();
    if (rt.is_trainable(b.name)) {
      trainable += b.view.numel();
      ++n_trainable;
    }
  }
  std::printf("weights: %zu tensors, %lld values; trainable: %zu tensors, %lld values (%.2f%%)\n", rt.weights().size(),
              static_cast<long long>(total), n_trainable, static_cast<long long>(trainable),
              total ? 100.0 * static_cast<double>(trainable) / static_cast<double>(total) : 0.0);
  for (const auto& b : rt.weights()) {
    if (rt.is_trainable(b.name)) {
      std::printf("  %-*s  %-18s  trainable\n", w, b.name.c_str(), b.view.shape_string().c_str());
    } else {
      std::printf("  %-*s  %s\n", w, b.name.c_str(), b.view.shape_string().c_str());
    }
  }
  std::printf("optimizer state: %zu tensors\n", rt.optimizer_state().size());
  for (const auto& b : rt.optimizer_state()) {
    double v;
    if (read_scalar(rt, b, &v)) {
      std::printf("  %-*s  %-18s  = %g\n", w, b.name.c_str(), b.view.shape_string().c_str(), v);
    } else {
      std::printf("  %-*s  %s\n", w, b.name.c_str(), b.view.shape_string().c_str());
    }
  }
  if (const ExportTable* ex = rt.export_table()) {
    std::string files = ex->has_peft ? "Hugging Face PEFT + edgetune adapter files" : "edgetune adapter files";
    std::string merged = ex->unmergeable.empty()
                             ? std::to_string(ex->merged.size()) + " weights merged with --merged-out"
                             : "not mergeable: " + unmergeable_reasons(*ex);
    std::printf("adapters: %s with --adapter-out DIR; %s\n", files.c_str(), merged.c_str());
  }
  MemoryStats m = rt.memory();
  std::printf("memory: %s (persistent %s + arena %s + inputs %s)\n", human_bytes(static_cast<double>(m.total())).c_str(),
              human_bytes(static_cast<double>(m.persistent_bytes)).c_str(),
              human_bytes(static_cast<double>(m.arena_bytes)).c_str(),
              human_bytes(static_cast<double>(m.input_bytes)).c_str());
  std::printf("nodes: %zu, threads: %d\n", rt.num_nodes(), rt.num_threads());
  std::printf("backend: %s (%s)\n", rt.backend().c_str(), rt.device_description().c_str());
  return kExitOk;
}

bool same_file(const std::string& a, const std::string& b) {
  struct stat sa, sb;
  return ::stat(a.c_str(), &sa) == 0 && ::stat(b.c_str(), &sb) == 0 && sa.st_dev == sb.st_dev && sa.st_ino == sb.st_ino;
}

// Progress output: a line per --log-every steps; on a terminal one line rewritten in place.
class Progress {
 public:
  Progress(bool quiet) : quiet_(quiet), tty_(!quiet && ::isatty(STDOUT_FILENO)) {}
  void line(const std::string& text) {
    if (quiet_) return;
    if (tty_) {
      std::printf("\r%s\x1b[K", text.c_str());
      open_ = true;
    } else {
      std::printf("%s\n", text.c_str());
    }
    std::fflush(stdout);
  }
  void end() {
    if (open_) std::printf("\n");
    open_ = false;
    std::fflush(stdout);
  }

 private:
  bool quiet_, tty_, open_ = false;
};

// ---- the steps of a run -------------------------------------------------------------------------
// run() is load -> bind -> train -> write. Each step either goes on (kContinue) or has already
// printed its one error line through fail() and returns the exit status.
constexpr int kContinue = -1;

// An allocation that failed is the machine's limit, not a mistake in the command: exit 1, not 2.
int exit_code_for(const Status& s, int code) { return s.code() == StatusCode::kOutOfMemory ? kExitRuntime : code; }

// The plan and where it came from.
struct LoadedPlan {
  EmbeddedPlan embedded;       // found: the plan is inside this executable
  std::string source;          // "embedded in ./train" or the PLAN path, for the header and --info
  std::unique_ptr<Runtime> rt;
};

// One data file bound to a plan input.
struct BoundData {
  std::string path;
  int input = 0;
  NpyArray array;
  std::vector<uint8_t> staging;  // one batch, handed to Runtime::set_input
};

// The data and the step counts derived from it and the arguments.
struct Schedule {
  std::vector<BoundData> data;
  int64_t batch = 0;  // the plan's batch size
  int64_t rows = 0;   // samples in every data file
  int64_t steps_per_epoch = 0, dropped = 0, total_steps = 0, log_every = 0;
  double plan_lr = 0;  // the plan's optim.lr, when have_plan_lr
  bool have_plan_lr = false;
  uint32_t data_crc32 = 0;  // of every data file's rows as bound (a checkpoint names its data)
  int64_t start_step = 0;   // > 0 when resumed from a checkpoint
  std::string resumed_from;
};

struct TrainResult {
  double first_loss = 0, last_loss = 0, seconds = 0;  // losses of the whole run, resumed or not
  int64_t steps = 0;     // steps taken (fewer than planned when a signal stopped the run)
  int stop_signal = 0;   // SIGINT/SIGTERM/SIGHUP that stopped the run, or 0
};

// ---- signals: SIGINT, SIGTERM, SIGHUP end the run after the current step ---------------------------
// The first one is noted and the loop stops after the step in flight, so the weights written are
// those of a whole step (and the process exits 128 + signal, the shell's convention). A second
// one means "now": the default action runs at once (the atomic write keeps an existing --out).
volatile std::sig_atomic_t g_stop_signal = 0;

extern "C" void on_stop_signal(int sig) {
  if (g_stop_signal != 0) {  // async-signal-safe: signal() and raise() only
    std::signal(sig, SIG_DFL);
    std::raise(sig);
    return;
  }
  g_stop_signal = sig;
}

void install_stop_handlers() {
  struct sigaction sa {};
  sa.sa_handler = on_stop_signal;
  sigemptyset(&sa.sa_mask);
  for (int sig : {SIGINT, SIGTERM, SIGHUP}) sigaction(sig, &sa, nullptr);
}

const char* signal_name(int sig) {
  return sig == SIGINT ? "SIGINT" : sig == SIGTERM ? "SIGTERM" : sig == SIGHUP ? "SIGHUP" : "a signal";
}

// ---- test hook: EDGETUNE_TEST_KILL (see the top of this file) ---------------------------------------
struct KillPoint {
  int64_t after_step = 0;        // SIGKILL once this many steps are done (0: never)
  int64_t checkpoint_write = 0;  // SIGKILL halfway through this checkpoint write (1-based; 0: never)
  bool out_write = false;        // SIGKILL halfway through the --out write
};

KillPoint kill_point_from_env() {
  KillPoint k;
  const char* v = std::getenv("EDGETUNE_TEST_KILL");
  if (!v) return k;
  const std::string s = v;
  auto number_after = [&](const char* prefix) -> int64_t {
    return s.rfind(prefix, 0) == 0 ? std::atoll(s.c_str() + std::strlen(prefix)) : 0;
  };
  k.after_step = number_after("after-step:");
  k.checkpoint_write = number_after("checkpoint-write:");
  k.out_write = s == "out-write";
  return k;
}

// ---- load: the arguments and the plan ------------------------------------------------------------

// A plan appended to this executable (an --emit-binary build). Only a damaged one is an error:
// an unreadable executable just means no embedded plan.
int find_embedded_plan(int argc, char** argv, EmbeddedPlan* embedded) {
  std::string self = self_executable(argc > 0 ? argv[0] : nullptr);
  if (self.empty()) return kContinue;
  auto r = read_embedded_plan(self);
  if (r.ok()) {
    *embedded = std::move(r.value());
  } else if (r.status().code() == StatusCode::kInvalidPlan) {
    return fail(kExitRuntime, r.status().message());
  }
  return kContinue;
}

// The command line; --help and --version answer here (kExitOk).
int parse_command_line(int argc, char** argv, bool embedded, TrainArgs* args) {
  auto parsed = parse_args(argc, argv, embedded);
  if (!parsed.ok()) {
    std::string message = parsed.status().message();
    if (message.find("--help") == std::string::npos) message += " (see --help)";
    return fail(kExitUsage, message);
  }
  *args = std::move(parsed.value());
  if (args->help) {
    std::fputs(usage_text(embedded).c_str(), stdout);
    return kExitOk;
  }
  if (args->version) {
    std::printf("edgetune-train %s\n", EDGETUNE_VERSION);
    return kExitOk;
  }
  return kContinue;
}

// The embedded plan or PLAN, loaded and verified by the runtime.
int load_plan(const TrainArgs& args, const char* argv0, LoadedPlan* plan) {
  RuntimeOptions options;
  options.num_threads = args.threads;
  options.backend = args.backend;
  if (plan->embedded.found) {
    plan->source = "embedded in " + (argv0 ? std::string(argv0) : plan->embedded.source);
    auto r = Runtime::load(plan->embedded.bytes.data(), plan->embedded.bytes.size(), options);
    if (!r.ok()) return fail(kExitRuntime, "loading the embedded plan: " + r.status().to_string());
    plan->rt = std::move(r.value());
    plan->embedded.bytes = {};  // the runtime keeps what it needs
    return kContinue;
  }
  plan->source = args.plan;
  struct stat st;
  if (::stat(args.plan.c_str(), &st) != 0) {
    const int e = errno;
    return fail(kExitUsage, args.plan + ": " + (e == ENOENT ? "no such plan file" : std::strerror(e)));
  }
  if (S_ISDIR(st.st_mode)) return fail(kExitUsage, args.plan + ": is a directory, not a plan file");
  auto r = Runtime::load_file(args.plan, options);
  if (!r.ok()) {
    std::string message = r.status().to_string();  // the loader names the file itself
    if (message.find(args.plan) == std::string::npos) message = args.plan + ": " + message;
    return fail(kExitRuntime, message);
  }
  plan->rt = std::move(r.value());
  return kContinue;
}

// ---- bind: the plan's inputs, the output path, the data files, the learning rate -----------------

// One --inputs file per model input (put in the plan's order: order_inputs() in cli_args.h) and as
// many --targets as the plan takes; one batch size for all its inputs (*batch).
int check_plan_inputs(TrainArgs* args, const Runtime& rt, int64_t* batch_out) {
  const auto& ins = rt.inputs();
  const int n_model = rt.num_model_inputs();
  const int n_target = static_cast<int>(ins.size()) - n_model;
  std::vector<std::string> model_names, target_names;
  for (int i = 0; i < static_cast<int>(ins.size()); ++i) {
    (i < n_model ? model_names : target_names).push_back(ins[static_cast<size_t>(i)].name);
  }
  auto ordered = order_inputs(*args, model_names, target_names);
  if (!ordered.ok()) return fail(kExitUsage, ordered.status().message());
  args->inputs = std::move(ordered.value());
  if (static_cast<int>(args->targets.size()) != n_target) {
    std::string names;
    for (const auto& t : target_names) names += (names.empty() ? "" : ", ") + t;
    return fail(kExitUsage, "the plan takes " + std::to_string(n_target) + " target(s) (" + names + "), got " +
                                std::to_string(args->targets.size()) + " --targets");
  }
  int64_t batch = -1;
  for (const auto& b : ins) {
    if (b.view.rank < 1) {
      return fail(kExitRuntime, "plan input '" + b.name + "' " + b.view.shape_string() +
                                    " has no batch axis; edgetune-train feeds batches along the first axis");
    }
    if (batch >= 0 && b.view.shape[0] != batch) {
      return fail(kExitRuntime, "plan inputs disagree on the batch size: '" + ins[0].name + "' " +
                                    ins[0].view.shape_string() + " vs '" + b.name + "' " + b.view.shape_string());
    }
    batch = b.view.shape[0];
  }
  if (batch <= 0) return fail(kExitRuntime, "the plan has no inputs with a batch axis");
  if (args->batch != 0 && args->batch != batch) {
    return fail(kExitUsage, "--batch " + std::to_string(args->batch) + " does not match the plan's batch size " +
                                std::to_string(batch) + " (batch sizes are fixed at compile time: recompile for " +
                                std::to_string(args->batch) + ", or drop --batch)");
  }
  *batch_out = batch;
  return kContinue;
}

// The files --adapter-out writes into its directory (the names Session.save_adapter uses).
std::vector<std::string> adapter_paths(const TrainArgs& args, const Runtime& rt) {
  std::vector<std::string> out;
  const ExportTable* ex = rt.export_table();
  if (args.adapter_out.empty() || !ex) return out;
  if (ex->has_peft) {
    out.push_back(join_path(args.adapter_out, "adapter_config.json"));
    out.push_back(join_path(args.adapter_out, "adapter_model.safetensors"));
  }
  out.push_back(join_path(args.adapter_out, "edgetune_adapter.json"));
  out.push_back(join_path(args.adapter_out, "edgetune_adapter.safetensors"));
  return out;
}

// --adapter-out and --merged-out need a plan with adapters (and --merged-out mergeable ones); the
// plan's recipes are checked against its weights now (shapes only), so a bad one fails before
// training, not after; the adapter directory is created.
int check_export_outputs(const TrainArgs& args, const Runtime& rt) {
  if (args.adapter_out.empty() && args.merged_out.empty()) return kContinue;
  const ExportTable* ex = rt.export_table();
  const char* flag = args.adapter_out.empty() ? "--merged-out" : "--adapter-out";
  if (!ex)
    return fail(kExitUsage, std::string(flag) + ": this plan has no adapters to export (its spec trains the model's "
                            "own weights; --out FILE writes them)");
  if (!args.merged_out.empty() && !ex->unmergeable.empty())
    return fail(kExitUsage, "--merged-out: the adapters cannot be merged into the base weights: " +
                                unmergeable_reasons(*ex) + " (--adapter-out writes them unmerged)");
  std::vector<SafetensorsEntry> weights;  // names, dtypes and shapes: enough to check the recipes
  for (const auto& b : rt.weights()) weights.push_back(entry_for(b));
  RecipeState state(weights);
  if (!args.adapter_out.empty()) {
    auto files = adapter_files(*ex, state, /*shapes_only=*/true);
    if (!files.ok()) return fail(kExitRuntime, "--adapter-out: the plan's export table: " + files.status().message());
  }
  if (!args.merged_out.empty()) {
    auto merged = merged_tensors(*ex, state, /*shapes_only=*/true);
    if (!merged.ok()) return fail(kExitRuntime, "--merged-out: the plan's export table: " + merged.status().message());
  }
  if (!args.adapter_out.empty()) {
    Status s = make_directories(args.adapter_out);
    if (!s.ok()) return fail(kExitUsage, "--adapter-out: " + s.message());
  }
  return kContinue;
}

// --out, --adapter-out's files, --merged-out and --checkpoint can be written, and are none of the
// files this run reads (nor each other): checked before training.
int check_output_paths(const TrainArgs& args, const Runtime& rt, bool embedded) {
  // `--out y.npy` (a slip of the keyboard) would replace the training data with weights.
  std::vector<std::string> sources = args.inputs;
  sources.insert(sources.end(), args.targets.begin(), args.targets.end());
  if (!embedded) sources.push_back(args.plan);
  std::vector<std::pair<std::string, std::string>> outputs = {
      {"--out", args.out}, {"--merged-out", args.merged_out}, {"--checkpoint", args.checkpoint}};
  for (const auto& path : adapter_paths(args, rt)) outputs.emplace_back("--adapter-out", path);
  for (size_t i = 0; i < outputs.size(); ++i) {
    const auto& [flag, path] = outputs[i];
    if (path.empty()) continue;
    Status s = check_writable(path);
    if (!s.ok()) return fail(kExitUsage, flag + ": " + s.message());
    for (const auto& src : sources) {
      if (same_file(path, src)) {
        return fail(kExitUsage, flag + " " + path + " is the same file as " + src + ", which this run reads");
      }
    }
    for (size_t j = 0; j < i; ++j) {
      const auto& [other_flag, other] = outputs[j];
      if (!other.empty() && (path == other || same_file(path, other)))
        return fail(kExitUsage, other_flag + " and " + flag + " name the same file " + path +
                                    "; give them different names");
    }
  }
  return kContinue;
}

// Each .npy file read and bound to its plan input (shape checked, dtype converted); the number
// of samples, steps per epoch and total steps.
int bind_data(const TrainArgs& args, const Runtime& rt, int64_t batch, Schedule* sched) {
  const auto& ins = rt.inputs();
  const int n_model = rt.num_model_inputs();
  sched->batch = batch;
  for (size_t i = 0; i < ins.size(); ++i) {
    const bool is_model = static_cast<int>(i) < n_model;
    const std::string& path = is_model ? args.inputs[i] : args.targets[i - static_cast<size_t>(n_model)];
    auto arr = read_npy(path);
    if (!arr.ok()) {
      // with several model inputs, say which one the file was for
      const std::string what = is_model && n_model > 1 ? " (model input '" + ins[i].name + "')" : "";
      return fail(exit_code_for(arr.status(), kExitUsage),
                  (is_model ? "--inputs " : "--targets ") + arr.status().message() + what);
    }
    auto bound = bind_to_input(arr.value(), path, ins[i].name, ins[i].view);
    if (!bound.ok()) return fail(exit_code_for(bound.status(), kExitUsage), bound.status().message());
    BoundData d;
    d.path = path;
    d.input = static_cast<int>(i);
    d.array = std::move(bound.value());
    d.staging.resize(ins[i].view.nbytes());
    sched->data.push_back(std::move(d));
  }
  const auto& data = sched->data;
  const int64_t rows = data[0].array.rows();
  for (const auto& d : data) {
    if (d.array.rows() != rows) {
      auto named = [&](const BoundData& b) { return b.path + " ('" + ins[static_cast<size_t>(b.input)].name + "')"; };
      return fail(kExitUsage, "the data files disagree on the number of samples: " + named(data[0]) + " has " +
                                  std::to_string(rows) + ", " + named(d) + " has " + std::to_string(d.array.rows()) +
                                  " (every --inputs and --targets file holds one row per sample)");
    }
  }
  if (rows < batch) {
    return fail(kExitUsage, data[0].path + " has " + std::to_string(rows) + " samples, fewer than one batch of " +
                                std::to_string(batch) + " (the plan's batch size)");
  }
  // Every class-index target checked now, not when its batch comes up (an epoch of work later).
  for (const auto& check : rt.class_targets()) {
    for (const auto& d : data) {
      if (d.input != check.input) continue;
      const NpyArray& a = d.array;
      if (a.dtype != DType::i64 && a.dtype != DType::i32) continue;
      const int64_t n = a.numel();
      const int64_t per_row = rows > 0 ? n / rows : 1;
      for (int64_t i = 0; i < n; ++i) {
        int64_t c;
        if (a.dtype == DType::i64) {
          int64_t v;
          std::memcpy(&v, a.data + static_cast<size_t>(i) * 8, 8);
          c = v;
        } else {
          int32_t v;
          std::memcpy(&v, a.data + static_cast<size_t>(i) * 4, 4);
          c = v;
        }
        if (c == check.ignore_index || (c >= 0 && c < check.classes)) continue;
        return fail(kExitUsage, d.path + ": target " + std::to_string(c) + " at row " +
                                    std::to_string(per_row > 0 ? i / per_row : i) + " is outside [0, " +
                                    std::to_string(check.classes) + ") (the plan's class count) and is not ignore_index " +
                                    std::to_string(check.ignore_index));
      }
    }
  }
  sched->rows = rows;
  sched->steps_per_epoch = rows / batch;
  sched->dropped = rows % batch;
  sched->total_steps = args.steps ? args.steps : (args.epochs ? args.epochs : 1) * sched->steps_per_epoch;
  sched->log_every = args.log_every ? args.log_every : std::max<int64_t>(1, (sched->total_steps + 19) / 20);
  return kContinue;
}

// --lr into the plan's optim.lr state; the plan's own rate is kept for the header.
int set_learning_rate(const TrainArgs& args, Runtime& rt, Schedule* sched) {
  const Binding* lr_state = find_state(rt, "optim.lr");
  sched->have_plan_lr = lr_state && read_scalar(rt, *lr_state, &sched->plan_lr);
  if (!args.has_lr) return kContinue;
  if (!lr_state) {
    return fail(kExitUsage, "--lr: this plan has no 'optim.lr' state to set (its learning rate is fixed; "
                            "recompile with the rate you want)");
  }
  if (!write_scalar(rt, *lr_state, args.lr)) {
    return fail(kExitRuntime, "--lr: the plan's 'optim.lr' is " + lr_state->view.shape_string() +
                                  ", not a scalar float");
  }
  return kContinue;
}

// ---- checkpoints: what a resumed run must match, resuming, writing ---------------------------------

// The run's position beside the runtime's own state: a resumed run must see the same batches.
Metadata run_metadata(const TrainArgs& args, const Schedule& sched, double first_loss, double last_loss) {
  char crc[16];
  std::snprintf(crc, sizeof crc, "%08x", sched.data_crc32);
  return {{"producer", std::string("edgetune-train ") + EDGETUNE_VERSION},
          {"run.seed", std::to_string(args.seed)},
          {"run.shuffle", args.shuffle ? "1" : "0"},
          {"run.batch", std::to_string(sched.batch)},
          {"run.rows", std::to_string(sched.rows)},
          {"run.data_crc32", crc},
          {"run.first_loss", fmt("%.9g", first_loss)},
          {"run.last_loss", fmt("%.9g", last_loss)}};
}

// CRC-32 over every data file's bound rows: resuming onto other data would not be the same run.
void fingerprint_data(Schedule* sched) {
  uint32_t crc = 0;
  for (const auto& d : sched->data) crc = crc32_update(crc, d.array.data, d.array.nbytes);
  sched->data_crc32 = crc;
}

// --resume: the checkpoint read, checked against this run, and restored into the runtime.
int resume_from_checkpoint(const TrainArgs& args, Runtime& rt, Schedule* sched, TrainResult* result) {
  std::string path = args.resume;
  if (path.empty()) return kContinue;
  if (path == "auto") {
    struct stat st;
    if (::stat(args.checkpoint.c_str(), &st) != 0) return kContinue;  // nothing yet: a fresh start
    path = args.checkpoint;
  }
  auto ckpt = read_checkpoint(path);
  if (!ckpt.ok()) return fail(exit_code_for(ckpt.status(), kExitUsage), "--resume " + ckpt.status().message());
  const SafetensorsFile& f = ckpt.value();
  const Metadata now = run_metadata(args, *sched, 0, 0);
  static const std::pair<const char*, const char*> kMustMatch[] = {
      {"run.seed", "--seed"}, {"run.shuffle", "--no-shuffle"}, {"run.batch", "the batch size"},
      {"run.rows", "the number of samples"}, {"run.data_crc32", "the data files' contents (CRC-32)"}};
  // A checkpoint from the Python API (Session.save_checkpoint) has weights, state and a step count
  // but no data position of ours: it continues from its step with this run's batches.
  const bool from_python = f.meta("run.seed") == nullptr;
  for (const auto& [key, what] : kMustMatch) {
    const std::string* was = f.meta(key);
    std::string is;
    for (const auto& kv : now)
      if (kv.first == key) is = kv.second;
    if (from_python) continue;
    if (!was)
      return fail(kExitUsage, "--resume " + path + ": the checkpoint does not record " + what + " ('" + key +
                                  "'): it is damaged or from another tool");
    if (*was != is)
      return fail(kExitUsage, "--resume " + path + ": " + what + " differs from the run that wrote it (" + key + " " +
                                  *was + ", now " + is + "); resuming would not continue the same run");
  }
  Status s = restore_checkpoint(rt, f);
  if (!s.ok()) return fail(kExitUsage, "--resume " + path + ": " + s.message());
  const int64_t steps = rt.steps_done();
  if (steps > sched->total_steps)
    return fail(kExitUsage, "--resume " + path + ": the checkpoint is at step " + std::to_string(steps) +
                                ", past this run's " + std::to_string(sched->total_steps) + " steps");
  sched->start_step = steps;
  sched->resumed_from = path;
  if (from_python && !args.quiet)
    std::printf("note: %s was written by the Python API and records no data position: continuing from its step %lld "
                "with this run's batches\n",
                path.c_str(), static_cast<long long>(steps));
  const std::string* first = f.meta("run.first_loss");
  const std::string* last = f.meta("run.last_loss");
  result->first_loss = first ? std::strtod(first->c_str(), nullptr) : 0;
  result->last_loss = last ? std::strtod(last->c_str(), nullptr) : 0;
  result->steps = steps;
  return kContinue;
}

// Keeps --checkpoint up to date. The space for the next checkpoint is reserved as soon as the
// previous one is committed (the first before training: a full disk fails the start, exit 2).
// A checkpoint that cannot be written mid-run is a warning: the previous one is intact, and
// stopping a long run over it would lose more than it saves.
class Checkpointer {
 public:
  Checkpointer(const TrainArgs& args, const Schedule& sched, const KillPoint& kill)
      : args_(args), sched_(sched), kill_(kill), last_(std::chrono::steady_clock::now()) {}

  bool enabled() const { return !args_.checkpoint.empty(); }

  int reserve_first(const Runtime& rt) {
    if (!enabled()) return kContinue;
    Status s = reserve(rt);
    if (!s.ok()) return fail(kExitUsage, "--checkpoint: " + s.message());
    return kContinue;
  }

  // After each step: a checkpoint when the interval says so.
  void after_step(const Runtime& rt, int64_t steps_done, const TrainResult& result, Progress& progress) {
    if (!enabled()) return;
    const auto now = std::chrono::steady_clock::now();
    const bool due = args_.checkpoint_every_steps > 0
                         ? steps_done % args_.checkpoint_every_steps == 0
                         : std::chrono::duration<double>(now - last_).count() >= args_.checkpoint_every_seconds;
    if (due) write(rt, result, progress, /*last=*/false);
  }

  // A checkpoint now; `last`: the end of the run or a signal, so no space is reserved for another.
  // Returns false on failure.
  bool write(const Runtime& rt, const TrainResult& result, Progress& progress, bool last) {
    if (!enabled()) return true;
    Status s = file_ ? Status::Ok() : reserve(rt);
    if (s.ok()) {
      ++writes_;
      if (kill_.checkpoint_write == writes_) file_->kill_after_bytes(std::max<size_t>(1, size_ / 2));
      s = write_checkpoint(*file_, rt, run_metadata(args_, sched_, result.first_loss, result.last_loss));
      file_.reset();
    }
    last_ = std::chrono::steady_clock::now();
    if (!s.ok()) {
      progress.end();
      std::fprintf(stderr, "edgetune-train: warning: checkpoint at step %lld not written (%s); %s\n",
                   static_cast<long long>(rt.steps_done()), s.message().c_str(),
                   written_at_ >= 0 ? ("the one of step " + std::to_string(written_at_) + " is intact").c_str()
                                    : "there is none yet");
      return false;
    }
    written_at_ = rt.steps_done();
    if (last) return true;
    s = reserve(rt);  // for the next one; a failure here is reported when that one is due
    if (!s.ok()) file_.reset();
    return true;
  }

  int64_t written_at() const { return written_at_; }

 private:
  Status reserve(const Runtime& rt) {
    ET_ASSIGN_OR_RETURN(size_, checkpoint_size(rt, run_metadata(args_, sched_, -1.23456789e-300, -1.23456789e-300)));
    ET_ASSIGN_OR_RETURN(file_, AtomicFile::create(args_.checkpoint));
    return file_->reserve(size_);
  }

  const TrainArgs& args_;
  const Schedule& sched_;
  KillPoint kill_;
  std::chrono::steady_clock::time_point last_;
  std::unique_ptr<AtomicFile> file_;
  size_t size_ = 0;
  int64_t writes_ = 0, written_at_ = -1;
};

// ---- train ------------------------------------------------------------------------------------------

void print_header(const TrainArgs& args, const LoadedPlan& plan, const Schedule& sched) {
  if (args.quiet) return;
  const Runtime& rt = *plan.rt;
  std::printf("edgetune-train %s: %s\n", EDGETUNE_VERSION, plan.source.c_str());
  if (!rt.model_label().empty()) std::printf("model: %s\n", rt.model_label().c_str());
  std::string files;
  for (const auto& d : sched.data) {
    files += (files.empty() ? "" : ", ") + d.path + " -> " + rt.inputs()[static_cast<size_t>(d.input)].name;
  }
  std::printf("data: %lld samples (%s)\n", static_cast<long long>(sched.rows), files.c_str());
  std::string lr_text;
  if (args.has_lr) {
    lr_text = ", lr " + fmt("%g", args.lr) + (sched.have_plan_lr ? " (plan: " + fmt("%g", sched.plan_lr) + ")" : "");
  } else if (sched.have_plan_lr) {
    lr_text = ", lr " + fmt("%g", sched.plan_lr);
  }
  // cpu: "N threads"; cuda: the GPU (its kernels use no cpu threads)
  const std::string where = rt.backend() == "cpu" ? std::to_string(rt.num_threads()) + " threads"
                                                  : rt.backend() + " on " + rt.device_description();
  std::printf("training: %lld steps of batch %lld (%lld per epoch, %s epochs), seed %llu%s, %s%s\n",
              static_cast<long long>(sched.total_steps), static_cast<long long>(sched.batch),
              static_cast<long long>(sched.steps_per_epoch),
              fmt(sched.total_steps % sched.steps_per_epoch ? "%.2f" : "%.0f",
                  static_cast<double>(sched.total_steps) / static_cast<double>(sched.steps_per_epoch))
                  .c_str(),
              static_cast<unsigned long long>(args.seed), args.shuffle ? "" : " (no shuffle)", where.c_str(),
              lr_text.c_str());
  if (sched.dropped) {
    std::printf("note: %lld samples are not a multiple of batch %lld: the last %lld of each epoch's %s are dropped\n",
                static_cast<long long>(sched.rows), static_cast<long long>(sched.batch),
                static_cast<long long>(sched.dropped),
                args.shuffle ? "shuffled order (different ones each epoch)" : "file order (never used)");
  }
  if (!sched.resumed_from.empty())
    std::printf("resumed: from %s at step %lld of %lld\n", sched.resumed_from.c_str(),
                static_cast<long long>(sched.start_step), static_cast<long long>(sched.total_steps));
  if (args.out.empty() && args.adapter_out.empty() && args.merged_out.empty())
    std::printf("note: no --out given: the tuned weights will not be saved\n");
  std::fflush(stdout);
}

// Steps start_step .. total_steps of B shuffled rows each; progress lines show the mean loss
// since the last; the checkpointer runs after every step.
int train(const TrainArgs& args, Runtime& rt, Schedule& sched, Checkpointer& checkpointer, const KillPoint& kill,
          TrainResult* result) {
  const int64_t rows = sched.rows, batch = sched.batch, total_steps = sched.total_steps;
  Progress progress(args.quiet);
  std::vector<int64_t> order;
  double interval_loss = 0;
  int64_t interval_steps = 0;
  using Clock = std::chrono::steady_clock;
  const auto t_start = Clock::now();
  auto t_interval = t_start;
  for (int64_t step = sched.start_step; step < total_steps; ++step) {
    const int64_t epoch = step / sched.steps_per_epoch;
    const int64_t in_epoch = step % sched.steps_per_epoch;
    if (order.empty()) {
      order.resize(static_cast<size_t>(rows));
      for (int64_t i = 0; i < rows; ++i) order[static_cast<size_t>(i)] = i;  // --no-shuffle: file order
    }
    // each epoch's order is a function of (seed, epoch) alone, so a resumed run recomputes its own
    if ((in_epoch == 0 || step == sched.start_step) && args.shuffle) order = epoch_order(rows, args.seed, epoch);
    const int64_t* idx = order.data() + in_epoch * batch;
    for (auto& d : sched.data) {
      gather_rows(d.array, idx, batch, d.staging.data());
      Status s = rt.set_input(d.input, d.staging.data(), d.staging.size());
      if (!s.ok()) {
        progress.end();
        return fail(kExitRuntime, "step " + std::to_string(step + 1) + ": " + s.to_string());
      }
    }
    Result<float> r = rt.step();
    const std::string where = "step " + std::to_string(step + 1) + " (epoch " + std::to_string(epoch + 1) + ")";
    if (!r.ok() || !std::isfinite(r.value())) {
      progress.end();
      std::string outputs;
      int n_outputs = 0;
      for (const std::string* o : {&args.out, &args.adapter_out, &args.merged_out})
        if (!o->empty()) outputs += (n_outputs++ ? ", " : "") + *o;
      std::string keep = outputs.empty() ? "" : "; " + outputs + (n_outputs > 1 ? " were" : " was") + " not written";
      if (!r.ok() && r.status().code() != StatusCode::kNumericError) {
        return fail(kExitRuntime, where + ": " + r.status().to_string() + keep);
      }
      std::string why = r.ok() ? "loss is " + fmt("%g", r.value()) : r.status().message();
      return fail(kExitNumeric, "training diverged at " + where + ": " + why +
                                    " (try a lower --lr, or check the data for NaN/Inf)" + keep);
    }
    const double loss = r.value();
    if (step == 0) result->first_loss = loss;
    result->last_loss = loss;
    result->steps = step + 1;
    interval_loss += loss;
    ++interval_steps;
    if (kill.after_step == step + 1) std::raise(SIGKILL);
    const int stop = g_stop_signal;
    const bool last = step + 1 == total_steps || stop != 0;
    if (!last) checkpointer.after_step(rt, step + 1, *result, progress);
    if (step == sched.start_step || (step + 1) % sched.log_every == 0 || last) {
      const auto now = Clock::now();
      const double ms = std::chrono::duration<double, std::milli>(now - t_interval).count() /
                        static_cast<double>(interval_steps);
      progress.line("step " + std::to_string(step + 1) + "/" + std::to_string(total_steps) + "  epoch " +
                    std::to_string(epoch + 1) + "  loss " + fmt_loss(interval_loss / static_cast<double>(interval_steps)) +
                    "  ms/step " + fmt_ms(ms));
      t_interval = now;
      interval_loss = 0;
      interval_steps = 0;
    }
    if (stop != 0) {
      result->stop_signal = stop;
      progress.end();
      std::string writing;
      if (checkpointer.enabled()) writing += args.checkpoint;
      for (const std::string* o : {&args.out, &args.adapter_out, &args.merged_out})
        if (!o->empty()) writing += (writing.empty() ? "" : " and ") + *o;
      std::fprintf(stderr, "edgetune-train: %s: stopped after step %lld of %lld%s\n", signal_name(stop),
                   static_cast<long long>(step + 1), static_cast<long long>(total_steps),
                   writing.empty() ? "" : ("; writing " + writing).c_str());
      break;
    }
  }
  progress.end();
  result->seconds = std::chrono::duration<double>(Clock::now() - t_start).count();
  return kContinue;
}

// ---- write: the tuned weights, the summary -----------------------------------------------------------

// Every weight under its state_dict name (the model's: an adapter's hidden export-only buffers
// are left out, as Session.save_weights does), with the run's metadata (losses as given). With
// `staging`, the entries' data are read from the runtime (tools/checkpoint.h read_entries: in place
// on cpu, copied back from the GPU on cuda); without, only names, shapes and sizes are filled.
Status weight_entries(const TrainArgs& args, const LoadedPlan& plan, const Schedule& sched, double first_loss,
                      double last_loss, std::vector<SafetensorsEntry>* entries, Metadata* meta, size_t* data_bytes,
                      std::unique_ptr<uint8_t[]>* staging = nullptr) {
  const Runtime& rt = *plan.rt;
  *data_bytes = 0;
  std::vector<const Binding*> bindings;
  for (const auto& b : rt.weights()) {
    if (is_hidden(rt.export_table(), b.name)) continue;  // export-only (PiSSA's initial factors): not the model's
    entries->push_back(entry_for(b));
    *data_bytes += entries->back().nbytes;
    bindings.push_back(&b);
  }
  *meta = {{"format", "pt"},  // what transformers' loaders look for
           {"producer", std::string("edgetune-train ") + EDGETUNE_VERSION},
           {"model", rt.model_label()},
           {"plan", plan.embedded.found ? "embedded" : args.plan},
           {"steps", std::to_string(sched.total_steps)},
           {"seed", std::to_string(args.seed)},
           {"first_loss", fmt("%.9g", first_loss)},
           {"final_loss", fmt("%.9g", last_loss)}};
  if (args.has_lr) meta->emplace_back("lr", fmt("%.9g", args.lr));
  return staging ? read_entries(rt, bindings, entries, staging) : Status::Ok();
}

// Opens the output's temp file and reserves the bytes the final write needs, before training:
// a full disk fails now (exit 2), not after the run. The loss values are not known yet, so the
// header is sized with the longest a "%.9g" value can print.
int reserve_output(const TrainArgs& args, const LoadedPlan& plan, const Schedule& sched,
                   std::unique_ptr<AtomicFile>* out) {
  if (args.out.empty()) return kContinue;
  std::vector<SafetensorsEntry> entries;
  Metadata meta;
  size_t data_bytes = 0;
  (void)weight_entries(args, plan, sched, -1.23456789e-300, -1.23456789e-300, &entries, &meta, &data_bytes);
  auto header = safetensors_header(entries, meta);
  if (!header.ok()) return fail(kExitRuntime, "writing the tuned weights: " + header.status().message());
  auto file = AtomicFile::create(args.out);
  if (!file.ok()) return fail(kExitUsage, "--out: " + file.status().message());
  Status s = file.value()->reserve(header.value().size() + data_bytes);
  if (!s.ok()) return fail(kExitUsage, "--out: " + s.message());
  *out = std::move(file.value());
  return kContinue;
}

// Every weight under its state_dict name, atomically, into the reserved file; *written_bytes:
// their data bytes.
int write_weights(const TrainArgs& args, const LoadedPlan& plan, const Schedule& sched, const TrainResult& result,
                  AtomicFile* file, const KillPoint& kill, size_t* written_bytes, size_t* written_tensors) {
  *written_bytes = 0;
  *written_tensors = 0;
  if (args.out.empty() || file == nullptr) return kContinue;
  if (kill.out_write) file->kill_after_bytes(1024);
  std::vector<SafetensorsEntry> entries;
  Metadata meta;
  std::unique_ptr<uint8_t[]> staging;  // cuda: the weights read back from the GPU before writing
  Status s = weight_entries(args, plan, sched, result.first_loss, result.last_loss, &entries, &meta, written_bytes,
                            &staging);
  if (s.ok()) s = write_safetensors(*file, entries, meta);
  if (!s.ok()) return fail(exit_code_for(s, kExitRuntime), "writing the tuned weights: " + s.message());
  *written_tensors = entries.size();
  return kContinue;
}

// ---- the adapters' exports: --adapter-out DIR, --merged-out FILE ------------------------------------

// Every weight (hidden export-only ones included: recipes read them) by name, for the recipes;
// `data`: with their bytes read from the runtime (in place on cpu), else names and shapes only.
Status all_weights(const Runtime& rt, bool data, std::vector<SafetensorsEntry>* entries,
                   std::unique_ptr<uint8_t[]>* staging) {
  std::vector<const Binding*> bindings;
  for (const auto& b : rt.weights()) {
    entries->push_back(entry_for(b));
    bindings.push_back(&b);
  }
  return data ? read_entries(rt, bindings, entries, staging) : Status::Ok();
}

// The merged weights' metadata: the run's, as --out's.
Metadata merged_metadata(const TrainArgs& args, const LoadedPlan& plan, const Schedule& sched, double first_loss,
                         double last_loss) {
  std::vector<SafetensorsEntry> unused;
  Metadata meta;
  size_t bytes = 0;
  (void)weight_entries(args, plan, sched, first_loss, last_loss, &unused, &meta, &bytes);
  meta.emplace_back("merged", "1");
  return meta;
}

// --merged-out's temp file created and its space reserved before training (as --out's).
int reserve_merged(const TrainArgs& args, const LoadedPlan& plan, const Schedule& sched,
                   std::unique_ptr<AtomicFile>* out) {
  if (args.merged_out.empty()) return kContinue;
  std::vector<SafetensorsEntry> weights;
  (void)all_weights(*plan.rt, false, &weights, nullptr);
  RecipeState state(weights);
  auto merged = merged_tensors(*plan.rt->export_table(), state, /*shapes_only=*/true);
  if (!merged.ok()) return fail(kExitRuntime, "--merged-out: " + merged.status().message());
  auto header = safetensors_header(merged.value().entries,
                                   merged_metadata(args, plan, sched, -1.23456789e-300, -1.23456789e-300));
  if (!header.ok()) return fail(kExitRuntime, "--merged-out: " + header.status().message());
  auto file = AtomicFile::create(args.merged_out);
  if (!file.ok()) return fail(kExitUsage, "--merged-out: " + file.status().message());
  Status s = file.value()->reserve(header.value().size() + merged.value().data_bytes());
  if (!s.ok()) return fail(kExitUsage, "--merged-out: " + s.message());
  *out = std::move(file.value());
  return kContinue;
}

struct ExportSummary {
  std::vector<std::string> adapter_files;
  size_t adapter_tensors = 0, adapter_bytes = 0, merged_tensors = 0, merged_bytes = 0;
};

// The adapter files and the merged weights from the trained weights (every recipe computed before
// the first file is written: a failure leaves the outputs as they were).
int write_exports(const TrainArgs& args, const LoadedPlan& plan, const Schedule& sched, const TrainResult& result,
                  AtomicFile* merged_file, ExportSummary* summary) {
  if (args.adapter_out.empty() && args.merged_out.empty()) return kContinue;
  const Runtime& rt = *plan.rt;
  const ExportTable& ex = *rt.export_table();
  std::vector<SafetensorsEntry> weights;
  std::unique_ptr<uint8_t[]> staging;  // cuda: the weights read back from the GPU
  Status s = all_weights(rt, true, &weights, &staging);
  if (!s.ok()) return fail(exit_code_for(s, kExitRuntime), "exporting the adapters: " + s.message());
  RecipeState state(weights);
  if (!args.adapter_out.empty()) {
    auto files = adapter_files(ex, state, /*shapes_only=*/false);
    if (files.ok()) s = write_adapter_files(args.adapter_out, files.value(), export_metadata(rt.steps_done()));
    else s = files.status();
    if (!s.ok()) return fail(exit_code_for(s, kExitRuntime), "--adapter-out " + args.adapter_out + ": " + s.message());
    for (const auto& f : files.value()) {
      summary->adapter_files.push_back(f.name);
      summary->adapter_tensors += f.tensors.entries.size();
      summary->adapter_bytes += f.json ? f.text.size() : f.tensors.data_bytes();
    }
  }
  if (!args.merged_out.empty() && merged_file != nullptr) {
    auto merged = merged_tensors(ex, state, /*shapes_only=*/false);
    if (merged.ok())
      s = write_safetensors(*merged_file, merged.value().entries,
                            merged_metadata(args, plan, sched, result.first_loss, result.last_loss));
    else s = merged.status();
    if (!s.ok()) return fail(exit_code_for(s, kExitRuntime), "--merged-out " + args.merged_out + ": " + s.message());
    summary->merged_tensors = merged.value().entries.size();
    summary->merged_bytes = merged.value().data_bytes();
  }
  return kContinue;
}

void print_summary(const TrainArgs& args, const Runtime& rt, const Schedule& sched, const TrainResult& result,
                   size_t written_bytes, size_t written_tensors, const ExportSummary& exported) {
  if (args.quiet) return;
  MemoryStats m = rt.memory();
  size_t data_bytes = 0;
  for (const auto& d : sched.data) data_bytes += d.array.nbytes;
  const int64_t steps = std::max<int64_t>(1, (result.steps > 0 ? result.steps : sched.total_steps) - sched.start_step);
  if (sched.start_step == sched.total_steps)
    std::printf("done: nothing left to train (the checkpoint is at step %lld of %lld)\n",
                static_cast<long long>(sched.start_step), static_cast<long long>(sched.total_steps));
  else std::printf("done: %lld steps in %.1f s, %s ms/step%s\n", static_cast<long long>(steps), result.seconds,
              fmt_ms(1000.0 * result.seconds / static_cast<double>(steps)).c_str(),
              sched.start_step ? (" (after resuming at step " + std::to_string(sched.start_step) + ")").c_str() : "");
  std::printf("loss: first %s, last %s\n", fmt_loss(result.first_loss).c_str(), fmt_loss(result.last_loss).c_str());
  std::printf("memory: runtime %s (persistent %s + arena %s + inputs %s); data %s\n",
              human_bytes(static_cast<double>(m.total())).c_str(),
              human_bytes(static_cast<double>(m.persistent_bytes)).c_str(),
              human_bytes(static_cast<double>(m.arena_bytes)).c_str(),
              human_bytes(static_cast<double>(m.input_bytes)).c_str(),
              human_bytes(static_cast<double>(data_bytes)).c_str());
  if (!args.out.empty()) {
    std::printf("wrote %s: %zu tensors, %s\n", args.out.c_str(), written_tensors,
                human_bytes(static_cast<double>(written_bytes)).c_str());
  }
  if (!args.adapter_out.empty()) {
    std::string names;
    for (const auto& f : exported.adapter_files) names += (names.empty() ? "" : ", ") + f;
    std::printf("wrote %s: %s (%zu tensors, %s)\n", args.adapter_out.c_str(), names.c_str(), exported.adapter_tensors,
                human_bytes(static_cast<double>(exported.adapter_bytes)).c_str());
  }
  if (!args.merged_out.empty()) {
    std::printf("wrote %s: %zu tensors (adapters merged), %s\n", args.merged_out.c_str(), exported.merged_tensors,
                human_bytes(static_cast<double>(exported.merged_bytes)).c_str());
  }
}

int run(int argc, char** argv) {
  // load
  LoadedPlan plan;
  int rc = find_embedded_plan(argc, argv, &plan.embedded);
  if (rc != kContinue) return rc;
  TrainArgs args;
  if ((rc = parse_command_line(argc, argv, plan.embedded.found, &args)) != kContinue) return rc;
  if ((rc = load_plan(args, argc > 0 ? argv[0] : nullptr, &plan)) != kContinue) return rc;
  if (args.info) return print_info(*plan.rt, plan.source);

  // bind
  int64_t batch = 0;
  Schedule sched;
  if ((rc = check_plan_inputs(&args, *plan.rt, &batch)) != kContinue) return rc;
  if ((rc = check_export_outputs(args, *plan.rt)) != kContinue) return rc;
  if ((rc = check_output_paths(args, *plan.rt, plan.embedded.found)) != kContinue) return rc;
  if ((rc = bind_data(args, *plan.rt, batch, &sched)) != kContinue) return rc;
  if (!args.checkpoint.empty() || !args.resume.empty()) fingerprint_data(&sched);
  TrainResult result;
  // before --lr: a rate given now overrides the checkpoint's
  if ((rc = resume_from_checkpoint(args, *plan.rt, &sched, &result)) != kContinue) return rc;
  if ((rc = set_learning_rate(args, *plan.rt, &sched)) != kContinue) return rc;
  std::unique_ptr<AtomicFile> out_file;  // removed again unless the run ends with a commit
  if ((rc = reserve_output(args, plan, sched, &out_file)) != kContinue) return rc;
  std::unique_ptr<AtomicFile> merged_file;
  if ((rc = reserve_merged(args, plan, sched, &merged_file)) != kContinue) return rc;
  const KillPoint kill = kill_point_from_env();
  Checkpointer checkpointer(args, sched, kill);
  if ((rc = checkpointer.reserve_first(*plan.rt)) != kContinue) return rc;

  // train
  print_header(args, plan, sched);
  install_stop_handlers();
  if ((rc = train(args, *plan.rt, sched, checkpointer, kill, &result)) != kContinue) return rc;

  // write: the checkpoint first, so a kill during the --out write resumes straight to writing it
  Progress quiet_progress(true);
  if (plan.rt->steps_done() > sched.start_step) checkpointer.write(*plan.rt, result, quiet_progress, /*last=*/true);
  size_t written_bytes = 0, written_tensors = 0;
  if ((rc = write_weights(args, plan, sched, result, out_file.get(), kill, &written_bytes, &written_tensors)) != kContinue)
    return rc;
  ExportSummary exported;
  if ((rc = write_exports(args, plan, sched, result, merged_file.get(), &exported)) != kContinue) return rc;
  print_summary(args, *plan.rt, sched, result, written_bytes, written_tensors, exported);
  return result.stop_signal ? 128 + result.stop_signal : kExitOk;
}

}  // namespace
}  // namespace tools
}  // namespace edgetune

int main(int argc, char** argv) {
  // The runtime and these tools report failures as Status values; the only exceptions left are
  // the standard library's (std::bad_alloc from a vector). None may escape as a crash.
  try {
    return edgetune::tools::run(argc, argv);
  } catch (const std::bad_alloc&) {
    return edgetune::tools::fail(edgetune::tools::kExitRuntime, "out of memory");
  } catch (const std::exception& e) {
    return edgetune::tools::fail(edgetune::tools::kExitRuntime, std::string("internal error: ") + e.what());
  }
}
