// GoogleTest tests of tools/atomic_file.h: a committed write replaces the destination; an
// abandoned or failed one (missing directory, destination is a directory, the disk refusing a
// write) leaves it byte for byte as it was and no temp file behind. Suite: ToolsAtomicFile.
#include <gtest/gtest.h>

#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <csignal>
#include <string>
#include <vector>

#include "test_tools_util.h"
#include "tools/atomic_file.h"

namespace edgetune {
namespace tools {
namespace {

using tools_test::ScratchDir;

TEST(ToolsAtomicFile, CommitReplacesDestination) {
  ScratchDir dir;
  tools_test::write_file(dir / "out.bin", "old");
  auto f = AtomicFile::create(dir / "out.bin");
  ASSERT_TRUE(f.ok()) << f.status().to_string();
  EXPECT_NE(f.value()->temp_path().find("out.bin.tmp."), std::string::npos);
  ASSERT_TRUE(f.value()->write("new contents", 12).ok());
  EXPECT_EQ(tools_test::read_file(dir / "out.bin"), "old");  // nothing visible before commit
  ASSERT_TRUE(f.value()->commit().ok());
  EXPECT_EQ(tools_test::read_file(dir / "out.bin"), "new contents");
  EXPECT_EQ(dir.entries(), std::vector<std::string>{"out.bin"});
}

TEST(ToolsAtomicFile, AbandonedWriteKeepsDestination) {
  ScratchDir dir;
  tools_test::write_file(dir / "out.bin", "precious");
  {
    auto f = AtomicFile::create(dir / "out.bin");
    ASSERT_TRUE(f.ok());
    ASSERT_TRUE(f.value()->write("half", 4).ok());
  }  // destroyed without commit(), like a run that failed midway
  EXPECT_EQ(tools_test::read_file(dir / "out.bin"), "precious");
  EXPECT_EQ(dir.entries(), std::vector<std::string>{"out.bin"});
}

TEST(ToolsAtomicFile, MissingDirectoryFailsEarly) {
  ScratchDir dir;
  auto f = AtomicFile::create(dir / "no/such/dir/out.bin");
  ASSERT_FALSE(f.ok());
  EXPECT_EQ(f.status().code(), StatusCode::kIoError);
  EXPECT_NE(f.status().message().find("no/such/dir"), std::string::npos) << f.status().message();
  Status s = check_writable(dir / "no/such/dir/out.bin");
  EXPECT_FALSE(s.ok());
}

TEST(ToolsAtomicFile, DirectoryAsDestinationFails) {
  ScratchDir dir;
  Status s = check_writable(dir.path());
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.message().find("is a directory"), std::string::npos) << s.message();
  EXPECT_FALSE(check_writable(dir.path() + "/").ok());
  // A file where a directory should be.
  tools_test::write_file(dir / "file", "x");
  EXPECT_FALSE(check_writable(dir / "file/out.bin").ok());
}

TEST(ToolsAtomicFile, CheckWritableLeavesNoLitter) {
  ScratchDir dir;
  ASSERT_TRUE(check_writable(dir / "out.bin").ok());
  EXPECT_TRUE(dir.entries().empty());
}

// Runs `fn` with a file-size limit (RLIMIT_FSIZE) of `bytes` and SIGXFSZ ignored, so that writing
// past it fails with EFBIG for real, as a full disk would (ENOSPC); both are restored after.
template <typename Fn>
Status under_file_size_limit(rlim_t bytes, Fn fn) {
  struct rlimit old;
  if (getrlimit(RLIMIT_FSIZE, &old) != 0) return io_error("getrlimit failed");
  auto old_handler = std::signal(SIGXFSZ, SIG_IGN);
  struct rlimit lim = old;
  lim.rlim_cur = bytes;
  if (setrlimit(RLIMIT_FSIZE, &lim) != 0) return io_error("setrlimit failed");
  Status s = fn();
  setrlimit(RLIMIT_FSIZE, &old);
  std::signal(SIGXFSZ, old_handler);
  return s;
}

TEST(ToolsAtomicFile, FailedWriteKeepsDestination) {
  // Make the disk refuse the write for real: a file-size limit (RLIMIT_FSIZE) below what is
  // written turns write() into EFBIG once SIGXFSZ is ignored.
  ScratchDir dir;
  tools_test::write_file(dir / "out.bin", "precious");
  auto f = AtomicFile::create(dir / "out.bin");
  ASSERT_TRUE(f.ok());
  std::string big(4096, 'x');
  Status s = under_file_size_limit(1024, [&] { return f.value()->write(big.data(), big.size()); });
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.code(), StatusCode::kIoError);
  EXPECT_FALSE(f.value()->commit().ok());  // a failed writer cannot be committed
  EXPECT_EQ(tools_test::read_file(dir / "out.bin"), "precious");
  EXPECT_EQ(dir.entries(), std::vector<std::string>{"out.bin"});
}

TEST(ToolsAtomicFile, KeepsPermissionsOfAnExistingDestination) {
  ScratchDir dir;
  tools_test::write_file(dir / "out.bin", "old");
  ASSERT_EQ(chmod((dir / "out.bin").c_str(), 0600), 0);
  auto f = AtomicFile::create(dir / "out.bin");
  ASSERT_TRUE(f.ok());
  ASSERT_TRUE(f.value()->write("new", 3).ok());
  ASSERT_TRUE(f.value()->commit().ok());
  struct stat st;
  ASSERT_EQ(stat((dir / "out.bin").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 0600u);
  EXPECT_EQ(tools_test::read_file(dir / "out.bin"), "new");
}

TEST(ToolsAtomicFile, RemovesStaleTempFilesOfDeadProcessesOnly) {
  ScratchDir dir;
  pid_t child = fork();
  ASSERT_GE(child, 0);
  if (child == 0) _exit(0);
  ASSERT_EQ(waitpid(child, nullptr, 0), child);  // reaped: its pid names no process now
  const std::string dead = std::to_string(static_cast<long>(child));
  tools_test::write_file(dir / ("out.bin.tmp." + dead), "stale");
  tools_test::write_file(dir / "out.bin.tmp.1", "pid 1 is alive");
  tools_test::write_file(dir / ("other.bin.tmp." + dead), "not ours");
  tools_test::write_file(dir / "out.bin.tmp.x1", "not our pattern");
  auto f = AtomicFile::create(dir / "out.bin");
  ASSERT_TRUE(f.ok());
  auto names = dir.entries();
  auto has = [&](const std::string& n) { return std::find(names.begin(), names.end(), n) != names.end(); };
  EXPECT_FALSE(has("out.bin.tmp." + dead));
  EXPECT_TRUE(has("out.bin.tmp.1"));
  EXPECT_TRUE(has("other.bin.tmp." + dead));
  EXPECT_TRUE(has("out.bin.tmp.x1"));
}

TEST(ToolsAtomicFile, ReserveClaimsSpaceUpFrontAndCommitTrims) {
  ScratchDir dir;
  auto f = AtomicFile::create(dir / "out.bin");
  ASSERT_TRUE(f.ok());
  ASSERT_TRUE(f.value()->reserve(1 << 16).ok());
  struct stat st;
  ASSERT_EQ(stat(f.value()->temp_path().c_str(), &st), 0);
  EXPECT_EQ(st.st_size, 1 << 16);
  ASSERT_TRUE(f.value()->write("abc", 3).ok());
  ASSERT_TRUE(f.value()->commit().ok());
  EXPECT_EQ(tools_test::read_file(dir / "out.bin"), "abc");
}

TEST(ToolsAtomicFile, ReserveFailsWhenTheSpaceIsNotThere) {
  // A file-size limit below the reservation stands in for a full disk (EFBIG instead of ENOSPC).
  ScratchDir dir;
  tools_test::write_file(dir / "out.bin", "precious");
  auto f = AtomicFile::create(dir / "out.bin");
  ASSERT_TRUE(f.ok());
  Status s = under_file_size_limit(1024, [&] { return f.value()->reserve(1 << 20); });
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.message().find("not enough space"), std::string::npos) << s.message();
  EXPECT_EQ(tools_test::read_file(dir / "out.bin"), "precious");
  EXPECT_EQ(dir.entries(), std::vector<std::string>{"out.bin"});
}

TEST(ToolsAtomicFile, ParentDir) {
  EXPECT_EQ(parent_dir("out.bin"), ".");
  EXPECT_EQ(parent_dir("/out.bin"), "/");
  EXPECT_EQ(parent_dir("a/b/out.bin"), "a/b");
}

}  // namespace
}  // namespace tools
}  // namespace edgetune
