// Command-line parsing for edgetune-train (see cli_args.h).
#include "tools/cli_args.h"

#include <cctype>
#include <cerrno>
#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <limits>

namespace edgetune {
namespace tools {

namespace {

Status bad_value(const std::string& flag, const std::string& want, const std::string& got) {
  return invalid_argument(flag + ": expected " + want + ", got '" + got + "'");
}

Status parse_int(const std::string& flag, const std::string& text, int64_t min, int64_t max, int64_t* out) {
  std::string want = min == 0 ? "a non-negative integer" : "a positive integer";
  // strtoll alone would accept " 5", "+5" and "-5" (and wrap huge values): insist on digits.
  if (text.empty() || !std::isdigit(static_cast<unsigned char>(text[0]))) return bad_value(flag, want, text);
  errno = 0;
  char* end = nullptr;
  long long v = std::strtoll(text.c_str(), &end, 10);
  if (*end != '\0' || v < min) return bad_value(flag, want, text);
  if (errno == ERANGE || v > max) {
    return invalid_argument(flag + ": " + text + " is more than the maximum of " + std::to_string(max));
  }
  if (errno != 0) return bad_value(flag, want, text);
  *out = v;
  return Status::Ok();
}

Status parse_u64(const std::string& flag, const std::string& text, uint64_t* out) {
  if (text.empty() || !std::isdigit(static_cast<unsigned char>(text[0]))) {
    return bad_value(flag, "an integer from 0 to 2^64-1", text);
  }
  errno = 0;
  char* end = nullptr;
  unsigned long long v = std::strtoull(text.c_str(), &end, 10);
  if (errno != 0 || end == text.c_str() || *end != '\0') return bad_value(flag, "an integer from 0 to 2^64-1", text);
  *out = v;
  return Status::Ok();
}

Status parse_positive_float(const std::string& flag, const std::string& text, double* out) {
  errno = 0;
  char* end = nullptr;
  double v = std::strtod(text.c_str(), &end);
  if (text.empty() || errno != 0 || end == text.c_str() || *end != '\0' || !std::isfinite(v) || v <= 0) {
    return bad_value(flag, "a positive number", text);
  }
  *out = v;
  return Status::Ok();
}

// "500" (steps) or "30s", "10m", "2h" (seconds of training time).
Status parse_interval(const std::string& flag, const std::string& text, int64_t* steps, double* seconds) {
  const std::string want = "a step count (500) or a time (30s, 10m, 2h)";
  if (text.empty() || !std::isdigit(static_cast<unsigned char>(text[0]))) return bad_value(flag, want, text);
  const char unit = text.back();
  if (std::isdigit(static_cast<unsigned char>(unit))) return parse_int(flag, text, 1, std::numeric_limits<int64_t>::max(), steps);
  const double scale = unit == 's' ? 1 : unit == 'm' ? 60 : unit == 'h' ? 3600 : 0;
  if (scale == 0) return bad_value(flag, want, text);
  errno = 0;
  char* end = nullptr;
  const std::string number = text.substr(0, text.size() - 1);
  const double v = std::strtod(number.c_str(), &end);
  if (errno != 0 || *end != '\0' || !std::isfinite(v) || v <= 0 || v * scale > 1e9) return bad_value(flag, want, text);
  *seconds = v * scale;
  return Status::Ok();
}

}  // namespace

Result<TrainArgs> parse_args(int argc, const char* const* argv, bool embedded) {
  TrainArgs a;
  std::vector<std::string> positional;
  bool seen_epochs = false, seen_steps = false, seen_batch = false, seen_seed = false, seen_threads = false,
       seen_out = false, seen_log = false, seen_checkpoint = false, seen_every = false, seen_resume = false,
       seen_backend = false, seen_adapter_out = false, seen_merged_out = false;
  bool options_done = false;
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    if (options_done || arg.size() < 2 || arg[0] != '-') {
      positional.push_back(arg);
      continue;
    }
    if (arg == "--") {
      options_done = true;
      continue;
    }
    // --flag=value and --flag value are both accepted.
    std::string flag = arg, value;
    bool inline_value = false;
    auto eq = arg.find('=');
    if (arg.rfind("--", 0) == 0 && eq != std::string::npos) {
      flag = arg.substr(0, eq);
      value = arg.substr(eq + 1);
      inline_value = true;
    }
    auto is = [&](const char* name) { return flag == name; };
    const bool is_switch = is("--quiet") || is("-q") || is("--info") || is("--help") || is("-h") ||
                           is("--version") || is("--no-shuffle");
    if (is_switch) {
      if (inline_value) return invalid_argument(flag + " takes no value");
      if (is("--quiet") || is("-q")) a.quiet = true;
      if (is("--info")) a.info = true;
      if (is("--help") || is("-h")) a.help = true;
      if (is("--version")) a.version = true;
      if (is("--no-shuffle")) a.shuffle = false;
      continue;
    }
    static const char* const kValued[] = {"--inputs", "--targets", "--epochs", "--steps",  "--batch",
                                          "--seed",   "--threads", "--lr",     "--out",    "--log-every",
                                          "--checkpoint", "--checkpoint-every", "--resume", "--backend",
                                          "--adapter-out", "--merged-out"};
    bool known = false;
    for (const char* k : kValued) known = known || is(k);
    if (!known) return invalid_argument("unknown option '" + flag + "' (see --help)");
    if (!inline_value) {
      if (i + 1 >= argc) return invalid_argument(flag + " needs a value");
      value = argv[++i];
    }
    auto once = [&](bool* seen) -> Status {
      if (*seen) return invalid_argument(flag + " given twice");
      *seen = true;
      return Status::Ok();
    };
    if (is("--backend")) {
      ET_RETURN_IF_ERROR(once(&seen_backend));
      // the names a runtime may have; whether this build and machine have it is the loader's answer
      if (value != "cpu" && value != "cuda") return invalid_argument("--backend: expected cpu or cuda, got '" + value + "'");
      a.backend = value;
    } else if (is("--inputs")) {
      // a comma-separated list: one file (or NAME=FILE) per model input
      if (value.empty()) return invalid_argument("--inputs: empty file name");
      size_t start = 0;
      while (true) {
        const size_t comma = value.find(',', start);
        std::string item = value.substr(start, comma == std::string::npos ? std::string::npos : comma - start);
        if (item.empty()) {
          return invalid_argument("--inputs: empty file name in '" + value +
                                  "' (a list is FILE,FILE or NAME=FILE,NAME=FILE, with no empty entries)");
        }
        a.inputs.push_back(std::move(item));
        if (comma == std::string::npos) break;
        start = comma + 1;
      }
    } else if (is("--targets")) {
      if (value.empty()) return invalid_argument("--targets: empty file name");
      a.targets.push_back(value);
    } else if (is("--epochs")) {
      ET_RETURN_IF_ERROR(once(&seen_epochs));
      ET_RETURN_IF_ERROR(parse_int(flag, value, 1, std::numeric_limits<int32_t>::max(), &a.epochs));
    } else if (is("--steps")) {
      ET_RETURN_IF_ERROR(once(&seen_steps));
      ET_RETURN_IF_ERROR(parse_int(flag, value, 1, std::numeric_limits<int64_t>::max() / 2, &a.steps));
    } else if (is("--batch")) {
      ET_RETURN_IF_ERROR(once(&seen_batch));
      ET_RETURN_IF_ERROR(parse_int(flag, value, 1, std::numeric_limits<int32_t>::max(), &a.batch));
    } else if (is("--seed")) {
      ET_RETURN_IF_ERROR(once(&seen_seed));
      ET_RETURN_IF_ERROR(parse_u64(flag, value, &a.seed));
    } else if (is("--threads")) {
      ET_RETURN_IF_ERROR(once(&seen_threads));
      int64_t t = 0;
      ET_RETURN_IF_ERROR(parse_int(flag, value, 0, 4096, &t));
      a.threads = static_cast<int>(t);
    } else if (is("--lr")) {
      if (a.has_lr) return invalid_argument("--lr given twice");
      ET_RETURN_IF_ERROR(parse_positive_float(flag, value, &a.lr));
      a.has_lr = true;
    } else if (is("--out") && !value.empty() && value.back() == '/') {
      // `--out adapter/`: a directory is where the adapter goes (the same as --adapter-out)
      ET_RETURN_IF_ERROR(once(&seen_adapter_out));
      a.adapter_out = value;
    } else if (is("--out")) {
      ET_RETURN_IF_ERROR(once(&seen_out));
      if (value.empty()) return invalid_argument("--out: empty file name");
      a.out = value;
    } else if (is("--adapter-out")) {
      ET_RETURN_IF_ERROR(once(&seen_adapter_out));
      if (value.empty()) return invalid_argument("--adapter-out: empty directory name");
      a.adapter_out = value;
    } else if (is("--merged-out")) {
      ET_RETURN_IF_ERROR(once(&seen_merged_out));
      if (value.empty()) return invalid_argument("--merged-out: empty file name");
      a.merged_out = value;
    } else if (is("--checkpoint")) {
      ET_RETURN_IF_ERROR(once(&seen_checkpoint));
      if (value.empty()) return invalid_argument("--checkpoint: empty file name");
      a.checkpoint = value;
    } else if (is("--checkpoint-every")) {
      ET_RETURN_IF_ERROR(once(&seen_every));
      ET_RETURN_IF_ERROR(parse_interval(flag, value, &a.checkpoint_every_steps, &a.checkpoint_every_seconds));
    } else if (is("--resume")) {
      ET_RETURN_IF_ERROR(once(&seen_resume));
      if (value.empty()) return invalid_argument("--resume: empty file name");
      a.resume = value;
    } else if (is("--log-every")) {
      ET_RETURN_IF_ERROR(once(&seen_log));
      ET_RETURN_IF_ERROR(parse_int(flag, value, 1, std::numeric_limits<int64_t>::max(), &a.log_every));
    }
  }
  if (a.help || a.version) return a;
  if (embedded) {
    if (!positional.empty()) {
      return invalid_argument("this binary has its plan built in and takes no PLAN argument (got '" + positional[0] +
                              "')");
    }
  } else {
    if (positional.empty()) return invalid_argument("missing the PLAN.etp argument (see --help)");
    if (positional.size() > 1) {
      return invalid_argument("unexpected argument '" + positional[1] + "' (one PLAN.etp only; data files go after "
                              "--inputs / --targets)");
    }
    a.plan = positional[0];
  }
  if (a.info) return a;
  if (seen_epochs && seen_steps) return invalid_argument("give --epochs or --steps, not both");
  if (seen_every && a.checkpoint.empty()) return invalid_argument("--checkpoint-every needs --checkpoint PATH");
  if (a.resume == "auto" && a.checkpoint.empty())
    return invalid_argument("--resume auto resumes from --checkpoint PATH when it exists: give --checkpoint too");
  if (!a.checkpoint.empty() && !seen_every) a.checkpoint_every_seconds = 600;
  if (a.inputs.empty()) {
    return invalid_argument("missing --inputs FILE.npy[,FILE.npy...] (the model inputs, samples on the first axis)");
  }
  return a;
}

namespace {

std::string join(const std::vector<std::string>& items, const char* quote = "") {
  std::string s;
  for (size_t i = 0; i < items.size(); ++i) s += (i ? ", " : "") + std::string(quote) + items[i] + quote;
  return s;
}

bool contains(const std::vector<std::string>& v, const std::string& x) {
  return std::find(v.begin(), v.end(), x) != v.end();
}

}  // namespace

Result<std::vector<std::string>> order_inputs(const TrainArgs& args, const std::vector<std::string>& model_inputs,
                                              const std::vector<std::string>& targets) {
  const size_t n = model_inputs.size();
  // which items are NAME=FILE
  std::vector<std::string> names(args.inputs.size()), files(args.inputs.size());
  std::vector<bool> is_named(args.inputs.size(), false);
  int named = 0;
  for (size_t i = 0; i < args.inputs.size(); ++i) {
    const std::string& item = args.inputs[i];
    const size_t eq = item.find('=');
    files[i] = item;
    if (eq == std::string::npos) continue;
    const std::string name = item.substr(0, eq);
    const bool plan_name = contains(model_inputs, name) || contains(targets, name);
    if (!plan_name && name.find_first_of("/.") != std::string::npos) continue;  // a path with '=' in it
    names[i] = name;
    files[i] = item.substr(eq + 1);
    is_named[i] = true;
    ++named;
  }
  if (named == 0) {
    if (args.inputs.size() == n) return args.inputs;
    std::string message = "the plan takes " + std::to_string(n) + " model input" + (n == 1 ? "" : "s") + " (" +
                          join(model_inputs) + "), got " + std::to_string(args.inputs.size()) + " --inputs file" +
                          (args.inputs.size() == 1 ? "" : "s") + " (" + join(args.inputs) + ")";
    if (n > 1) {
      std::string by_name;
      for (size_t k = 0; k < n; ++k) by_name += (k ? "," : "") + model_inputs[k] + "=FILE";
      message += "; give one file per input, in that order (--inputs FILE,FILE...) or by name (--inputs " + by_name + ")";
    }
    return invalid_argument(message);
  }
  if (named != static_cast<int>(args.inputs.size())) {
    size_t plain = 0, with_name = 0;
    for (size_t i = 0; i < names.size(); ++i) (is_named[i] ? with_name : plain) = i;
    return invalid_argument("--inputs: name every file (NAME=FILE) or none: '" + args.inputs[with_name] +
                            "' is named, '" + args.inputs[plain] + "' is not (the plan's model inputs: " +
                            join(model_inputs) + ")");
  }
  std::vector<std::string> out(n);
  for (size_t i = 0; i < names.size(); ++i) {
    const std::string& name = names[i];
    const std::string& file = files[i];
    if (name.empty()) return invalid_argument("--inputs " + args.inputs[i] + ": empty input name before '='");
    if (file.empty()) return invalid_argument("--inputs " + args.inputs[i] + ": no file after '" + name + "='");
    auto it = std::find(model_inputs.begin(), model_inputs.end(), name);
    if (it == model_inputs.end()) {
      if (contains(targets, name)) {
        return invalid_argument("--inputs " + args.inputs[i] + ": '" + name + "' is the plan's target, not a model "
                                "input; give it with --targets " + file);
      }
      return invalid_argument("--inputs " + args.inputs[i] + ": the plan has no model input '" + name +
                              "' (its model inputs: " + join(model_inputs) + "; a file whose name holds '=' is "
                              "given as ./" + args.inputs[i] + ")");
    }
    std::string& slot = out[static_cast<size_t>(it - model_inputs.begin())];
    if (!slot.empty()) {
      return invalid_argument("--inputs: model input '" + name + "' is given twice (" + slot + " and " + file +
                              "); name each one once");
    }
    slot = file;
  }
  std::vector<std::string> missing;
  for (size_t k = 0; k < n; ++k) {
    if (out[k].empty()) missing.push_back(model_inputs[k]);
  }
  if (!missing.empty()) {
    return invalid_argument("--inputs: no file for model input" + std::string(missing.size() == 1 ? " " : "s ") +
                            join(missing, "'") + " (name every model input once: " + join(model_inputs) + ")");
  }
  return out;
}

std::string usage_text(bool embedded) {
  std::string plan = embedded ? "" : " PLAN.etp";
  std::string s;
  s += "usage: edgetune-train" + plan + " --inputs X.npy[,X2.npy...] --targets Y.npy\n";
  s += "                     [--epochs N | --steps N] [--batch B] [--seed S] [--threads T] [--lr LR]\n";
  s += "                     [--backend cpu|cuda]\n";
  s += "                     [--out tuned.safetensors] [--adapter-out DIR] [--merged-out merged.safetensors]\n";
  s += "                     [--log-every K] [--no-shuffle] [--quiet]\n";
  s += "                     [--checkpoint CKPT [--checkpoint-every N|30s|10m]] [--resume CKPT|auto]\n";
  s += "       edgetune-train" + plan + " --info [--backend cpu|cuda]\n\n";
  if (embedded) {
    s += "Trains the model whose compiled plan is built into this binary.\n\n";
  } else {
    s += "Trains a model compiled by edgetune into PLAN.etp, with no Python on the device.\n\n";
  }
  s += "  --inputs FILES   .npy (numpy.save) model inputs, samples on the first axis: one file per\n"
       "                   model input, comma-separated in the plan's input order (ids.npy,mask.npy)\n"
       "                   or named in any order (input_ids=ids.npy,attention_mask=mask.npy; the\n"
       "                   names --info lists); every input's file must have the same sample count\n"
       "  --targets FILE   .npy targets, same number of samples\n"
       "  --epochs N       passes over the data (default 1); the last partial batch is dropped\n"
       "  --steps N        train exactly N steps instead (epochs repeat as needed)\n"
       "  --batch B        must equal the batch size the plan was compiled for (a check)\n"
       "  --seed S         shuffle seed (default 0); the same seed gives the same batches anywhere\n"
       "  --no-shuffle     visit samples in file order\n"
       "  --threads T      worker threads (default: all cores)\n"
       "  --lr LR          learning rate instead of the one compiled into the plan\n"
       "  --backend B      cpu (default) or cuda: train on the GPU (a build with the CUDA backend);\n"
       "                   the same plan, checkpoints and --out on either\n"
       "  --out FILE       write the tuned weights (all of them, state_dict names) as safetensors;\n"
       "                   --out DIR/ (a trailing slash) is --adapter-out DIR\n"
       "  --adapter-out DIR  write the trained adapter (a plan with LoRA, DoRA, ...) into DIR as\n"
       "                   Session.save_adapter does: adapter_config.json + adapter_model.safetensors\n"
       "                   (Hugging Face PEFT: PeftModel.from_pretrained(model, DIR)) when the adapter\n"
       "                   has a PEFT form, and edgetune_adapter.json + edgetune_adapter.safetensors\n"
       "  --merged-out FILE  the base model's weights with the adapters merged in, as safetensors\n"
       "                   (Session.state_dict(merged=True)): load_state_dict into the original model\n"
       "  --log-every K    a progress line every K steps (default: about 20 lines per run)\n"
       "  --checkpoint F   keep a checkpoint in F (weights, optimizer state, data position),\n"
       "                   replaced atomically; written at the end and when a signal stops the run\n"
       "  --checkpoint-every N|Ts  every N steps or T of training time (30s, 10m, 2h; default 10m)\n"
       "  --resume F|auto  continue the run checkpoint F holds (same plan, data, batch, seed); the\n"
       "                   result is bit-identical to a run never stopped. auto: --checkpoint's file\n"
       "                   if it exists, else start fresh (one command line for every restart)\n"
       "  --quiet          print nothing but errors\n"
       "  --info           print the plan's inputs, outputs, weights, memory and backend, then exit\n\n"
       "exit status: 0 ok, 1 plan or runtime failure, 2 usage or input error, 3 loss or update became\n"
       "NaN/Inf, 128+N stopped by signal N after finishing a step (checkpoint and outputs written)\n";
  return s;
}

}  // namespace tools
}  // namespace edgetune
