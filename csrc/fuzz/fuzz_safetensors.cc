// libFuzzer harness: safetensors. See csrc/fuzz/README.md.
//
// The production reader (tools/safetensors.h: parse_safetensors, which read_safetensors and the
// checkpoint reader use) and the writer. The first input byte picks what is fuzzed:
//   even: the input after that byte is a .safetensors file; parse_safetensors must return a
//         file or an error Status, never crash, and an accepted file must hold its promises: each
//         tensor's bytes inside the file, nbytes = numel * itemsize, the data section tiled.
//   odd:  the input drives the writer (FuzzedDataProvider): tensor names, dtypes, shapes, bytes
//         and metadata strings go through safetensors_header(); when it accepts them, the file
//         it describes is read back and must give the same names, dtypes, shapes, bytes, metadata.
#include <fuzzer/FuzzedDataProvider.h>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "tools/safetensors.h"

using edgetune::DType;
using edgetune::tools::SafetensorsEntry;
using edgetune::tools::SafetensorsFile;

namespace {

void fail(const char* what) {
  std::fprintf(stderr, "fuzz_safetensors: %s\n", what);
  std::abort();
}

void read_file(const uint8_t* data, size_t size) {
  auto r = edgetune::tools::parse_safetensors(std::vector<uint8_t>(data, data + size), "fuzz");
  if (!r.ok()) return;  // a malformed file: an error Status is the contract
  const SafetensorsFile& f = r.value();
  size_t covered = 0;
  for (const auto& t : f.tensors) {
    if (t.data < f.bytes.data() || t.data + t.nbytes > f.bytes.data() + f.bytes.size()) fail("tensor outside the file");
    uint64_t numel = 1;
    for (int64_t d : t.shape) numel *= static_cast<uint64_t>(d);
    if (numel * edgetune::dtype_size(t.dtype) != t.nbytes) fail("nbytes does not match the shape");
    covered += t.nbytes;
  }
  if (covered > f.bytes.size()) fail("tensors cover more than the file");
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

  auto r = edgetune::tools::parse_safetensors(std::vector<uint8_t>(file.begin(), file.end()), "round trip");
  if (!r.ok()) {
    std::fprintf(stderr, "%s\n", r.status().message().c_str());
    fail("the writer's file is unreadable");
  }
  const SafetensorsFile& st = r.value();
  if (st.tensors.size() != entries.size()) fail("tensor count differs after reading back");
  for (size_t i = 0; i < entries.size(); ++i) {
    const SafetensorsEntry& e = entries[i];
    const auto* t = st.find(e.name);
    if (!t) fail("a written tensor name is missing after reading back");
    if (t->dtype != e.dtype) fail("dtype differs after reading back");
    if (t->shape != e.shape) fail("shape differs after reading back");
    if (std::string(reinterpret_cast<const char*>(t->data), t->nbytes) != bytes[i]) fail("bytes differ after reading back");
  }
  if (st.metadata.size() != metadata.size()) fail("metadata count differs after reading back");
  for (size_t i = 0; i < metadata.size(); ++i)
    if (st.metadata[i] != metadata[i]) fail("metadata differs after reading back");
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
