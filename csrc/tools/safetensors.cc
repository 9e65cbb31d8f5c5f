// The .safetensors writer and reader (see safetensors.h).
#include "tools/safetensors.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <limits>
#include <new>
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
    std::set<std::string> keys;
    for (size_t i = 0; i < metadata.size(); ++i) {
      if (!keys.insert(metadata[i].first).second)
        return invalid_argument("metadata key '" + metadata[i].first + "' appears twice");
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

// ---- reading ------------------------------------------------------------------------------------
namespace edgetune {
namespace tools {

const SafetensorsTensor* SafetensorsFile::find(const std::string& name) const {
  for (const auto& t : tensors)
    if (t.name == name) return &t;
  return nullptr;
}

const std::string* SafetensorsFile::meta(const std::string& key) const {
  for (const auto& kv : metadata)
    if (kv.first == key) return &kv.second;
  return nullptr;
}

namespace {

bool dtype_from_safetensors(const std::string& s, DType* out) {
  static const std::pair<const char*, DType> kTable[] = {
      {"F32", DType::f32}, {"F64", DType::f64}, {"F16", DType::f16}, {"BF16", DType::bf16}, {"I64", DType::i64},
      {"I32", DType::i32}, {"I8", DType::i8},   {"U8", DType::u8},   {"BOOL", DType::boolean}};
  for (const auto& kv : kTable)
    if (s == kv.first) return *out = kv.second, true;
  return false;
}

// The header's JSON, restricted to the one shape a safetensors header has:
//   { "__metadata__": {string: string, ...}, name: {"dtype": s, "shape": [ints], "data_offsets": [b, e]}, ... }
// No recursion: the nesting depth is fixed by the layout, so no input can exhaust the stack.
class HeaderParser {
 public:
  HeaderParser(const char* text, size_t size, std::string where) : s_(text), n_(size), where_(std::move(where)) {}

  Status parse(SafetensorsFile* out, std::vector<std::pair<uint64_t, uint64_t>>* offsets) {
    ET_RETURN_IF_ERROR(expect('{'));
    bool seen_metadata = false;
    if (!peek_is('}')) {
      while (true) {
        std::string key;
        ET_RETURN_IF_ERROR(string(&key));
        ET_RETURN_IF_ERROR(expect(':'));
        if (key == "__metadata__") {
          if (seen_metadata) return fail("'__metadata__' appears twice");
          seen_metadata = true;
          ET_RETURN_IF_ERROR(metadata(&out->metadata));
        } else {
          if (out->find(key)) return fail("tensor '" + key + "' appears twice");
          SafetensorsTensor t;
          t.name = key;
          std::pair<uint64_t, uint64_t> range;
          ET_RETURN_IF_ERROR(tensor(&t, &range));
          out->tensors.push_back(std::move(t));
          offsets->push_back(range);
        }
        if (peek_is(',')) {
          ++p_;
          continue;
        }
        break;
      }
    }
    ET_RETURN_IF_ERROR(expect('}'));
    ws();
    if (p_ != n_) return fail("unexpected characters after the header object");
    return Status::Ok();
  }

 private:
  Status fail(const std::string& what) const {
    return invalid_argument(where_ + ": not a valid safetensors header: " + what + " (header byte " +
                            std::to_string(p_) + ")");
  }
  void ws() {
    while (p_ < n_ && (s_[p_] == ' ' || s_[p_] == '\t' || s_[p_] == '\n' || s_[p_] == '\r')) ++p_;
  }
  bool peek_is(char c) {
    ws();
    return p_ < n_ && s_[p_] == c;
  }
  Status expect(char c) {
    ws();
    if (p_ >= n_) return fail(std::string("expected '") + c + "', the header ended");
    if (s_[p_] != c) return fail(std::string("expected '") + c + "'");
    ++p_;
    return Status::Ok();
  }
  static void put_utf8(std::string* out, uint32_t cp) {
    if (cp < 0x80) {
      *out += static_cast<char>(cp);
    } else if (cp < 0x800) {
      *out += static_cast<char>(0xC0 | (cp >> 6));
      *out += static_cast<char>(0x80 | (cp & 0x3F));
    } else if (cp < 0x10000) {
      *out += static_cast<char>(0xE0 | (cp >> 12));
      *out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
      *out += static_cast<char>(0x80 | (cp & 0x3F));
    } else {
      *out += static_cast<char>(0xF0 | (cp >> 18));
      *out += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
      *out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
      *out += static_cast<char>(0x80 | (cp & 0x3F));
    }
  }
  Status hex4(uint32_t* v) {
    if (n_ - p_ < 4) return fail("truncated \\u escape");
    *v = 0;
    for (int i = 0; i < 4; ++i) {
      const char c = s_[p_++];
      const int d = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
      if (d < 0) return fail("bad \\u escape");
      *v = *v * 16 + static_cast<uint32_t>(d);
    }
    return Status::Ok();
  }
  Status string(std::string* out) {
    ET_RETURN_IF_ERROR(expect('"'));
    while (true) {
      if (p_ >= n_) return fail("unterminated string");
      const char c = s_[p_++];
      if (c == '"') return Status::Ok();
      if (static_cast<unsigned char>(c) < 0x20) return fail("control character in a string");
      if (c != '\\') {
        *out += c;
        continue;
      }
      if (p_ >= n_) return fail("unterminated escape");
      const char e = s_[p_++];
      switch (e) {
        case '"': *out += '"'; break;
        case '\\': *out += '\\'; break;
        case '/': *out += '/'; break;
        case 'b': *out += '\b'; break;
        case 'f': *out += '\f'; break;
        case 'n': *out += '\n'; break;
        case 'r': *out += '\r'; break;
        case 't': *out += '\t'; break;
        case 'u': {
          uint32_t cp = 0;
          ET_RETURN_IF_ERROR(hex4(&cp));
          if (cp >= 0xD800 && cp < 0xDC00) {  // a surrogate pair: the low half must follow
            uint32_t lo = 0;
            if (n_ - p_ < 2 || s_[p_] != '\\' || s_[p_ + 1] != 'u') return fail("unpaired surrogate in \\u escape");
            p_ += 2;
            ET_RETURN_IF_ERROR(hex4(&lo));
            if (lo < 0xDC00 || lo >= 0xE000) return fail("unpaired surrogate in \\u escape");
            cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
          } else if (cp >= 0xDC00 && cp < 0xE000) {
            return fail("unpaired surrogate in \\u escape");
          }
          put_utf8(out, cp);
          break;
        }
        default: return fail(std::string("unknown escape '\\") + e + "'");
      }
    }
  }
  // A non-negative integer below 2^62 (sizes and offsets; no sign, fraction or exponent).
  Status integer(uint64_t* v) {
    ws();
    if (p_ >= n_ || s_[p_] < '0' || s_[p_] > '9') return fail("expected a non-negative integer");
    *v = 0;
    const size_t start = p_;
    while (p_ < n_ && s_[p_] >= '0' && s_[p_] <= '9') {
      *v = *v * 10 + static_cast<uint64_t>(s_[p_++] - '0');
      if (*v >= (uint64_t{1} << 62)) return fail("integer too large");
    }
    if (p_ - start > 1 && s_[start] == '0') return fail("integer with a leading zero");
    if (p_ < n_ && (s_[p_] == '.' || s_[p_] == 'e' || s_[p_] == 'E')) return fail("expected an integer");
    return Status::Ok();
  }
  Status int_list(std::vector<uint64_t>* out, size_t max_len) {
    ET_RETURN_IF_ERROR(expect('['));
    if (peek_is(']')) return expect(']');
    while (true) {
      if (out->size() == max_len) return fail("list longer than " + std::to_string(max_len));
      uint64_t v;
      ET_RETURN_IF_ERROR(integer(&v));
      out->push_back(v);
      if (peek_is(',')) {
        ++p_;
        continue;
      }
      return expect(']');
    }
  }
  Status metadata(Metadata* out) {
    ET_RETURN_IF_ERROR(expect('{'));
    if (peek_is('}')) return expect('}');
    while (true) {
      std::string k, v;
      ET_RETURN_IF_ERROR(string(&k));
      ET_RETURN_IF_ERROR(expect(':'));
      ws();
      if (p_ < n_ && s_[p_] != '"') return fail("__metadata__ value of '" + k + "' is not a string");
      ET_RETURN_IF_ERROR(string(&v));
      for (const auto& kv : *out)
        if (kv.first == k) return fail("__metadata__ key '" + k + "' appears twice");
      out->emplace_back(std::move(k), std::move(v));
      if (peek_is(',')) {
        ++p_;
        continue;
      }
      return expect('}');
    }
  }
  Status tensor(SafetensorsTensor* t, std::pair<uint64_t, uint64_t>* range) {
    ET_RETURN_IF_ERROR(expect('{'));
    bool have_dtype = false, have_shape = false, have_offsets = false;
    std::vector<uint64_t> shape, offsets;
    while (!peek_is('}')) {
      std::string key;
      ET_RETURN_IF_ERROR(string(&key));
      ET_RETURN_IF_ERROR(expect(':'));
      if (key == "dtype" && !have_dtype) {
        std::string d;
        ET_RETURN_IF_ERROR(string(&d));
        if (!dtype_from_safetensors(d, &t->dtype)) return fail("tensor '" + t->name + "' has unknown dtype '" + d + "'");
        have_dtype = true;
      } else if (key == "shape" && !have_shape) {
        ET_RETURN_IF_ERROR(int_list(&shape, kMaxRank));
        have_shape = true;
      } else if (key == "data_offsets" && !have_offsets) {
        ET_RETURN_IF_ERROR(int_list(&offsets, 2));
        if (offsets.size() != 2) return fail("tensor '" + t->name + "': data_offsets must be [begin, end]");
        have_offsets = true;
      } else {
        return fail("tensor '" + t->name + "': unexpected or repeated key '" + key + "'");
      }
      if (!peek_is(',')) break;
      ++p_;
    }
    ET_RETURN_IF_ERROR(expect('}'));
    if (!have_dtype || !have_shape || !have_offsets)
      return fail("tensor '" + t->name + "' needs dtype, shape and data_offsets");
    uint64_t numel = 1;
    for (uint64_t d : shape) {
      if (d != 0 && numel > (uint64_t{1} << 62) / d) return fail("tensor '" + t->name + "': shape too large");
      numel *= d;
      t->shape.push_back(static_cast<int64_t>(d));
    }
    if (offsets[0] > offsets[1]) return fail("tensor '" + t->name + "': data_offsets begin after they end");
    const uint64_t item = dtype_size(t->dtype);
    if (numel > (uint64_t{1} << 62) / item || numel * item != offsets[1] - offsets[0])
      return fail("tensor '" + t->name + "': data_offsets span " + std::to_string(offsets[1] - offsets[0]) +
                  " bytes, its shape and dtype need " + std::to_string(numel * item));
    *range = {offsets[0], offsets[1]};
    return Status::Ok();
  }

  const char* s_;
  size_t n_;
  size_t p_ = 0;
  std::string where_;
};

}  // namespace

Result<SafetensorsFile> parse_safetensors(std::vector<uint8_t> bytes, const std::string& where) {
  SafetensorsFile f;
  f.bytes = std::move(bytes);
  const size_t size = f.bytes.size();
  if (size < 8) return invalid_argument(where + ": not a safetensors file (" + std::to_string(size) + " bytes)");
  uint64_t header_len = 0;
  for (int i = 0; i < 8; ++i) header_len |= uint64_t{f.bytes[static_cast<size_t>(i)]} << (8 * i);
  if (header_len > kMaxHeaderBytes)
    return invalid_argument(where + ": not a safetensors file (header length " + std::to_string(header_len) +
                            " exceeds the format's limit of 100 MiB)");
  if (header_len > size - 8)
    return invalid_argument(where + ": truncated safetensors file: the header claims " + std::to_string(header_len) +
                            " bytes, the file has " + std::to_string(size - 8) + " after the length");
  std::vector<std::pair<uint64_t, uint64_t>> ranges;
  HeaderParser parser(reinterpret_cast<const char*>(f.bytes.data() + 8), static_cast<size_t>(header_len), where);
  ET_RETURN_IF_ERROR(parser.parse(&f, &ranges));
  const size_t data_start = 8 + static_cast<size_t>(header_len);
  const uint64_t data_size = size - data_start;
  // the data section must be tiled exactly: sort by begin, no gap, no overlap, nothing left over
  std::vector<size_t> order(ranges.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = i;
  std::sort(order.begin(), order.end(), [&](size_t a, size_t b) {
    return ranges[a] < ranges[b];
  });
  uint64_t next = 0;
  for (size_t i : order) {
    const std::string& name = f.tensors[i].name;
    if (ranges[i].first != next)
      return invalid_argument(where + ": tensor '" + name + "' starts at data byte " + std::to_string(ranges[i].first) +
                              (ranges[i].first < next ? ", inside the tensor before it" : ", leaving a hole before it") +
                              " (expected " + std::to_string(next) + ")");
    if (ranges[i].second > data_size)
      return invalid_argument(where + ": truncated safetensors file: tensor '" + name + "' ends at data byte " +
                              std::to_string(ranges[i].second) + ", the file holds " + std::to_string(data_size));
    next = ranges[i].second;
  }
  if (next != data_size)
    return invalid_argument(where + ": " + std::to_string(data_size - next) +
                            " bytes after the last tensor (a damaged or concatenated file)");
  for (size_t i = 0; i < ranges.size(); ++i) {
    f.tensors[i].data = f.bytes.data() + data_start + ranges[i].first;
    f.tensors[i].nbytes = static_cast<size_t>(ranges[i].second - ranges[i].first);
  }
  return f;
}

Result<SafetensorsFile> read_safetensors(const std::string& path) {
  // O_NONBLOCK: opening a FIFO must not wait for a writer; only regular files are read.
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK);
  if (fd < 0) {
    const int e = errno;
    if (e == ENOENT) return not_found(path + ": no such file");
    return io_error(path + ": cannot open: " + std::strerror(e));
  }
  struct stat st;
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    const bool is_dir = S_ISDIR(st.st_mode);
    ::close(fd);
    return invalid_argument(path + (is_dir ? ": is a directory, not a safetensors file"
                                           : ": is not a regular file (a FIFO, device or socket)"));
  }
  if (static_cast<uint64_t>(st.st_size) > std::numeric_limits<size_t>::max() / 2) {
    ::close(fd);
    return out_of_memory(path + ": too large (" + std::to_string(st.st_size) + " bytes)");
  }
  std::vector<uint8_t> bytes;
  try {
    bytes.resize(static_cast<size_t>(st.st_size));
  } catch (const std::bad_alloc&) {
    ::close(fd);
    return out_of_memory(path + ": cannot allocate " + std::to_string(st.st_size) + " bytes to read it");
  }
  size_t got = 0;
  while (got < bytes.size()) {
    const ssize_t r = ::read(fd, bytes.data() + got, bytes.size() - got);
    if (r < 0) {
      if (errno == EINTR || errno == EAGAIN) continue;
      const int e = errno;
      ::close(fd);
      return io_error(path + ": read failed: " + std::strerror(e));
    }
    if (r == 0) break;
    got += static_cast<size_t>(r);
  }
  ::close(fd);
  bytes.resize(got);  // shrank while reading: the parser reports the truncation
  return parse_safetensors(std::move(bytes), path);
}

}  // namespace tools
}  // namespace edgetune
