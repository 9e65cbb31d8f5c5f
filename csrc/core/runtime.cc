// Runtime: plan verification, the three allocations, and the step loop.
//
// Loading trusts nothing in the file. In order: size and file identifier, the CRC-32 footer,
// the FlatBuffers verifier, the format version, then every tensor (dtype, shape, byte size,
// region bounds, alignment), every node (kernel registered, tensor indices, workspace bounds,
// the kernel's own check of dtypes/shapes/attrs and its workspace request), every binding and
// state copy. Only then is memory allocated and the persistent region initialised. Any failure
// is a kInvalidPlan Status naming the tensor or node; no kernel has run.
#include "core/runtime.h"

#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <set>

#include "core/crc32.h"
#include "plan_generated.h"

namespace edgetune {

namespace fb = ::edgetune::plan;

namespace {

constexpr uint32_t kFormatVersion = 1;
constexpr char kFooterMagic[4] = {'E', 'T', 'C', 'K'};
constexpr size_t kFooterSize = 8;
constexpr uint64_t kMaxRegionBytes = uint64_t{1} << 40;  // 1 TiB: anything larger is corrupt

uint8_t* alloc_region(size_t bytes, size_t alignment) {
  size_t rounded = (bytes + alignment - 1) / alignment * alignment;
  if (rounded == 0) rounded = alignment;
  void* p = std::aligned_alloc(alignment, rounded);
  if (p) std::memset(p, 0, rounded);
  return static_cast<uint8_t*>(p);
}

std::string node_where(size_t i, const fb::Node* n) {
  std::string s = "node " + std::to_string(i) + " (" + (n->op() ? n->op()->str() : "?") + ")";
  if (n->source() && n->source()->size()) s += " at " + n->source()->str();
  return s;
}

}  // namespace

class PlanLoader {
 public:
  static Result<std::unique_ptr<Runtime>> load(const uint8_t* data, size_t size, const RuntimeOptions& options);
};

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
  std::vector<uint8_t> bytes;
  uint8_t buf[1 << 16];
  size_t got;
  while ((got = std::fread(buf, 1, sizeof buf, f)) > 0) bytes.insert(bytes.end(), buf, buf + got);
  bool failed = std::ferror(f);
  std::fclose(f);
  if (failed) return io_error("reading plan file '" + path + "' failed");
  auto r = PlanLoader::load(bytes.data(), bytes.size(), options);
  if (!r.ok()) return r.status().with_context(path);
  return r;
}

