// Checkpoint writing, reading and restoring (see checkpoint.h).
#include "tools/checkpoint.h"

#include <cmath>
#include <cstdio>
#include <cstring>
#include <new>

#include "core/crc32.h"
#include "tools/adapter_export.h"

namespace edgetune {
namespace tools {
namespace {

const std::string kWeightPrefix = "weights/";
const std::string kStatePrefix = "state/";

// Every weight and state as an entry, data not yet read (null), and the bindings they come from.
std::vector<SafetensorsEntry> entries_of(const Runtime& rt, std::vector<const Binding*>* bindings = nullptr) {
  std::vector<SafetensorsEntry> out;
  auto add = [&](const std::string& prefix, const Binding& b) {
    SafetensorsEntry e;
    e.name = prefix + b.name;
    e.dtype = b.view.dtype;
    e.shape.assign(b.view.shape, b.view.shape + b.view.rank);
    e.nbytes = b.view.nbytes();
    out.push_back(std::move(e));
    if (bindings) bindings->push_back(&b);
  };
  for (const Binding& b : rt.weights()) add(kWeightPrefix, b);
  for (const Binding& b : rt.optimizer_state()) add(kStatePrefix, b);
  return out;
}

std::string hex32(uint32_t v) {
  char buf[16];
  std::snprintf(buf, sizeof buf, "%08x", v);
  return buf;
}

Metadata metadata_of(const Runtime& rt, const std::vector<SafetensorsEntry>& entries, const Metadata& extra) {
  uint32_t crc = 0;
  for (const auto& e : entries) crc = crc32_update(crc, static_cast<const uint8_t*>(e.data), e.nbytes);
  Metadata meta = {{"format", kCheckpointFormat},
                   {"format_version", kCheckpointFormatVersion},
                   {"plan_sha256", rt.plan_sha256()},
                   {"model", rt.model_label()},
                   {"steps", std::to_string(rt.steps_done())},
                   {"data_crc32", hex32(crc)}};
  meta.insert(meta.end(), extra.begin(), extra.end());
  return meta;
}

bool all_finite(const SafetensorsTensor& t) {
  const size_t n = t.nbytes / dtype_size(t.dtype);
  if (t.dtype == DType::f32) {
    for (size_t i = 0; i < n; ++i) {
      float v;
      std::memcpy(&v, t.data + 4 * i, 4);
      if (!std::isfinite(v)) return false;
    }
  } else if (t.dtype == DType::f64) {
    for (size_t i = 0; i < n; ++i) {
      double v;
      std::memcpy(&v, t.data + 8 * i, 8);
      if (!std::isfinite(v)) return false;
    }
  }
  return true;
}

}  // namespace

Status read_entries(const Runtime& rt, const std::vector<const Binding*>& bindings,
                    std::vector<SafetensorsEntry>* entries, std::unique_ptr<uint8_t[]>* staging) {
  if (bindings.size() != entries->size()) return internal_error("read_entries: bindings and entries differ in number");
  size_t total = 0;
  for (size_t i = 0; i < bindings.size(); ++i)
    if (!rt.host_data(*bindings[i])) total += (*entries)[i].nbytes;
  staging->reset();
  if (total) {
    staging->reset(new (std::nothrow) uint8_t[total]);
    if (!*staging)
      return out_of_memory("cannot allocate " + std::to_string(total) + " bytes of host memory to read the " +
                           rt.backend() + " runtime's tensors into");
  }
  size_t at = 0;
  for (size_t i = 0; i < bindings.size(); ++i) {
    SafetensorsEntry& e = (*entries)[i];
    if (const void* p = rt.host_data(*bindings[i])) {
      e.data = p;
      continue;
    }
    ET_RETURN_IF_ERROR(rt.read(*bindings[i], staging->get() + at, e.nbytes));
    e.data = staging->get() + at;
    at += e.nbytes;
  }
  return Status::Ok();
}

Result<size_t> checkpoint_size(const Runtime& rt, const Metadata& extra) {
  std::vector<SafetensorsEntry> entries = entries_of(rt);
  Metadata meta = metadata_of(rt, {}, extra);
  for (auto& kv : meta)
    if (kv.first == "steps") kv.second = std::string(20, '9');  // the longest an int64 count prints
  ET_ASSIGN_OR_RETURN(std::string header, safetensors_header(entries, meta));
  size_t bytes = header.size();
  for (const auto& e : entries) bytes += e.nbytes;
  return bytes;
}

Status write_checkpoint(AtomicFile& file, const Runtime& rt, const Metadata& extra) {
  std::vector<const Binding*> bindings;
  std::vector<SafetensorsEntry> entries = entries_of(rt, &bindings);
  std::unique_ptr<uint8_t[]> staging;  // cuda: every tensor read back before the file is written
  ET_RETURN_IF_ERROR(read_entries(rt, bindings, &entries, &staging));
  return write_safetensors(file, entries, metadata_of(rt, entries, extra));
}

Status write_checkpoint(const std::string& path, const Runtime& rt, const Metadata& extra) {
  ET_ASSIGN_OR_RETURN(auto file, AtomicFile::create(path));
  return write_checkpoint(*file, rt, extra);
}

Result<SafetensorsFile> read_checkpoint(const std::string& path) {
  ET_ASSIGN_OR_RETURN(SafetensorsFile f, read_safetensors(path));
  const std::string* format = f.meta("format");
  if (!format || *format != kCheckpointFormat)
    return invalid_argument(path + ": not an edgetune checkpoint (a safetensors file without format '" +
                            kCheckpointFormat + "' in its metadata" +
                            (format ? "; its format is '" + *format + "'" : std::string()) + ")");
  const std::string* version = f.meta("format_version");
  if (!version || *version != kCheckpointFormatVersion)
    return invalid_argument(path + ": checkpoint format version '" + (version ? *version : std::string("none")) +
                            "'; this runtime reads version " + kCheckpointFormatVersion);
  for (const char* key : {"plan_sha256", "steps", "data_crc32"})
    if (!f.meta(key)) return invalid_argument(path + ": checkpoint metadata has no '" + key + "'");
  uint32_t crc = 0;
  for (const auto& t : f.tensors) crc = crc32_update(crc, t.data, t.nbytes);
  if (hex32(crc) != *f.meta("data_crc32"))
    return invalid_argument(path + ": checkpoint is damaged: its data CRC-32 is " + hex32(crc) + ", the header says " +
                            *f.meta("data_crc32"));
  const std::string& steps = *f.meta("steps");
  if (steps.empty() || steps.size() > 18 || steps.find_first_not_of("0123456789") != std::string::npos)
    return invalid_argument(path + ": checkpoint metadata 'steps' is not a step count: '" + steps + "'");
  return f;
}

Status restore_checkpoint(Runtime& rt, const SafetensorsFile& ckpt) {
  const std::string& plan = *ckpt.meta("plan_sha256");
  if (plan != rt.plan_sha256())
    return invalid_argument("the checkpoint was written by another plan (sha256 " + plan.substr(0, 12) +
                            "...; this plan is " + rt.plan_sha256().substr(0, 12) +
                            "...): a checkpoint resumes only the plan that wrote it");
  // check everything first ...
  struct Pending {
    const Binding* binding;
    const SafetensorsTensor* tensor;
  };
  std::vector<Pending> pending;
  size_t expected = 0;
  auto match = [&](const std::string& prefix, const Binding& b, const char* what, bool optional) -> Status {
    const SafetensorsTensor* t = ckpt.find(prefix + b.name);
    if (!t && optional) return Status::Ok();  // an export-only buffer (never trained): keeps the plan's value
    if (!t) return invalid_argument(std::string("the checkpoint has no ") + what + " '" + b.name + "'");
    ++expected;
    std::vector<int64_t> shape(b.view.shape, b.view.shape + b.view.rank);
    if (t->dtype != b.view.dtype || t->shape != shape)
      return invalid_argument(std::string("the checkpoint's ") + what + " '" + b.name + "' is " +
                              safetensors_dtype(t->dtype) + " of " + std::to_string(t->shape.size()) +
                              " dims; the plan's is " + b.view.shape_string());
    if (!all_finite(*t)) return invalid_argument(std::string("the checkpoint's ") + what + " '" + b.name + "' holds inf or NaN");
    if (rt.is_baked(b.name)) {
      std::vector<uint8_t> now(t->nbytes);
      ET_RETURN_IF_ERROR(rt.read(b, now.data(), now.size()));
      if (std::memcmp(t->data, now.data(), t->nbytes) != 0)
        return invalid_argument("the checkpoint's frozen weight '" + b.name +
                              "' differs from the value the plan folded into constants");
    }
    pending.push_back({&b, t});
    return Status::Ok();
  };
  for (const Binding& b : rt.weights())
    ET_RETURN_IF_ERROR(match(kWeightPrefix, b, "weight", is_hidden(rt.export_table(), b.name)));
  for (const Binding& b : rt.optimizer_state()) ET_RETURN_IF_ERROR(match(kStatePrefix, b, "optimizer state", false));
  if (ckpt.tensors.size() != expected) {
    for (const auto& t : ckpt.tensors) {
      bool known = false;
      for (const auto& p : pending) known = known || p.tensor == &t;
      if (!known) return invalid_argument("the checkpoint has a tensor '" + t.name + "' this plan does not");
    }
  }
  // ... then write
  for (const auto& p : pending) ET_RETURN_IF_ERROR(rt.write(*p.binding, p.tensor->data, p.tensor->nbytes));
  rt.set_steps_done(std::stoll(*ckpt.meta("steps")));
  return Status::Ok();
}

}  // namespace tools
}  // namespace edgetune
