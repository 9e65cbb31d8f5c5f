// Finding and reading a plan appended to the executable (see embedded_plan.h).
#include "tools/embedded_plan.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>

namespace edgetune {
namespace tools {

Result<bool> parse_trailer(const uint8_t* tail, uint64_t file_size, uint64_t* plan_offset, uint64_t* plan_size,
                           const std::string& where) {
  if (file_size < kTrailerSize || std::memcmp(tail + 8, kEmbedMagic, 8) != 0) return false;
  uint64_t size = 0;
  for (int i = 0; i < 8; ++i) size |= static_cast<uint64_t>(tail[i]) << (8 * i);
  if (size == 0 || size > file_size - kTrailerSize) {
    return invalid_plan(where + ": the embedded-plan trailer says " + std::to_string(size) +
                        " plan bytes, but the file has only " + std::to_string(file_size - kTrailerSize) +
                        " before it (a damaged binary; emit it again)");
  }
  *plan_size = size;
  *plan_offset = file_size - kTrailerSize - size;
  return true;
}

namespace {
Status read_exact(int fd, uint64_t offset, void* dst, size_t size, const std::string& where) {
  auto* p = static_cast<uint8_t*>(dst);
  while (size > 0) {
    ssize_t n = ::pread(fd, p, size, static_cast<off_t>(offset));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return io_error(where + ": read failed: " + (n < 0 ? std::strerror(errno) : "unexpected end of file"));
    p += n;
    offset += static_cast<uint64_t>(n);
    size -= static_cast<size_t>(n);
  }
  return Status::Ok();
}
}  // namespace

Result<EmbeddedPlan> read_embedded_plan(const std::string& path) {
  EmbeddedPlan out;
  out.source = path;
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return io_error(path + ": cannot open: " + std::strerror(errno));
  struct stat st;
  if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(fd);
    return out;  // not a regular file: nothing appended to it
  }
  const auto file_size = static_cast<uint64_t>(st.st_size);
  if (file_size < kTrailerSize) {
    ::close(fd);
    return out;
  }
  uint8_t tail[kTrailerSize];
  Status s = read_exact(fd, file_size - kTrailerSize, tail, kTrailerSize, path);
  uint64_t offset = 0, size = 0;
  if (s.ok()) {
    auto found = parse_trailer(tail, file_size, &offset, &size, path);
    if (!found.ok()) {
      s = found.status();
    } else if (found.value()) {
      out.found = true;
      out.bytes.resize(static_cast<size_t>(size));
      s = read_exact(fd, offset, out.bytes.data(), out.bytes.size(), path);
    }
  }
  ::close(fd);
  if (!s.ok()) return s;
  return out;
}

std::string self_executable(const char* argv0) {
  if (::access("/proc/self/exe", R_OK) == 0) return "/proc/self/exe";
  if (argv0 == nullptr || *argv0 == '\0') return "";
  std::string a = argv0;
  if (a.find('/') != std::string::npos) return a;
  const char* path_env = std::getenv("PATH");
  std::string paths = path_env ? path_env : "";
  size_t start = 0;
  while (start <= paths.size()) {
    size_t end = paths.find(':', start);
    if (end == std::string::npos) end = paths.size();
    std::string dir = paths.substr(start, end - start);
    std::string cand = (dir.empty() ? "." : dir) + "/" + a;
    if (::access(cand.c_str(), X_OK) == 0) return cand;
    start = end + 1;
  }
  return "";
}

}  // namespace tools
}  // namespace edgetune
