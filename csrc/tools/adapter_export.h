// Adapter export without Python: the files Session.save_adapter and Session.save_weights(merged=True)
// write, computed from a plan's export table (core/export_table.h) and the trained weights, for
// edgetune-train --adapter-out DIR and --merged-out FILE.
//
// Every exported tensor is a recipe, a postfix program over the weights (their state_dict names,
// adapter parameters and hidden export-only buffers included). The language and its reference
// evaluator are compiler/adapters/export.py (`evaluate`); this one computes the same in float64:
//
//     step            pops            pushes
//     w NAME          -               the weight NAME (any dtype, as float64)
//     t               a               a with its axes reversed (a^T)
//     mm              a, b            a.reshape(a.shape[0], -1) @ b.reshape(b.shape[0], -1)
//     reshape INTS    a               a.reshape(INTS) (one -1 allowed)
//     scale F         a               a * F
//     add/sub/mul/div a, b            a (op) b, numpy broadcasting
//     rownorm         a               sqrt(sum of a^2 over every dim but 0), shape [a.shape[0]]
//     cat [axis, n]   n tensors       their concatenation along axis (negative: from the end)
//     rows INTS       base, rows      base with base[INTS[i]] = rows[i] along axis 0 (rows
//                                     broadcast to [len(INTS), *base.shape[1:]]; later wins)
//
// A recipe that is not well formed (an unknown op, too few operands, shapes that do not fit, an
// index out of range, not exactly one result) is a kInvalidPlan Status naming the exported
// tensor, the step and its operands' shapes: never a crash. A result is stored as float32, or in
// the dtype of the weight it replaces (numpy's astype: nearest for floats, toward zero for
// integers; a value an integer dtype cannot hold is an error).
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "core/export_table.h"
#include "core/status.h"
#include "core/tensor.h"
#include "tools/safetensors.h"

namespace edgetune {
namespace tools {

// A dense row-major float64 array: a recipe's operands and result.
struct F64Array {
  std::vector<int64_t> shape;
  std::vector<double> data;  // empty in a shapes-only evaluation
  int64_t numel() const;
};

// The named weights a recipe's `w NAME` reads, each in its own dtype (a SafetensorsEntry: name,
// dtype, shape, data, nbytes). Entries' data may be null for shapes-only evaluation. Keeps a
// reference to `entries`, which must outlive it.
class RecipeState {
 public:
  explicit RecipeState(const std::vector<SafetensorsEntry>& entries);
  const SafetensorsEntry* find(const std::string& name) const;
  const std::vector<SafetensorsEntry>& entries() const { return entries_; }

 private:
  const std::vector<SafetensorsEntry>& entries_;
  std::unordered_map<std::string, size_t> index_;
};

// Runs one recipe; `where` names it in messages ("adapter tensor 'x.lora_A.weight'").
// `shapes_only`: checks the recipe and computes the result's shape without touching any data.
Result<F64Array> evaluate_recipe(const std::vector<ExportStep>& steps, const RecipeState& state,
                                 const std::string& where, bool shapes_only = false);

// `a` stored as `dtype` into `out` (numel * dtype_size bytes).
Status store_as(const F64Array& a, DType dtype, uint8_t* out, const std::string& where);

// The tensors of one exported safetensors file, in file order. Entries point into `storage`
// (computed tensors) or at the weights themselves (unchanged ones in the merged file); in a
// shapes-only export they have no data, only names, dtypes, shapes and sizes.
struct ExportedTensors {
  std::vector<SafetensorsEntry> entries;
  std::vector<std::unique_ptr<uint8_t[]>> storage;
  size_t data_bytes() const;
};

// The exported tensors of `recipes` (in order). like_state: each is stored in the dtype of the
// weight of the same name when there is one (edgetune's own file), else float32 (PEFT's file).
// `what` prefixes each tensor's name in messages ("adapter tensor").
Result<ExportedTensors> export_tensors(const std::vector<ExportTensor>& recipes, const RecipeState& state,
                                       bool like_state, const std::string& what, bool shapes_only);

// "; "-joined reasons some adapter cannot be merged (empty: all can).
std::string unmergeable_reasons(const ExportTable& table);

// The base model's weights with the adapters folded in (Session.state_dict(merged=True)): every
// weight but the hidden and drop_when_merged ones, in the runtime's order, with each `merged`
// recipe's result in place of its weight (stored in that weight's dtype; a merged name that is
// not a kept weight is appended, float32). kInvalidArgument when table.unmergeable is not empty.
Result<ExportedTensors> merged_tensors(const ExportTable& table, const RecipeState& state, bool shapes_only);

// The weights a user's state_dict holds (Session.state_dict()): all but the hidden ones.
bool is_hidden(const ExportTable* table, const std::string& name);

// One file of an adapter directory: JSON text, or tensors for a safetensors file.
struct AdapterFile {
  std::string name;
  bool json = false;
  std::string text;         // json: the file's bytes
  ExportedTensors tensors;  // safetensors
};

// What Session.save_adapter writes (compiler/adapters/export.py adapter_files), in this order:
// adapter_config.json + adapter_model.safetensors (PEFT's files) when the table has a PEFT config,
// then edgetune_adapter.json + edgetune_adapter.safetensors. The JSON texts are the plan's, verbatim.
Result<std::vector<AdapterFile>> adapter_files(const ExportTable& table, const RecipeState& state, bool shapes_only);

// The metadata of an exported safetensors file, as the Python writer's: format "pt", producer
// "edgetune", steps N.
Metadata export_metadata(int64_t steps);

// Writes each file into `dir` (which must exist) atomically (tools/atomic_file.h). All tensors
// were computed before the first file is written, so a failed recipe leaves `dir` as it was.
Status write_adapter_files(const std::string& dir, const std::vector<AdapterFile>& files, const Metadata& metadata);

// `dir` and its missing parents created (mode 0777 & ~umask), like os.makedirs(exist_ok=True);
// an existing non-directory at `dir` is an error.
Status make_directories(const std::string& dir);

// dir + "/" + name (no doubled slash).
std::string join_path(const std::string& dir, const std::string& name);

}  // namespace tools
}  // namespace edgetune
