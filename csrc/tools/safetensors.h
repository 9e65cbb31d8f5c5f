// Writing and reading .safetensors files (huggingface/safetensors format), the interchange the
// tuned weights leave the device in (safetensors.torch.load_file(path) gives a dict ready for
// model.load_state_dict()) and the container of a checkpoint (tools/checkpoint.h).
//
// Layout: u64 little-endian N, then N bytes of JSON header
//   {"__metadata__": {"k": "v", ...}, "name": {"dtype": "F32", "shape": [2, 3],
//    "data_offsets": [begin, end]}, ...}
// padded with spaces so the data starts 8-byte aligned, then the tensors' raw little-endian
// bytes back to back, in entry order (offsets are relative to the start of the data).
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "core/status.h"
#include "core/tensor.h"
#include "tools/atomic_file.h"

namespace edgetune {
namespace tools {

struct SafetensorsEntry {
  std::string name;
  DType dtype = DType::f32;
  std::vector<int64_t> shape;
  const void* data = nullptr;
  size_t nbytes = 0;
};

using Metadata = std::vector<std::pair<std::string, std::string>>;  // written in this order

// "F32", "I64", "BOOL", ...
const char* safetensors_dtype(DType t);
std::string json_escape(const std::string& s);

// The 8-byte length prefix + padded JSON header for `entries` (checks names are unique and
// each nbytes equals the shape's size).
Result<std::string> safetensors_header(const std::vector<SafetensorsEntry>& entries, const Metadata& metadata);

// Writes the file atomically (atomic_file.h): on any failure `path` is left as it was.
Status write_safetensors(const std::string& path, const std::vector<SafetensorsEntry>& entries,
                         const Metadata& metadata);
// The same into a writer opened (and its space reserved) earlier; commits it.
Status write_safetensors(AtomicFile& file, const std::vector<SafetensorsEntry>& entries, const Metadata& metadata);

// ---- reading ------------------------------------------------------------------------------------
// The reader trusts nothing in the file (checkpoints come back from flash cards and other
// machines): the header must be at most kMaxHeaderBytes of strict JSON in the layout above, with
// known dtypes, non-negative shapes whose byte size equals its offsets' span, and offsets that
// tile the data section exactly (no overlap, no hole, nothing after it), as the format requires.
// Any violation is a kInvalidArgument naming the file, the tensor and the byte of the header.
struct SafetensorsTensor {
  std::string name;
  DType dtype = DType::f32;
  std::vector<int64_t> shape;
  const uint8_t* data = nullptr;  // into SafetensorsFile::bytes (no alignment promised: memcpy it)
  size_t nbytes = 0;
};

struct SafetensorsFile {
  std::vector<uint8_t> bytes;  // the whole file
  std::vector<SafetensorsTensor> tensors;  // in header order
  Metadata metadata;                       // __metadata__, in header order
  const SafetensorsTensor* find(const std::string& name) const;
  const std::string* meta(const std::string& key) const;
};

constexpr size_t kMaxHeaderBytes = 100u << 20;  // the safetensors library's own limit

// `where` names the source in messages. Takes ownership of `bytes`.
Result<SafetensorsFile> parse_safetensors(std::vector<uint8_t> bytes, const std::string& where);
// A regular file (not a FIFO or device: see npy.h), its size bounded by fstat before reading.
Result<SafetensorsFile> read_safetensors(const std::string& path);

}  // namespace tools
}  // namespace edgetune
