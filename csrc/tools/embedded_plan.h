// A plan carried inside the edgetune-train executable (`edgetune compile --emit-binary`).
//
// The emitted binary is the plain edgetune-train executable with a trailer appended:
//   [executable bytes][plan bytes][u64 little-endian plan size][8 bytes "ETPLEMB1"]
// Appending keeps the ELF valid (the loader ignores bytes past the last segment), needs no
// linker or objcopy on the host, and works the same for every target architecture. The Python
// writer is runtime/binary.py; the two must agree on this layout.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "core/status.h"

namespace edgetune {
namespace tools {

constexpr char kEmbedMagic[8] = {'E', 'T', 'P', 'L', 'E', 'M', 'B', '1'};
constexpr size_t kTrailerSize = 16;

// Reads the last 16 bytes of a file of `file_size` bytes. Returns false when they are not a
// trailer; true with the plan's offset and size when they are; an error when the magic is there
// but the size cannot be right (a damaged binary).
Result<bool> parse_trailer(const uint8_t* tail, uint64_t file_size, uint64_t* plan_offset, uint64_t* plan_size,
                           const std::string& where);

struct EmbeddedPlan {
  bool found = false;
  std::string source;  // the file it came from
  std::vector<uint8_t> bytes;
};

// Looks for a plan appended to file `path`.
Result<EmbeddedPlan> read_embedded_plan(const std::string& path);

// This process's executable: /proc/self/exe where it exists (Linux), else argv[0] (searched on
// PATH when it has no slash). Empty when neither resolves.
std::string self_executable(const char* argv0);

}  // namespace tools
}  // namespace edgetune
