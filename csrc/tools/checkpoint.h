// Checkpoints: everything a killed training run needs to continue exactly where it stopped.
//
// A checkpoint is a .safetensors file (tools/safetensors.h), so any safetensors reader can open
// it, and it is the same file whether edgetune-train or the Python Session wrote it
// (runtime/checkpoint.py writes and reads this layout too; tests check each reads the other's):
//
//   tensors   "weights/<state_dict name>"   every weight (params and buffers; tied names each)
//             "state/<name>"                every optimizer state: optim.lr, optim.step, the
//                                           moments optim.<slot>.<param>, rng.counter (dropout)
//   metadata  format          "edgetune.checkpoint"
//             format_version  "1"
//             plan_sha256     SHA-256 of the plan file's bytes (core/sha256.h): a checkpoint
//                             resumes only the plan that wrote it
//             model           the plan's label (for people)
//             steps           training steps taken
//             data_crc32      CRC-32 (zlib.crc32) of the data section, all tensors in file
//                             order: a damaged file is refused instead of resumed
//             <caller keys>   the writer's own position: edgetune-train stores run.seed,
//                             run.batch, run.shuffle, run.rows, run.data_crc32, run.first_loss;
//                             a Python caller its own metadata under user.*
//
// Writes are atomic (tools/atomic_file.h): the previous checkpoint stays whole until the new
// one is complete, fsynced and renamed over it. Restoring is all or nothing: the file is read
// and every tensor checked (names, dtypes, shapes, finite values, frozen weights unchanged)
// before the first byte of the runtime's state is written.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "core/runtime.h"
#include "core/status.h"
#include "tools/atomic_file.h"
#include "tools/safetensors.h"

namespace edgetune {
namespace tools {

constexpr const char* kCheckpointFormat = "edgetune.checkpoint";
constexpr const char* kCheckpointFormatVersion = "1";

// Points entries[i].data at the bytes of bindings[i] (entries[i].nbytes must be its size): in place
// where the host can read the runtime's memory (cpu: no copy), otherwise read from the device
// (Runtime::read) into `staging`, one host buffer for all of them, allocated here (cuda). Everything
// is read before anything is written, so a file is never written from half-read device memory.
Status read_entries(const Runtime& rt, const std::vector<const Binding*>& bindings,
                    std::vector<SafetensorsEntry>* entries, std::unique_ptr<uint8_t[]>* staging);

// The header + data bytes a checkpoint of `rt` takes with metadata values no longer than
// `extra`'s (used to reserve the space before training).
Result<size_t> checkpoint_size(const Runtime& rt, const Metadata& extra);

// Writes a checkpoint of `rt` (its current weights, state and step count) into `file`, which
// the caller created (and may have reserved), and commits it.
Status write_checkpoint(AtomicFile& file, const Runtime& rt, const Metadata& extra);
Status write_checkpoint(const std::string& path, const Runtime& rt, const Metadata& extra);

// Reads and checks a checkpoint file on its own: safetensors layout, format, version, data CRC.
Result<SafetensorsFile> read_checkpoint(const std::string& path);

// Puts a checkpoint read by read_checkpoint into `rt`, or changes nothing and says why: another
// plan's checkpoint, a missing or extra tensor, a wrong dtype or shape, a non-finite value, a
// frozen (constant-folded) weight whose value differs. An adapter's hidden export-only buffer
// (core/export_table.h `hidden`: PiSSA's initial factors, never trained) may be missing — the
// Python Session's checkpoints leave them out, as its state_dict does — and keeps its value.
Status restore_checkpoint(Runtime& rt, const SafetensorsFile& checkpoint);

}  // namespace tools
}  // namespace edgetune
