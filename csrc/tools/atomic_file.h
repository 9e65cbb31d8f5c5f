// Writing a file so that readers see either the old file or the complete new one, never a
// half-written mix: write `<path>.tmp.<pid>` in the same directory, fsync it, rename it over
// `path`, fsync the directory (so the rename itself survives a power cut — edge devices lose
// power). A writer that is destroyed without commit() removes its temp file, so a failed run
// leaves the destination exactly as it was.
//
// An existing destination keeps its permission bits. create() also removes stale
// `<name>.tmp.<pid>` files next to `path` whose process is gone (a writer killed mid-write).
// reserve(n) allocates the disk space up front, so a full disk fails before a long job, not after.
#pragma once

#include <cstddef>
#include <memory>
#include <string>

#include "core/status.h"

namespace edgetune {
namespace tools {

class AtomicFile {
 public:
  // Creates the temp file next to `path`. Fails (naming the directory and the reason) when the
  // directory does not exist or is not writable, or `path` is a directory.
  static Result<std::unique_ptr<AtomicFile>> create(const std::string& path);
  ~AtomicFile();  // abandons the write unless commit() succeeded
  AtomicFile(const AtomicFile&) = delete;
  AtomicFile& operator=(const AtomicFile&) = delete;

  // Allocates `size` bytes of disk for the temp file now (posix_fallocate); ENOSPC is an error
  // naming the directory. Writes then go into the reserved space; commit() trims any excess.
  Status reserve(size_t size);
  Status write(const void* data, size_t size);
  // fsync + close + rename over the destination + fsync of the directory.
  Status commit();

  // Test hook (edgetune-train's EDGETUNE_TEST_KILL): the process kills itself with SIGKILL once
  // `bytes` bytes are in the temp file, so tests can prove a write cut short loses nothing.
  void kill_after_bytes(size_t bytes) { kill_after_ = bytes; }

  const std::string& path() const { return path_; }
  const std::string& temp_path() const { return temp_; }
  size_t bytes_written() const { return written_; }

 private:
  AtomicFile(std::string path, std::string temp, int fd) : path_(std::move(path)), temp_(std::move(temp)), fd_(fd) {}
  void abandon();
  std::string path_, temp_;
  int fd_ = -1;
  size_t written_ = 0, reserved_ = 0, kill_after_ = 0;
  bool done_ = false;
};

// Fails now, with the reason, if `path` could not be written atomically later: creates and
// removes the temp file. Run before a long job so a typo in --out does not waste it.
Status check_writable(const std::string& path);

// The directory part of `path` ("." when it has none).
std::string parent_dir(const std::string& path);

// Removes `<basename of path>.tmp.<pid>` files in path's directory whose pid is not a live
// process (not this one). Returns how many it removed.
int remove_stale_temp_files(const std::string& path);

}  // namespace tools
}  // namespace edgetune
