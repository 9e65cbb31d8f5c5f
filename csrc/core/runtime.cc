// Runtime: reading a plan file, the step loop, and the accessors. Verification and the three
// allocations are the loader's (core/plan_loader.h).
#include "core/runtime.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <limits>

#include "core/plan_loader.h"
#include "plan_generated.h"

namespace edgetune {

Runtime::~Runtime() {
  if (!device_) return;  // a load that failed before the device existed
  device_->release(persistent_);
  device_->release(arena_);
  device_->release(input_);
  if (input_host_ != input_) device_->release_host(input_host_);
}

Result<std::unique_ptr<Runtime>> Runtime::load(const uint8_t* data, size_t size, const RuntimeOptions& options) {
  return PlanLoader::load(data, size, options);
}

Result<std::unique_ptr<Runtime>> Runtime::load_file(const std::string& path, const RuntimeOptions& options) {
  // O_NONBLOCK: opening a FIFO must not wait for a writer. Only a regular file is read, and only
  // the size fstat gives (a device such as /dev/zero would otherwise be read until memory ran out).
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK);
  if (fd < 0) {
    const int e = errno;
    if (e == ENOENT) return not_found("cannot open plan file '" + path + "': " + std::strerror(e));
    return io_error("cannot open plan file '" + path + "': " + std::strerror(e));
  }
  struct stat st;
  if (::fstat(fd, &st) != 0) {
    const int e = errno;
    ::close(fd);
    return io_error("cannot stat plan file '" + path + "': " + std::strerror(e));
  }
  if (!S_ISREG(st.st_mode)) {
    ::close(fd);
    return invalid_argument("plan file '" + path + "' is not a regular file (" +
                            (S_ISDIR(st.st_mode) ? "a directory" : S_ISFIFO(st.st_mode) ? "a FIFO" : "a device or socket") +
                            "); give a .etp file");
  }
  if (static_cast<uint64_t>(st.st_size) > std::numeric_limits<size_t>::max() / 2) {
    ::close(fd);
    return out_of_memory("plan file '" + path + "' is too large (" + std::to_string(st.st_size) + " bytes)");
  }
  const size_t expected = static_cast<size_t>(st.st_size);
  std::unique_ptr<uint8_t, decltype(&std::free)> owned(static_cast<uint8_t*>(std::malloc(expected ? expected : 1)),
                                                        &std::free);
  if (!owned) {
    ::close(fd);
    return out_of_memory("cannot allocate " + std::to_string(expected) + " bytes to read plan file '" + path + "'");
  }
  size_t size = 0;
  while (size < expected) {
    const ssize_t got = ::read(fd, owned.get() + size, expected - size);
    if (got < 0) {
      if (errno == EINTR || errno == EAGAIN) continue;
      const int e = errno;
      ::close(fd);
      return io_error("reading plan file '" + path + "' failed: " + std::strerror(e));
    }
    if (got == 0) break;  // shrank while reading: the loader reports the truncation
    size += static_cast<size_t>(got);
  }
  ::close(fd);
  auto r = PlanLoader::load(owned.get(), size, options);
  if (!r.ok()) return r.status().with_context(path);
  return r;
}

Status Runtime::set_input(int index, const void* data, size_t nbytes) {
  if (index < 0 || index >= static_cast<int>(inputs_.size()))
    return invalid_argument("input index " + std::to_string(index) + " out of range");
  const Binding& b = inputs_[index];
  if (nbytes != b.view.nbytes())
    return invalid_argument("input '" + b.name + "' expects " + b.view.shape_string() + " (" +
                            std::to_string(b.view.nbytes()) + " bytes), got " + std::to_string(nbytes) + " bytes");
  // the input region and its host mirror (the region itself on cpu) have the same layout
  std::memcpy(input_host_ + (static_cast<uint8_t*>(b.view.data) - input_), data, nbytes);
  return Status::Ok();
}

// A binding of this runtime: `n` its size, its bytes inside one of the three regions (a Binding
// is a plain value: a stale or made-up one must not become a device copy from a wild address).
Status Runtime::check_binding(const Binding& b, size_t n, const char* what) const {
  if (n != b.view.nbytes())
    return invalid_argument(std::string(what) + " '" + b.name + "': " + b.view.shape_string() + " is " +
                            std::to_string(b.view.nbytes()) + " bytes, got a buffer of " + std::to_string(n));
  const uint8_t* p = static_cast<const uint8_t*>(b.view.data);
  auto inside = [&](const uint8_t* base, size_t size) {
    return base && p >= base && p <= base + size && n <= static_cast<size_t>(base + size - p);
  };
  if (!inside(persistent_, memory_.persistent_bytes) && !inside(arena_, memory_.arena_bytes) &&
      !inside(input_, memory_.input_bytes))
    return invalid_argument(std::string(what) + " '" + b.name + "': not a tensor of this runtime");
  return Status::Ok();
}

Status Runtime::read(const Binding& b, void* host, size_t n) const {
  ET_RETURN_IF_ERROR(check_binding(b, n, "reading"));
  return device_->copy_to_host(host, b.view.data, n).with_context("reading '" + b.name + "'");
}

