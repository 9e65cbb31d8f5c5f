// ExportTable: what a plan's adapters export (Plan.export in csrc/schema/plan.fbs; written by
// compiler/plan_file.py from compiler/adapters/export.py's ExportTable). The loader copies it out
// of the plan as plain data, unchecked beyond the FlatBuffers verifier: the recipes are run (and
// every mistake in them reported) by csrc/tools/adapter_export.h, only when an export is asked for.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace edgetune {

// One postfix step: `w NAME` pushes a weight; the others pop operands and push a result.
struct ExportStep {
  std::string op;
  std::string name;           // w: a weight's state_dict name
  std::vector<int64_t> ints;  // reshape: shape; cat: [axis, n]; rows: row indices
  double f = 0;               // scale: the factor
};

struct ExportTensor {
  std::string name;  // the key in the exported file (merged: the base weight's name)
  std::vector<ExportStep> steps;
};

struct ExportTable {
  bool has_peft = false;    // the program has a Hugging Face PEFT-format adapter
  std::string peft_config;  // adapter_config.json, verbatim
  std::vector<ExportTensor> peft_tensors;
  std::string own_config;   // edgetune_adapter.json, verbatim
  std::vector<ExportTensor> own_tensors;
  std::vector<ExportTensor> merged;
  std::vector<std::string> drop_when_merged;
  std::vector<std::string> hidden;
  std::vector<std::string> unmergeable;
};

}  // namespace edgetune