Result<std::unique_ptr<Runtime>> PlanLoader::load(const uint8_t* data, size_t size, const RuntimeOptions& options) {
  // ---- container: identifier, footer, checksum, FlatBuffers verifier, version ----------------
  if (size < 8 + kFooterSize)
    return invalid_plan("plan file is truncated: " + std::to_string(size) + " bytes");
  if (std::memcmp(data + 4, fb::PlanIdentifier(), 4) != 0) {
    std::string got(reinterpret_cast<const char*>(data + 4), 4);
    for (char& c : got)
      if (c < 32 || c > 126) c = '?';
    return invalid_plan("not an edgetune plan: file identifier '" + got + "', expected 'ETPL'");
  }
  if (std::memcmp(data + size - 4, kFooterMagic, 4) != 0)
    return invalid_plan("plan file is truncated or damaged: its checksum footer is missing (" + std::to_string(size) +
                        " bytes)");
  size_t body_size = size - kFooterSize;
  uint32_t stored = 0;
  for (int i = 0; i < 4; ++i) stored |= uint32_t{data[body_size + i]} << (8 * i);
  uint32_t computed = crc32(data, body_size);
  if (stored != computed) {
    char msg[160];
    std::snprintf(msg, sizeof msg, "plan file is corrupt: checksum mismatch (stored %08x, computed %08x)", stored,
                  computed);
    return invalid_plan(msg);
  }

  std::unique_ptr<Runtime> rt(new Runtime());
  rt->plan_bytes_.assign(data, data + body_size);  // owned, heap-aligned copy for the verifier
  const uint8_t* body = rt->plan_bytes_.data();
  flatbuffers::Verifier verifier(body, body_size, /*max_depth=*/64, /*max_tables=*/50'000'000);
  if (!fb::VerifyPlanBuffer(verifier)) return invalid_plan("plan file failed FlatBuffers verification");
  const fb::Plan* plan = fb::GetPlan(body);
  if (plan->format_version() != kFormatVersion)
    return invalid_plan("plan format version " + std::to_string(plan->format_version()) + "; this runtime reads version " +
                        std::to_string(kFormatVersion) + " (recompile the plan with this edgetune)");

  // ---- regions -----------------------------------------------------------------------------------
  const uint64_t alignment = plan->alignment();
  if (alignment < 16 || alignment > 4096 || (alignment & (alignment - 1)))
    return invalid_plan("alignment " + std::to_string(alignment) + " is not a power of two in [16, 4096]");
  const uint64_t region_size[3] = {plan->persistent_bytes(), plan->arena_bytes(), plan->input_bytes()};
  const char* region_name[3] = {"persistent", "arena", "input"};
  for (int r = 0; r < 3; ++r)
    if (region_size[r] > kMaxRegionBytes)
      return invalid_plan(std::string(region_name[r]) + " region of " + std::to_string(region_size[r]) + " bytes");
  const auto* init = plan->persistent_init();
  if ((init ? init->size() : 0) != plan->persistent_bytes())
    return invalid_plan("persistent_init has " + std::to_string(init ? init->size() : 0) + " bytes, the plan declares " +
                        std::to_string(plan->persistent_bytes()));

  // ---- tensors -------------------------------------------------------------------------------------
  const auto* tensors = plan->tensors();
  const size_t num_tensors = tensors ? tensors->size() : 0;
  struct Placed {
    TensorView view;  // data = offset within region until memory exists
    int region;
    uint64_t offset;
  };
  std::vector<Placed> placed(num_tensors);
  for (size_t i = 0; i < num_tensors; ++i) {
    const fb::Tensor* t = tensors->Get(i);
    std::string where = "tensor " + std::to_string(i) + " '" + t->name()->str() + "'";
    int dt = static_cast<int>(t->dtype());
    if (dt < 0 || dt >= kNumDTypes) return invalid_plan(where + ": unknown dtype code " + std::to_string(dt));
    Placed& p = placed[i];
    p.view.dtype = static_cast<DType>(dt);
    size_t rank = t->shape() ? t->shape()->size() : 0;
    if (rank > static_cast<size_t>(kMaxRank)) return invalid_plan(where + ": rank " + std::to_string(rank) + " > 8");
    p.view.rank = static_cast<int>(rank);
    uint64_t numel = 1;
    for (size_t d = 0; d < rank; ++d) {
      int64_t dim = t->shape()->Get(d);
      if (dim < 0 || (dim > 0 && numel > kMaxRegionBytes / static_cast<uint64_t>(dim)))
        return invalid_plan(where + ": bad dimension " + std::to_string(dim));
      p.view.shape[d] = dim;
      numel *= static_cast<uint64_t>(dim);
    }
    if (numel * dtype_size(p.view.dtype) != t->nbytes())
      return invalid_plan(where + ": " + std::to_string(t->nbytes()) + " bytes for " + p.view.shape_string());
    int region = static_cast<int>(t->region());
    if (region < 0 || region > 2) return invalid_plan(where + ": unknown region " + std::to_string(region));
    if (t->offset() % alignment) return invalid_plan(where + ": offset " + std::to_string(t->offset()) + " not aligned");
    if (t->offset() > region_size[region] || t->nbytes() > region_size[region] - t->offset())
      return invalid_plan(where + ": bytes [" + std::to_string(t->offset()) + ", " +
                          std::to_string(t->offset() + t->nbytes()) + ") outside the " + region_name[region] +
                          " region of " + std::to_string(region_size[region]) + " bytes");
    p.region = region;
    p.offset = t->offset();
  }
  auto tensor_index_ok = [&](uint32_t idx) { return idx < num_tensors; };

  // ---- memory: the only allocations the runtime makes ---------------------------------------------
  rt->persistent_ = alloc_region(region_size[0], alignment);
  rt->arena_ = alloc_region(region_size[1], alignment);
  rt->input_ = alloc_region(region_size[2], alignment);
  if (!rt->persistent_ || !rt->arena_ || !rt->input_)
    return Status(StatusCode::kIoError, "cannot allocate " + std::to_string(region_size[0] + region_size[1] + region_size[2]) +
                                            " bytes for the plan's memory");
  if (region_size[0]) std::memcpy(rt->persistent_, init->data(), region_size[0]);
  uint8_t* base[3] = {rt->persistent_, rt->arena_, rt->input_};
  for (Placed& p : placed) p.view.data = base[p.region] + p.offset;
  rt->memory_ = {region_size[0], region_size[1], region_size[2]};

  // ---- nodes ---------------------------------------------------------------------------------------
  const KernelRegistry* registry = KernelRegistry::for_backend(options.backend);
  if (!registry) return unimplemented("backend '" + options.backend + "' is not built into this runtime");
  rt->pool_.reset(new ThreadPool(options.num_threads));
  const auto* nodes = plan->nodes();
  const size_t num_nodes = nodes ? nodes->size() : 0;
  rt->nodes_.resize(num_nodes);
  for (size_t i = 0; i < num_nodes; ++i) {
    const fb::Node* n = nodes->Get(i);
    std::string where = node_where(i, n);
    Runtime::Node& node = rt->nodes_[i];
    node.op = n->op()->str();
    node.source = n->source() ? n->source()->str() : "";
    node.kernel = registry->find(n->kernel()->str());
    if (!node.kernel)
      return invalid_plan(where + ": kernel '" + n->kernel()->str() + "' is not registered for backend '" +
                          options.backend + "'");
    int section = static_cast<int>(n->section());
    if (section < 0 || section > 3) return invalid_plan(where + ": unknown section " + std::to_string(section));
    node.section = section;
    if (n->inputs())
      for (uint32_t idx : *n->inputs()) {
        if (!tensor_index_ok(idx)) return invalid_plan(where + ": input tensor index " + std::to_string(idx) + " out of range");
        node.inputs.push_back(placed[idx].view);
      }
    if (n->outputs())
      for (uint32_t idx : *n->outputs()) {
        if (!tensor_index_ok(idx)) return invalid_plan(where + ": output tensor index " + std::to_string(idx) + " out of range");
        if (placed[idx].region == 2) return invalid_plan(where + ": writes into the input region");
        node.outputs.push_back(placed[idx].view);
      }
    if (n->attrs())
      for (const fb::Attr* a : *n->attrs()) {
        Attr attr;
        attr.name = a->name()->str();
        int kind = static_cast<int>(a->kind());
        if (kind < 0 || kind > 4) return invalid_plan(where + ": attribute '" + attr.name + "' has unknown kind");
        attr.kind = static_cast<AttrKind>(kind);
        attr.i = a->i();
        attr.f = a->f();
        if (a->ints()) attr.ints.assign(a->ints()->begin(), a->ints()->end());
        if (a->floats()) attr.floats.assign(a->floats()->begin(), a->floats()->end());
        if (a->s()) attr.s = a->s()->str();
        node.attrs.add(std::move(attr));
      }
    if (n->workspace_offset() % alignment || n->workspace_offset() > region_size[1] ||
        n->workspace_bytes() > region_size[1] - n->workspace_offset())
      return invalid_plan(where + ": workspace outside the arena");
    node.workspace = n->workspace_bytes() ? rt->arena_ + n->workspace_offset() : nullptr;
    node.workspace_bytes = n->workspace_bytes();

    KernelArgs args{node.inputs.data(), static_cast<int>(node.inputs.size()), node.outputs.data(),
                    static_cast<int>(node.outputs.size()), &node.attrs, node.workspace, node.workspace_bytes,
                    rt->pool_.get()};
    if (node.kernel->check) {
      Status st = node.kernel->check(args);
      if (!st.ok()) return invalid_plan(where + ": " + st.message());
    }
    size_t need = node.kernel->workspace ? node.kernel->workspace(args) : 0;
    if (need > node.workspace_bytes)
      return invalid_plan(where + ": kernel '" + node.kernel->name + "' needs " + std::to_string(need) +
                          " workspace bytes, the plan reserves " + std::to_string(node.workspace_bytes));
  }

  // ---- bindings ------------------------------------------------------------------------------------
  auto read_bindings = [&](const flatbuffers::Vector<flatbuffers::Offset<fb::Binding>>* v, const char* what,
                           std::vector<Binding>* out) -> Status {
    std::set<std::string> seen;
    if (!v) return Status::Ok();
    for (const fb::Binding* b : *v) {
      if (!tensor_index_ok(b->tensor()))
        return invalid_plan(std::string(what) + " '" + b->name()->str() + "': tensor index out of range");
      if (!seen.insert(b->name()->str()).second)
        return invalid_plan(std::string(what) + " '" + b->name()->str() + "' is bound twice");
      out->push_back({b->name()->str(), placed[b->tensor()].view});
    }
    return Status::Ok();
  };
  ET_RETURN_IF_ERROR(read_bindings(plan->inputs(), "input", &rt->inputs_));
  ET_RETURN_IF_ERROR(read_bindings(plan->outputs(), "output", &rt->outputs_));
  ET_RETURN_IF_ERROR(read_bindings(plan->weights(), "weight", &rt->weights_));
  ET_RETURN_IF_ERROR(read_bindings(plan->optimizer_state(), "optimizer state", &rt->optimizer_state_));
  if (plan->inputs())
    for (const fb::Binding* b : *plan->inputs())
      if (placed[b->tensor()].region != 2) return invalid_plan("input '" + b->name()->str() + "' is not in the input region");
  if (plan->num_model_inputs() > rt->inputs_.size()) return invalid_plan("num_model_inputs exceeds the inputs");
  rt->num_model_inputs_ = static_cast<int>(plan->num_model_inputs());
  if (plan->baked())
    for (const auto* s : *plan->baked()) {
      if (!rt->weight(s->str())) return invalid_plan("baked '" + s->str() + "' is not a weight");
      rt->baked_.push_back(s->str());
    }
  if (plan->trainable())
    for (const auto* s : *plan->trainable()) {
      if (!rt->weight(s->str())) return invalid_plan("trainable '" + s->str() + "' is not a weight");
      rt->trainable_.push_back(s->str());
    }
  const Binding* loss = rt->output("loss");
  if (!loss || loss->view.dtype != DType::f32 || loss->view.numel() != 1)
    return invalid_plan("the plan has no scalar f32 output 'loss'");
  rt->loss_value_ = static_cast<const float*>(loss->view.data);
  for (size_t i = 0; i < num_nodes; ++i)
    for (const TensorView& o : rt->nodes_[i].outputs)
      if (o.data == loss->view.data) rt->nodes_[i].produces_loss = true;
  if (plan->assigns())
    for (const fb::Copy* c : *plan->assigns()) {
      if (!tensor_index_ok(c->src()) || !tensor_index_ok(c->dst()))
        return invalid_plan("state copy: tensor index out of range");
      const Placed& s = placed[c->src()];
      const Placed& d = placed[c->dst()];
      if (d.region != 0 || s.view.nbytes() != d.view.nbytes())
        return invalid_plan("state copy into '" + tensors->Get(c->dst())->name()->str() + "' is malformed");
      rt->copies_.push_back({s.view, d.view});
    }
  rt->model_label_ = plan->model() ? plan->model()->str() : "";
  return rt;
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
    if (n.section == 0) ET_RETURN_IF_ERROR(run_node(n));
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
