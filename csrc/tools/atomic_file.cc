// Atomic file writes: temp file + fsync + rename + directory fsync (see atomic_file.h).
#include "tools/atomic_file.h"

#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <csignal>
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

int remove_stale_temp_files(const std::string& path) {
  const auto slash = path.find_last_of('/');
  const std::string base = slash == std::string::npos ? path : path.substr(slash + 1);
  const std::string dir = parent_dir(path);
  const std::string prefix = base + ".tmp.";
  if (base.empty()) return 0;
  DIR* d = ::opendir(dir.c_str());
  if (!d) return 0;
  int removed = 0;
  const long self = static_cast<long>(::getpid());
  while (dirent* e = ::readdir(d)) {
    const std::string name = e->d_name;
    if (name.size() <= prefix.size() || name.compare(0, prefix.size(), prefix) != 0) continue;
    const std::string digits = name.substr(prefix.size());
    if (digits.size() > 9 || digits.find_first_not_of("0123456789") != std::string::npos) continue;
    const long pid = std::stol(digits);
    if (pid <= 0 || pid == self) continue;
    if (::kill(static_cast<pid_t>(pid), 0) == 0 || errno != ESRCH) continue;  // alive (or not ours to judge)
    const std::string full = (dir == "/" ? "" : dir) + "/" + name;
    struct stat st;
    if (::lstat(full.c_str(), &st) != 0 || !S_ISREG(st.st_mode)) continue;
    if (::unlink(full.c_str()) == 0) ++removed;
  }
  ::closedir(d);
  return removed;
}

Result<std::unique_ptr<AtomicFile>> AtomicFile::create(const std::string& path) {
  if (path.empty()) return invalid_argument("the output path is empty");
  if (path.back() == '/') return invalid_argument(path + ": names a directory, not a file");
  struct stat st;
  if (::stat(path.c_str(), &st) == 0 && S_ISDIR(st.st_mode)) {
    return invalid_argument(path + ": is a directory; give a file name, e.g. " + path + "/tuned.safetensors");
  }
  std::string temp = path + ".tmp." + std::to_string(static_cast<long>(::getpid()));
  remove_stale_temp_files(path);
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

Status AtomicFile::reserve(size_t size) {
  if (done_ || fd_ < 0) return internal_error("reserve on " + temp_ + " after commit or failure");
  if (size == 0) return Status::Ok();
  int rc = ::posix_fallocate(fd_, 0, static_cast<off_t>(size));
  if (rc != 0) {
    std::string dir = parent_dir(path_);
    abandon();
    if (rc == ENOSPC || rc == EDQUOT || rc == EFBIG) {
      return io_error("cannot write " + path_ + ": not enough space in " + dir + " for its " + std::to_string(size) +
                      " bytes (" + why(rc) + ")");
    }
    return io_error("cannot reserve " + std::to_string(size) + " bytes for " + path_ + " in " + dir + ": " + why(rc));
  }
  reserved_ = size;
  return Status::Ok();
}

Status AtomicFile::write(const void* data, size_t size) {
  if (done_ || fd_ < 0) return internal_error("write to " + temp_ + " after commit or failure");
  const auto* p = static_cast<const uint8_t*>(data);
  bool kill_now = false;
  if (kill_after_ > 0 && written_ + size >= kill_after_) {
    size = kill_after_ - written_;
    kill_now = true;
  }
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
  if (kill_now) std::raise(SIGKILL);
  return Status::Ok();
}

Status AtomicFile::commit() {
  if (done_ || fd_ < 0) return internal_error("commit of " + temp_ + " after commit or failure");
  if (reserved_ > written_ && ::ftruncate(fd_, static_cast<off_t>(written_)) != 0) {
    int e = errno;
    abandon();
    return io_error("trimming " + temp_ + ": " + why(e));
  }
  // An existing destination keeps its permissions (a 0600 file must not become 0644).
  struct stat old;
  if (::stat(path_.c_str(), &old) == 0 && S_ISREG(old.st_mode)) (void)::fchmod(fd_, old.st_mode & 07777);
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
