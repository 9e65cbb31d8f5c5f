// libFuzzer harness: safetensors. See csrc/fuzz/README.md.
//
// The runtime only *writes* safetensors (tools/safetensors.h, edgetune-train's output); the one
// safetensors reader in csrc/ is the test-local one in tests/test_reference_util.h (JSON parser +
// Safetensors class) that the reference-value tests read csrc/tests/data/reference.safetensors
// with. The first input byte picks what is fuzzed:
//   even: the input after that byte is a .safetensors file for the reader; it must either read
//         or throw (a damaged data file fails the test that reads it, loudly: the reader's
//         purpose). Its header says std::runtime_error; a few malformed inputs raise other
//         std::exception types (std::invalid_argument from stoul on a bad \u escape: see
//         README.md, findings), accepted here so the fuzzer looks past them. A crash, a
//         sanitizer report or a leak is a bug.
//   odd:  the input drives the writer (FuzzedDataProvider): tensor names, dtypes, shapes, bytes
//         and metadata strings go through safetensors_header(); when it accepts them, the file
//         it describes is read back and must give the same names, dtypes, shapes and bytes.
// The reader takes a path: the file is a memfd (one per process, rewritten for each input).
#include <fuzzer/FuzzedDataProvider.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <stdexcept>
#include <string>
#include <vector>

#include "tests/test_reference_util.h"
#include "tools/safetensors.h"

using edgetune::DType;
using edgetune::reference_test::Safetensors;
using edgetune::tools::SafetensorsEntry;

namespace {

// A memfd holding `bytes`, named by /proc/self/fd/N (created once, truncated and rewritten per input).
std::string as_file(const std::string& bytes) {
  static int fd = -1;
  if (fd < 0) {
    fd = memfd_create("fuzz_safetensors", MFD_CLOEXEC);
    if (fd < 0) std::abort();
  }
  if (ftruncate(fd, 0) != 0) std::abort();
  size_t done = 0;
  while (done < bytes.size()) {
    ssize_t n = pwrite(fd, bytes.data() + done, bytes.size() - done, static_cast<off_t>(done));
    if (n <= 0) std::abort();
    done += static_cast<size_t>(n);
  }
  return "/proc/self/fd/" + std::to_string(fd);
}

void fail(const char* what) {
  std::fprintf(stderr, "fuzz_safetensors: %s\n", what);
  std::abort();
}

void read_file(const uint8_t* data, size_t size) {
  const std::string path = as_file(std::string(reinterpret_cast<const char*>(data), size));
  try {
    Safetensors st(path);
    (void)st.count();
  } catch (const std::exception&) {
    // a malformed file: the test reading it fails loudly
  }
}

// Reading back a header the file reader accepted: every entry the writer listed.
void round_trip(const uint8_t* data, size_t size) {
  FuzzedDataProvider in(data, size);
  static const DType kDTypes[] = {DType::f32, DType::f64, DType::i64, DType::i32, DType::i8, DType::u8, DType::boolean};
  const size_t num_entries = in.ConsumeIntegralInRange<size_t>(0, 4);
  std::vector<SafetensorsEntry> entries(num_entries);
  std::vector<std::string> bytes(num_entries);
  for (size_t i = 0; i < num_entries; ++i) {
    SafetensorsEntry& e = entries[i];
    e.name = in.ConsumeRandomLengthString(24);
    e.dtype = kDTypes[in.ConsumeIntegralInRange<size_t>(0, sizeof kDTypes / sizeof kDTypes[0] - 1)];
    const int rank = in.ConsumeIntegralInRange<int>(0, 3);
    size_t numel = 1;
    for (int d = 0; d < rank; ++d) {
      e.shape.push_back(in.ConsumeIntegralInRange<int64_t>(0, 5));
      numel *= static_cast<size_t>(e.shape.back());
    }
    const size_t nbytes = numel * edgetune::dtype_size(e.dtype);
    bytes[i] = in.ConsumeBytesAsString(nbytes);
    bytes[i].resize(nbytes, '\x5a');
    e.data = bytes[i].data();
    e.nbytes = nbytes;
  }
  edgetune::tools::Metadata metadata;
  const size_t num_meta = in.ConsumeIntegralInRange<size_t>(0, 3);
  for (size_t i = 0; i < num_meta; ++i) {
    std::string k = in.ConsumeRandomLengthString(24);
    metadata.emplace_back(k, in.ConsumeRandomLengthString(48));
  }

  auto header = edgetune::tools::safetensors_header(entries, metadata);
  if (!header.ok()) return;  // empty, reserved or repeated names
  std::string file = header.value();
  if (file.size() < 8 || (file.size() - 8) % 8 != 0) fail("header is not 8-byte aligned");
  for (const std::string& b : bytes) file += b;

  Safetensors st(as_file(file));  // throws (and so aborts the fuzzer) if the writer's file is unreadable
  if (st.count() != entries.size()) fail("tensor count differs after reading back");
  for (size_t i = 0; i < entries.size(); ++i) {
    const SafetensorsEntry& e = entries[i];
    if (!st.has(e.name)) fail("a written tensor name is missing after reading back");
    if (st.dtype_of(e.name) != edgetune::tools::safetensors_dtype(e.dtype)) fail("dtype differs after reading back");
    if (st.shape_of(e.name) != e.shape) fail("shape differs after reading back");
    if (st.raw(e.name) != bytes[i]) fail("bytes differ after reading back");
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  if (data[0] % 2 == 0)
    read_file(data + 1, size - 1);
  else
    round_trip(data + 1, size - 1);
  return 0;
}