Status Runtime::write(const Binding& b, const void* host, size_t n) {
  ET_RETURN_IF_ERROR(check_binding(b, n, "writing"));
  return device_->copy_to_device(b.view.data, host, n).with_context("writing '" + b.name + "'");
}

const void* Runtime::host_data(const Binding& b) const {
  return device_->host_accessible() ? b.view.data : nullptr;
}

Status Runtime::run_node(Node& n) {
  KernelArgs args{n.inputs.data(), static_cast<int>(n.inputs.size()), n.outputs.data(),
                  static_cast<int>(n.outputs.size()), &n.attrs, n.workspace, n.workspace_bytes, pool_.get(),
                  device_context_};
  Status st;
  if (profiling_) {
    auto t0 = std::chrono::steady_clock::now();
    st = n.kernel->run(args);
    n.seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    ++n.calls;
  } else {
    st = n.kernel->run(args);
  }
  if (!st.ok()) return Status(st.code(), n.op + (n.source.empty() ? "" : " at " + n.source) + ": " + st.message());
  return st;
}

bool Runtime::is_param_update(const Node& n) {
  return n.section == static_cast<int>(plan::Section::update) && n.op.size() > 7 &&
         n.op.compare(n.op.size() - 7, 7, "_update") == 0;
}

Status Runtime::loss_not_finite(float loss) const {
  char msg[200];
  std::snprintf(msg, sizeof msg,
                "loss is %s at step %lld; the step was stopped before any update, weights keep their "
                "last finite values",
                std::isnan(loss) ? "NaN" : "Inf", static_cast<long long>(steps_ + 1));
  return numeric_error(msg);
}

Status Runtime::update_refused(const std::string& why, int updates_done) const {
  // Updates run right after their gradient (reorder_updates), so earlier ones are in place.
  return numeric_error("step " + std::to_string(steps_ + 1) + " refused: " + why + "; " + std::to_string(updates_done) +
                       " earlier parameter update(s) of this step were applied, the rest were not, and no "
                       "weight or optimizer state holds inf or NaN");
}

Result<float> Runtime::step() {
  if (device_->runs_steps()) return device_->step(*this);  // cuda: CUDA Graphs (core/cuda_device.cu)
  int updates_done = 0;  // update nodes that ran this step (for the message when one refuses)
  for (size_t i = 0; i < nodes_.size(); ++i) {
    Node& n = nodes_[i];
    Status st = run_node(n);
    if (!st.ok()) {
      if (st.code() == StatusCode::kNumericError && n.section == static_cast<int>(plan::Section::update))
        return update_refused(st.message(), updates_done);
      return st;
    }
    if (is_param_update(n)) ++updates_done;
    if (n.produces_loss) {
      float loss = *loss_value_;
      if (!std::isfinite(loss)) return loss_not_finite(loss);
    }
  }
  for (const Copy& c : copies_) std::memcpy(c.dst.data, c.src.data, c.dst.nbytes());
  ++steps_;
  return *loss_value_;
}

Status Runtime::forward() {
  if (device_->runs_steps()) return device_->forward(*this);
  for (Node& n : nodes_)
    if (n.section == static_cast<int>(plan::Section::forward)) ET_RETURN_IF_ERROR(run_node(n));
  return Status::Ok();
}

void Runtime::reset_profile() {
  for (Node& n : nodes_) n.seconds = 0, n.calls = 0;
}

std::vector<Runtime::NodeProfile> Runtime::profile() const {
  std::vector<NodeProfile> out;
  for (const Node& n : nodes_) out.push_back({&n.op, &n.kernel->name, &n.source, n.section, n.seconds, n.calls});
  return out;
}

const Binding* Runtime::output(const std::string& name) const {
  for (const Binding& b : outputs_)
    if (b.name == name) return &b;
  return nullptr;
}

const Binding* Runtime::weight(const std::string& name) const {
  for (const Binding& b : weights_)
    if (b.name == name) return &b;
  return nullptr;
}

bool Runtime::is_baked(const std::string& name) const {
  for (const std::string& t : baked_)
    if (t == name) return true;
  return false;
}

std::vector<Runtime::ClassTargets> Runtime::class_targets() const {
  std::vector<ClassTargets> out;
  for (const Node& n : nodes_) {
    if ((n.op != "cross_entropy" && n.op != "nll_loss") || n.inputs.size() < 2) continue;
    const TensorView& scores = n.inputs[0];
    const TensorView& target = n.inputs[1];
    if (scores.rank != 2) continue;
    for (size_t i = 0; i < inputs_.size(); ++i) {
      if (inputs_[i].view.data != target.data || inputs_[i].view.nbytes() != target.nbytes()) continue;
      out.push_back({static_cast<int>(i), scores.shape[1], n.attrs.get_int("ignore_index", -100)});
    }
  }
  return out;
}

bool Runtime::is_trainable(const std::string& name) const {
  for (const std::string& t : trainable_)
    if (t == name) return true;
  return false;
}

}  // namespace edgetune
