// Atomic file writes: temp file + fsync + rename + directory fsync (see atomic_file.h).
#include "tools/atomic_file.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

namespace edgetune {
namespace tools {

namespace {
std::string why(int e) { return std::strerror(e); }
}  // namespace

std::string parent_dir(const std::string& path) {
  auto slash = path.find_last_of('/');
  if (slash == std::string::npos) return ".";
  if (slash == 0) return "/";
  return path.substr(0, slash);
}

Result<std::unique_ptr<AtomicFile>> AtomicFile::create(const std::string& path) {
  if (path.empty()) return invalid_argument("the output path is empty");
  if (path.back() == '/') return invalid_argument(path + ": names a directory, not a file");
  struct stat st;
  if (::stat(path.c_str(), &st) == 0 && S_ISDIR(st.st_mode)) {
    return invalid_argument(path + ": is a directory; give a file name, e.g. " + path + "/tuned.safetensors");
  }
  std::string temp = path + ".tmp." + std::to_string(static_cast<long>(::getpid()));
  // O_EXCL: never clobber (or follow a symlink planted at) a file this process did not create.
  int fd = ::open(temp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
  if (fd < 0) {
    int e = errno;
    std::string dir = parent_dir(path);
    if (e == ENOENT) return io_error("cannot write " + path + ": directory " + dir + " does not exist");
    return io_error("cannot write " + path + ": cannot create a file in " + dir + ": " + why(e));
  }
  return std::unique_ptr<AtomicFile>(new AtomicFile(path, std::move(temp), fd));
}

AtomicFile::~AtomicFile() {
  if (!done_) abandon();
}

void AtomicFile::abandon() {
  if (fd_ >= 0) ::close(fd_);
  fd_ = -1;
  ::unlink(temp_.c_str());
  done_ = true;
}

Status AtomicFile::write(const void* data, size_t size) {
  if (done_ || fd_ < 0) return internal_error("write to " + temp_ + " after commit or failure");
  const auto* p = static_cast<const uint8_t*>(data);
  while (size > 0) {
    // Linux writes at most ~2 GiB per call; loop for partial writes and signals.
    size_t chunk = size < (size_t{1} << 30) ? size : (size_t{1} << 30);
    ssize_t n = ::write(fd_, p, chunk);
    if (n < 0) {
      if (errno == EINTR) continue;
      int e = errno;
      abandon();
      return io_error("writing " + temp_ + " (for " + path_ + "): " + why(e));
    }
    p += n;
    size -= static_cast<size_t>(n);
    written_ += static_cast<size_t>(n);
  }
  return Status::Ok();
}

Status AtomicFile::commit() {
  if (done_ || fd_ < 0) return internal_error("commit of " + temp_ + " after commit or failure");
  if (::fsync(fd_) != 0) {
    int e = errno;
    abandon();
    return io_error("flushing " + temp_ + " to disk: " + why(e));
  }
  int rc = ::close(fd_);
  fd_ = -1;
  if (rc != 0) {
    int e = errno;
    abandon();
    return io_error("closing " + temp_ + ": " + why(e));
  }
  if (::rename(temp_.c_str(), path_.c_str()) != 0) {
    int e = errno;
    abandon();
    return io_error("renaming " + temp_ + " to " + path_ + ": " + why(e));
  }
  done_ = true;
  // The file is complete and in place; syncing the directory entry is best effort (some
  // filesystems refuse fsync on a directory), so its failure is not reported.
  int dfd = ::open(parent_dir(path_).c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd >= 0) {
    (void)::fsync(dfd);
    ::close(dfd);
  }
  return Status::Ok();
}

Status check_writable(const std::string& path) {
  auto f = AtomicFile::create(path);
  if (!f.ok()) return f.status();
  return Status::Ok();  // the destructor removes the temp file
}

}  // namespace tools
}  // namespace edgetune
