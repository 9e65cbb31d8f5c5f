// Runtime: reading a plan file, the step loop, and the accessors. Verification and the three
// allocations are the loader's (core/plan_loader.h).
#include "core/runtime.h"

#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "core/plan_loader.h"
#include "plan_generated.h"

namespace edgetune {

Runtime::~Runtime() {
  std::free(persistent_);
  std::free(arena_);
  std::free(input_);
}

Result<std::unique_ptr<Runtime>> Runtime::load(const uint8_t* data, size_t size, const RuntimeOptions& options) {
  return PlanLoader::load(data, size, options);
}

Result<std::unique_ptr<Runtime>> Runtime::load_file(const std::string& path, const RuntimeOptions& options) {
  std::FILE* f = std::fopen(path.c_str(), "rb");
  if (!f) return not_found("cannot open plan file '" + path + "': " + std::strerror(errno));
  // read into a growing malloc'd buffer: works for pipes too, and a failed allocation is a Status
  uint8_t* bytes = nullptr;
  size_t size = 0, capacity = 0;
  bool failed = false, no_memory = false;
  for (;;) {
    if (size == capacity) {
      const size_t grown = capacity ? capacity * 2 : size_t{1} << 16;
      void* p = std::realloc(bytes, grown);
      if (!p) {
        no_memory = true;
        break;
      }
      bytes = static_cast<uint8_t*>(p);
      capacity = grown;
    }
    const size_t got = std::fread(bytes + size, 1, capacity - size, f);
    size += got;
    if (got == 0) {
      failed = std::ferror(f);
      break;
    }
  }
  std::fclose(f);
  std::unique_ptr<uint8_t, decltype(&std::free)> owned(bytes, &std::free);
  if (no_memory) return out_of_memory("cannot allocate memory to read plan file '" + path + "' (" +
                                      std::to_string(size) + " bytes read so far)");
  if (failed) return io_error("reading plan file '" + path + "' failed");
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
  std::memcpy(b.view.data, data, nbytes);
  return Status::Ok();
}

Status Runtime::run_node(Node& n) {
  KernelArgs args{n.inputs.data(), static_cast<int>(n.inputs.size()), n.outputs.data(),
                  static_cast<int>(n.outputs.size()), &n.attrs, n.workspace, n.workspace_bytes, pool_.get()};
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

Result<float> Runtime::step() {
  for (size_t i = 0; i < nodes_.size(); ++i) {
    Node& n = nodes_[i];
    ET_RETURN_IF_ERROR(run_node(n));
    if (n.produces_loss) {
      float loss = *loss_value_;
      if (!std::isfinite(loss)) {
        char msg[200];
        std::snprintf(msg, sizeof msg,
                      "loss is %s at step %lld; the step was stopped before any update, weights keep their "
                      "last finite values",
                      std::isnan(loss) ? "NaN" : "Inf", static_cast<long long>(steps_ + 1));
        return numeric_error(msg);
      }
    }
  }
  for (const Copy& c : copies_) std::memcpy(c.dst.data, c.src.data, c.dst.nbytes());
  ++steps_;
  return *loss_value_;
}

Status Runtime::forward() {
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

bool Runtime::is_trainable(const std::string& name) const {
  for (const std::string& t : trainable_)
    if (t == name) return true;
  return false;
}

}  // namespace edgetune
