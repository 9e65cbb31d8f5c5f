// The .safetensors writer (see safetensors.h).
#include "tools/safetensors.h"

#include <cstdio>
#include <set>

#include "tools/atomic_file.h"

namespace edgetune {
namespace tools {

const char* safetensors_dtype(DType t) {
  switch (t) {
    case DType::f32: return "F32";
    case DType::f64: return "F64";
    case DType::f16: return "F16";
    case DType::bf16: return "BF16";
    case DType::i64: return "I64";
    case DType::i32: return "I32";
    case DType::i8: return "I8";
    case DType::u8: return "U8";
    case DType::boolean: return "BOOL";
  }
  return "?";
}

std::string json_escape(const std::string& s) {
  std::string out;
  out.reserve(s.size() + 2);
  for (char c : s) {
    switch (c) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\n': out += "\\n"; break;
      case '\r': out += "\\r"; break;
      case '\t': out += "\\t"; break;
      default:
        if (static_cast<unsigned char>(c) < 0x20) {
          char buf[8];
          std::snprintf(buf, sizeof buf, "\\u%04x", static_cast<unsigned>(static_cast<unsigned char>(c)));
          out += buf;
        } else {
          out += c;  // UTF-8 passes through unchanged
        }
    }
  }
  return out;
}

Result<std::string> safetensors_header(const std::vector<SafetensorsEntry>& entries, const Metadata& metadata) {
  std::string json = "{";
  bool first = true;
  if (!metadata.empty()) {
    json += "\"__metadata__\":{";
    for (size_t i = 0; i < metadata.size(); ++i) {
      if (i) json += ",";
      json += "\"" + json_escape(metadata[i].first) + "\":\"" + json_escape(metadata[i].second) + "\"";
    }
    json += "}";
    first = false;
  }
  std::set<std::string> seen;
  uint64_t offset = 0;
  for (const auto& e : entries) {
    if (e.name.empty() || e.name == "__metadata__") {
      return invalid_argument("tensor name '" + e.name + "' cannot be stored in a safetensors file");
    }
    if (!seen.insert(e.name).second) return invalid_argument("tensor name '" + e.name + "' appears twice");
    uint64_t numel = 1;
    for (int64_t d : e.shape) numel *= static_cast<uint64_t>(d);
    if (numel * dtype_size(e.dtype) != e.nbytes) {
      return internal_error("tensor '" + e.name + "': " + std::to_string(e.nbytes) + " bytes do not match its shape");
    }
    if (!first) json += ",";
    first = false;
    json += "\"" + json_escape(e.name) + "\":{\"dtype\":\"" + safetensors_dtype(e.dtype) + "\",\"shape\":[";
    for (size_t i = 0; i < e.shape.size(); ++i) {
      if (i) json += ",";
      json += std::to_string(e.shape[i]);
    }
    json += "],\"data_offsets\":[" + std::to_string(offset) + "," + std::to_string(offset + e.nbytes) + "]}";
    offset += e.nbytes;
  }
  json += "}";
  while (json.size() % 8 != 0) json += ' ';
  std::string out(8, '\0');
  uint64_t n = json.size();
  for (int i = 0; i < 8; ++i) out[static_cast<size_t>(i)] = static_cast<char>((n >> (8 * i)) & 0xFF);
  return out + json;
}

Status write_safetensors(const std::string& path, const std::vector<SafetensorsEntry>& entries,
                         const Metadata& metadata) {
  ET_ASSIGN_OR_RETURN(std::string header, safetensors_header(entries, metadata));
  ET_ASSIGN_OR_RETURN(auto file, AtomicFile::create(path));
  ET_RETURN_IF_ERROR(file->write(header.data(), header.size()));
  for (const auto& e : entries) {
    if (e.nbytes) ET_RETURN_IF_ERROR(file->write(e.data, e.nbytes));
  }
  return file->commit();
}

Status write_safetensors(AtomicFile& file, const std::vector<SafetensorsEntry>& entries, const Metadata& metadata) {
  ET_ASSIGN_OR_RETURN(std::string header, safetensors_header(entries, metadata));
  ET_RETURN_IF_ERROR(file.write(header.data(), header.size()));
  for (const auto& e : entries) {
    if (e.nbytes) ET_RETURN_IF_ERROR(file.write(e.data, e.nbytes));
  }
  return file.commit();
}

}  // namespace tools
}  // namespace edgetune
