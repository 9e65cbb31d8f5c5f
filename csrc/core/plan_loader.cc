// PlanLoader: the plan file verified step by step (see plan_loader.h for the order).
#include "core/plan_loader.h"

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <new>
#include <set>
#include <string>
#include <vector>

#include "core/crc32.h"
#include "core/sha256.h"
#include "plan_generated.h"

namespace edgetune {

namespace fb = ::edgetune::plan;

namespace {

constexpr uint32_t kFormatVersion = 1;
constexpr char kFooterMagic[4] = {'E', 'T', 'C', 'K'};
constexpr size_t kFooterSize = 8;                        // CRC-32 (little-endian) + "ETCK"
constexpr uint64_t kMaxRegionBytes = uint64_t{1} << 40;  // 1 TiB: anything larger is corrupt

// Whether `s` is well-formed UTF-8 (no overlong forms, surrogates or code points past U+10FFFF).
// FlatBuffers strings are meant to be UTF-8 but its verifier does not check them; the names a
// runtime hands out reach Python (pybind11 decodes them) and file headers, so a damaged one is
// refused at load (found by the atheris fuzzer, tests/fuzz/atheris_readers.py).
bool valid_utf8(const flatbuffers::String* s) {
  if (!s) return true;
  const auto* p = reinterpret_cast<const unsigned char*>(s->data());
  const size_t n = s->size();
  for (size_t i = 0; i < n;) {
    const unsigned c = p[i];
    size_t len;
    unsigned cp;
    if (c < 0x80) { ++i; continue; }
    if ((c & 0xE0) == 0xC0) len = 2, cp = c & 0x1F;
    else if ((c & 0xF0) == 0xE0) len = 3, cp = c & 0x0F;
    else if ((c & 0xF8) == 0xF0) len = 4, cp = c & 0x07;
    else return false;
    if (i + len > n) return false;
    for (size_t k = 1; k < len; ++k) {
      if ((p[i + k] & 0xC0) != 0x80) return false;
      cp = (cp << 6) | (p[i + k] & 0x3F);
    }
    static const unsigned kMin[5] = {0, 0, 0x80, 0x800, 0x10000};
    if (cp < kMin[len] || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return false;
    i += len;
  }
  return true;
}

// The elements of an 8-byte vector ([long], [double]) copied out with memcpy. FlatBuffers' verifier
// checks the alignment of a vector's 4-byte length, not of its 8-byte elements, so a plan that
// verifies can still put them at an address that is 4 mod 8 (found by csrc/fuzz/fuzz_plan_loader:
// reproducers/plan_loader/ubsan_misaligned_*.etp); reading them through a typed pointer is then
// undefined behaviour. FlatBuffers data are little-endian, as are the targets (x86-64, aarch64).
template <typename T>
std::vector<T> copy_vector(const flatbuffers::Vector<T>* v) {
  static_assert(flatbuffers::is_same<T, int64_t>::value || flatbuffers::is_same<T, double>::value,
                "for 8-byte scalars");
  std::vector<T> out(v ? v->size() : 0);
  if (!out.empty()) std::memcpy(out.data(), v->Data(), out.size() * sizeof(T));
  return out;
}

bool region_known(fb::Region r) { return !flatbuffers::IsOutRange(r, fb::Region::MIN, fb::Region::MAX); }

const char* region_name(fb::Region r) { return fb::EnumNameRegion(r); }

// The runtime's dtype of a plan dtype; false for a code this runtime does not know.
bool runtime_dtype(fb::DType in, DType* out) {
  switch (in) {
    case fb::DType::f32: *out = DType::f32; return true;
    case fb::DType::f64: *out = DType::f64; return true;
    case fb::DType::f16: *out = DType::f16; return true;
    case fb::DType::bf16: *out = DType::bf16; return true;
    case fb::DType::i64: *out = DType::i64; return true;
    case fb::DType::i32: *out = DType::i32; return true;
    case fb::DType::i8: *out = DType::i8; return true;
    case fb::DType::u8: *out = DType::u8; return true;
    case fb::DType::bool_: *out = DType::boolean; return true;
  }
  return false;
}

bool runtime_attr_kind(fb::AttrKind in, AttrKind* out) {
  switch (in) {
    case fb::AttrKind::int_: *out = AttrKind::kInt; return true;
    case fb::AttrKind::float_: *out = AttrKind::kFloat; return true;
    case fb::AttrKind::ints: *out = AttrKind::kInts; return true;
    case fb::AttrKind::floats: *out = AttrKind::kFloats; return true;
    case fb::AttrKind::string_: *out = AttrKind::kString; return true;
  }
  return false;
}

std::string node_where(size_t i, const fb::Node* n) {
  std::string s = "node " + std::to_string(i) + " (" + (n->op() ? n->op()->str() : "?") + ")";
  if (n->source() && n->source()->size()) s += " at " + n->source()->str();
  return s;
}

}  // namespace

Result<std::unique_ptr<Runtime>> PlanLoader::load(const uint8_t* data, size_t size, const RuntimeOptions& options) {
  PlanLoader loader(options);
  ET_RETURN_IF_ERROR(loader.load_container(data, size));
  ET_RETURN_IF_ERROR(loader.load_regions());
  ET_RETURN_IF_ERROR(loader.load_tensors());
  ET_RETURN_IF_ERROR(loader.allocate_memory());
  ET_RETURN_IF_ERROR(loader.load_nodes());
  ET_RETURN_IF_ERROR(loader.load_bindings());
  ET_RETURN_IF_ERROR(loader.load_export());
  ET_RETURN_IF_ERROR(loader.rt_->device_->prepare(*loader.rt_));  // cuda: guard, pinned loss, step split
  loader.rt_->plan_sha256_ = sha256_hex(data, size);  // the whole file, footer included: what a checkpoint names
  return std::move(loader.rt_);
}

uint64_t PlanLoader::region_size(fb::Region r) const {
  switch (r) {
    case fb::Region::persistent: return plan_->persistent_bytes();
    case fb::Region::arena: return plan_->arena_bytes();
    case fb::Region::input: return plan_->input_bytes();
  }
  return 0;
}

// ---- 1. container: identifier, footer, checksum, FlatBuffers verifier, version ------------------
Status PlanLoader::load_container(const uint8_t* data, size_t size) {
  if (size < 8 + kFooterSize) return invalid_plan("plan file is truncated: " + std::to_string(size) + " bytes");
  if (std::memcmp(data + 4, fb::PlanIdentifier(), 4) != 0) {
    std::string got(reinterpret_cast<const char*>(data + 4), 4);
    for (char& c : got)
      if (c < 32 || c > 126) c = '?';
    return invalid_plan("not an edgetune plan: file identifier '" + got + "', expected '" + fb::PlanIdentifier() + "'");
  }
  if (std::memcmp(data + size - 4, kFooterMagic, 4) != 0)
    return invalid_plan("plan file is truncated or damaged: its checksum footer is missing (" + std::to_string(size) +
                        " bytes)");
  const size_t body_size = size - kFooterSize;
  uint32_t stored = 0;
  for (int i = 0; i < 4; ++i) stored |= uint32_t{data[body_size + i]} << (8 * i);
  const uint32_t computed = crc32(data, body_size);
  if (stored != computed) {
    char msg[160];
    std::snprintf(msg, sizeof msg, "plan file is corrupt: checksum mismatch (stored %08x, computed %08x)", stored,
                  computed);
    return invalid_plan(msg);
  }

  // An owned copy (operator new's alignment) for the verifier and the reads below; freed after load.
  body_.reset(new (std::nothrow) uint8_t[body_size]);
  if (!body_) return out_of_memory("cannot allocate " + std::to_string(body_size) + " bytes to read the plan");
  std::memcpy(body_.get(), data, body_size);
  flatbuffers::Verifier verifier(body_.get(), body_size, /*max_depth=*/64, /*max_tables=*/50'000'000);
  if (!fb::VerifyPlanBuffer(verifier)) return invalid_plan("plan file failed FlatBuffers verification");
  plan_ = fb::GetPlan(body_.get());
  if (plan_->format_version() != kFormatVersion)
    return invalid_plan("plan format version " + std::to_string(plan_->format_version()) +
                        "; this runtime reads version " + std::to_string(kFormatVersion) +
                        " (recompile the plan with this edgetune)");
  return Status::Ok();
}

// ---- 1b. regions: alignment, sizes, the persistent region's initial bytes -------------------------
Status PlanLoader::load_regions() {
  alignment_ = plan_->alignment();
  if (alignment_ < 16 || alignment_ > 4096 || (alignment_ & (alignment_ - 1)))
    return invalid_plan("alignment " + std::to_string(alignment_) + " is not a power of two in [16, 4096]");
  for (fb::Region r : fb::EnumValuesRegion())
    if (region_size(r) > kMaxRegionBytes)
      return invalid_plan(std::string(region_name(r)) + " region of " + std::to_string(region_size(r)) + " bytes");
  const auto* init = plan_->persistent_init();
  if ((init ? init->size() : 0) != plan_->persistent_bytes())
    return invalid_plan("persistent_init has " + std::to_string(init ? init->size() : 0) +
                        " bytes, the plan declares " + std::to_string(plan_->persistent_bytes()));
  return Status::Ok();
}

// ---- 2. tensors ----------------------------------------------------------------------------------
Status PlanLoader::load_tensors() {
  const auto* tensors = plan_->tensors();
  const size_t num_tensors = tensors ? tensors->size() : 0;
  placed_.resize(num_tensors);
  for (size_t i = 0; i < num_tensors; ++i) {
    const fb::Tensor* t = tensors->Get(i);
    const std::string where = "tensor " + std::to_string(i) + " '" + t->name()->str() + "'";
    Placed& p = placed_[i];
    if (!runtime_dtype(t->dtype(), &p.view.dtype))
      return invalid_plan(where + ": unknown dtype code " + std::to_string(static_cast<int>(t->dtype())));
    const size_t rank = t->shape() ? t->shape()->size() : 0;
    if (rank > static_cast<size_t>(kMaxRank))
      return invalid_plan(where + ": rank " + std::to_string(rank) + " > " + std::to_string(kMaxRank));
    p.view.rank = static_cast<int>(rank);
    const std::vector<int64_t> shape = copy_vector(t->shape());
    uint64_t numel = 1;
    for (size_t d = 0; d < rank; ++d) {
      const int64_t dim = shape[d];
      if (dim < 0 || (dim > 0 && numel > kMaxRegionBytes / static_cast<uint64_t>(dim)))
        return invalid_plan(where + ": bad dimension " + std::to_string(dim));
      p.view.shape[d] = dim;
      numel *= static_cast<uint64_t>(dim);
    }
    if (numel * dtype_size(p.view.dtype) != t->nbytes())
      return invalid_plan(where + ": " + std::to_string(t->nbytes()) + " bytes for " + p.view.shape_string());
    const fb::Region region = t->region();
    if (!region_known(region))
      return invalid_plan(where + ": unknown region " + std::to_string(static_cast<int>(region)));
    if (t->offset() % alignment_)
      return invalid_plan(where + ": offset " + std::to_string(t->offset()) + " not aligned");
    const uint64_t size = region_size(region);
    if (t->offset() > size || t->nbytes() > size - t->offset())
      return invalid_plan(where + ": bytes [" + std::to_string(t->offset()) + ", " +
                          std::to_string(t->offset() + t->nbytes()) + ") outside the " + region_name(region) +
                          " region of " + std::to_string(size) + " bytes");
    p.region = region;
    p.offset = t->offset();
  }
  return Status::Ok();
}

// ---- 3. memory: the only allocations the runtime makes ------------------------------------------
// On the backend's device (core/device.h): one allocation per region (the arena is one block, as
// planned), the persistent region initialised by one copy of persistent_init, and on a device the
// host cannot read (cuda) a host mirror of the input region for set_input (pinned: the step copies
// it in asynchronously).
Status PlanLoader::allocate_memory() {
  rt_.reset(new (std::nothrow) Runtime());
  if (!rt_) return out_of_memory("cannot allocate the runtime");
  // The registry first: a backend this build lacks is named as such, before any device is touched.
  if (!KernelRegistry::for_backend(options_.backend) && options_.backend != "cuda")
    return unimplemented("backend '" + options_.backend + "' is not built into this runtime");
  auto device = make_device(options_.backend);
  if (!device.ok()) return device.status();
  rt_->device_ = std::move(device).value();
  Device& dev = *rt_->device_;
  rt_->device_context_ = dev.kernel_context();
  const uint64_t persistent = region_size(fb::Region::persistent);
  const uint64_t arena = region_size(fb::Region::arena);
  const uint64_t input = region_size(fb::Region::input);
  auto fail = [&](const Status& why) {
    return out_of_memory("cannot allocate " + std::to_string(persistent + arena + input) + " bytes of " +
                         dev.backend() + " memory for the plan (persistent " + std::to_string(persistent) +
                         ", arena " + std::to_string(arena) + ", input " + std::to_string(input) + "): " +
                         why.message());
  };
  for (auto [size, dst] : {std::make_pair(persistent, &rt_->persistent_), std::make_pair(arena, &rt_->arena_),
                           std::make_pair(input, &rt_->input_)}) {
    auto p = dev.allocate(static_cast<size_t>(size), alignment_);
    if (!p.ok()) return fail(p.status());
    *dst = p.value();
  }
  if (dev.host_accessible()) {
    rt_->input_host_ = rt_->input_;
  } else {
    auto p = dev.allocate_host(static_cast<size_t>(input));
    if (!p.ok()) return fail(p.status());
    rt_->input_host_ = p.value();
  }
  if (persistent)
    ET_RETURN_IF_ERROR(dev.copy_to_device(rt_->persistent_, plan_->persistent_init()->data(), persistent)
                           .with_context("initialising the persistent region"));
  for (Placed& p : placed_) {
    uint8_t* base = p.region == fb::Region::persistent ? rt_->persistent_
                    : p.region == fb::Region::arena    ? rt_->arena_
                                                       : rt_->input_;
    p.view.data = base + p.offset;
  }
  rt_->memory_ = {persistent, arena, input};
  return Status::Ok();
}

// ---- 4. nodes: kernels, sections, tensors, attributes, check() and workspace ----------------------
Status PlanLoader::load_nodes() {
  const KernelRegistry* registry = KernelRegistry::for_backend(options_.backend);
  if (!registry) return unimplemented("backend '" + options_.backend + "' is not built into this runtime");
  if (options_.num_threads > ThreadPool::kMaxThreads) {
    return invalid_argument("threads=" + std::to_string(options_.num_threads) + " is more than the maximum of " +
                            std::to_string(ThreadPool::kMaxThreads));
  }
  // cuda runs no cpu kernels: one thread (the pool exists because KernelArgs carries one)
  rt_->pool_.reset(new ThreadPool(rt_->device_->runs_steps() ? 1 : options_.num_threads));
  if (!rt_->pool_->start_status().ok()) return rt_->pool_->start_status();
  const uint64_t arena_bytes = region_size(fb::Region::arena);
  const auto* nodes = plan_->nodes();
  const size_t num_nodes = nodes ? nodes->size() : 0;
  rt_->nodes_.resize(num_nodes);
  for (size_t i = 0; i < num_nodes; ++i) {
    const fb::Node* n = nodes->Get(i);
    const std::string where = node_where(i, n);
    Runtime::Node& node = rt_->nodes_[i];
    node.op = n->op()->str();
    if (!valid_utf8(n->source())) return invalid_plan(where + ": source text is not valid UTF-8");
    node.source = n->source() ? n->source()->str() : "";
    node.kernel = registry->find(n->kernel()->str());
    if (!node.kernel)
      return invalid_plan(where + ": kernel '" + n->kernel()->str() + "' is not registered for backend '" +
                          options_.backend + "'");
    const fb::Section section = n->section();
    if (flatbuffers::IsOutRange(section, fb::Section::MIN, fb::Section::MAX))
      return invalid_plan(where + ": unknown section " + std::to_string(static_cast<int>(section)));
    node.section = static_cast<int>(section);
    if (n->inputs())
      for (uint32_t idx : *n->inputs()) {
        if (!tensor_index_ok(idx))
          return invalid_plan(where + ": input tensor index " + std::to_string(idx) + " out of range");
        node.inputs.push_back(placed_[idx].view);
      }
    if (n->outputs())
      for (uint32_t idx : *n->outputs()) {
        if (!tensor_index_ok(idx))
          return invalid_plan(where + ": output tensor index " + std::to_string(idx) + " out of range");
        if (placed_[idx].region == fb::Region::input) return invalid_plan(where + ": writes into the input region");
        node.outputs.push_back(placed_[idx].view);
      }
    if (n->attrs())
      for (const fb::Attr* a : *n->attrs()) {
        Attr attr;
        attr.name = a->name()->str();
        if (!runtime_attr_kind(a->kind(), &attr.kind))
          return invalid_plan(where + ": attribute '" + attr.name + "' has unknown kind");
        attr.i = a->i();
        attr.f = a->f();
        if (a->ints()) attr.ints = copy_vector(a->ints());
        if (a->floats()) attr.floats = copy_vector(a->floats());
        if (a->s()) attr.s = a->s()->str();
        node.attrs.add(std::move(attr));
      }
    if (n->workspace_offset() % alignment_ || n->workspace_offset() > arena_bytes ||
        n->workspace_bytes() > arena_bytes - n->workspace_offset())
      return invalid_plan(where + ": workspace outside the arena");
    node.workspace = n->workspace_bytes() ? rt_->arena_ + n->workspace_offset() : nullptr;
    node.workspace_bytes = n->workspace_bytes();

    KernelArgs args{node.inputs.data(),  static_cast<int>(node.inputs.size()),
                    node.outputs.data(), static_cast<int>(node.outputs.size()),
                    &node.attrs,         node.workspace,
                    node.workspace_bytes, rt_->pool_.get(),
                    rt_->device_context_};
    if (node.kernel->check) {
      Status st = node.kernel->check(args);
      if (!st.ok()) return invalid_plan(where + ": " + st.message());
    }
    const size_t need = node.kernel->workspace ? node.kernel->workspace(args) : 0;
    if (need > node.workspace_bytes)
      return invalid_plan(where + ": kernel '" + node.kernel->name + "' needs " + std::to_string(need) +
                          " workspace bytes, the plan reserves " + std::to_string(node.workspace_bytes));
  }
  return Status::Ok();
}

// ---- 5. bindings: names, the loss, state copies ---------------------------------------------------
Status PlanLoader::load_bindings() {
  auto read_bindings = [&](const flatbuffers::Vector<flatbuffers::Offset<fb::Binding>>* v, const char* what,
                           std::vector<Binding>* out) -> Status {
    std::set<std::string> seen;
    if (!v) return Status::Ok();
    for (const fb::Binding* b : *v) {
      if (!valid_utf8(b->name()))
        return invalid_plan(std::string(what) + " name is not valid UTF-8");
      if (!tensor_index_ok(b->tensor()))
        return invalid_plan(std::string(what) + " '" + b->name()->str() + "': tensor index out of range");
      if (!seen.insert(b->name()->str()).second)
        return invalid_plan(std::string(what) + " '" + b->name()->str() + "' is bound twice");
      out->push_back({b->name()->str(), placed_[b->tensor()].view});
    }
    return Status::Ok();
  };
  ET_RETURN_IF_ERROR(read_bindings(plan_->inputs(), "input", &rt_->inputs_));
  ET_RETURN_IF_ERROR(read_bindings(plan_->outputs(), "output", &rt_->outputs_));
  ET_RETURN_IF_ERROR(read_bindings(plan_->weights(), "weight", &rt_->weights_));
  ET_RETURN_IF_ERROR(read_bindings(plan_->optimizer_state(), "optimizer state", &rt_->optimizer_state_));
  if (plan_->inputs())
    for (const fb::Binding* b : *plan_->inputs())
      if (placed_[b->tensor()].region != fb::Region::input)
        return invalid_plan("input '" + b->name()->str() + "' is not in the input region");
  if (plan_->num_model_inputs() > rt_->inputs_.size()) return invalid_plan("num_model_inputs exceeds the inputs");
  rt_->num_model_inputs_ = static_cast<int>(plan_->num_model_inputs());
  if (plan_->baked())
    for (const auto* s : *plan_->baked()) {
      if (!rt_->weight(s->str())) return invalid_plan("baked '" + s->str() + "' is not a weight");
      rt_->baked_.push_back(s->str());
    }
  if (plan_->trainable())
    for (const auto* s : *plan_->trainable()) {
      if (!rt_->weight(s->str())) return invalid_plan("trainable '" + s->str() + "' is not a weight");
      rt_->trainable_.push_back(s->str());
    }
  const Binding* loss = rt_->output("loss");
  if (!loss || loss->view.dtype != DType::f32 || loss->view.numel() != 1)
    return invalid_plan("the plan has no scalar f32 output 'loss'");
  rt_->loss_value_ = static_cast<const float*>(loss->view.data);
  for (Runtime::Node& node : rt_->nodes_)
    for (const TensorView& o : node.outputs)
      if (o.data == loss->view.data) node.produces_loss = true;
  if (plan_->assigns())
    for (const fb::Copy* c : *plan_->assigns()) {
      if (!tensor_index_ok(c->src()) || !tensor_index_ok(c->dst()))
        return invalid_plan("state copy: tensor index out of range");
      const Placed& s = placed_[c->src()];
      const Placed& d = placed_[c->dst()];
      if (d.region != fb::Region::persistent || s.view.nbytes() != d.view.nbytes())
        return invalid_plan("state copy into '" + plan_->tensors()->Get(c->dst())->name()->str() + "' is malformed");
      rt_->copies_.push_back({s.view, d.view});
    }
  if (!valid_utf8(plan_->model())) return invalid_plan("the model label is not valid UTF-8");
  rt_->model_label_ = plan_->model() ? plan_->model()->str() : "";
  return Status::Ok();
}

// ---- 6. export: the adapters' recipes, copied out ------------------------------------------------
Status PlanLoader::load_export() {
  const fb::Export* e = plan_->export_();
  if (!e) return Status::Ok();
  auto strings = [](const flatbuffers::Vector<flatbuffers::Offset<flatbuffers::String>>* v) {
    std::vector<std::string> out;
    if (v)
      for (const auto* s : *v) out.push_back(s ? s->str() : std::string());
    return out;
  };
  auto tensors = [](const flatbuffers::Vector<flatbuffers::Offset<fb::ExportTensor>>* v) {
    std::vector<ExportTensor> out;
    if (!v) return out;
    out.reserve(v->size());
    for (const fb::ExportTensor* t : *v) {
      ExportTensor et;
      et.name = t->name()->str();
      if (t->steps())
        for (const fb::ExportStep* s : *t->steps()) {
          ExportStep step;
          step.op = s->op()->str();
          step.name = s->name() ? s->name()->str() : std::string();
          step.ints = copy_vector(s->ints());
          step.f = s->f();
          et.steps.push_back(std::move(step));
        }
      out.push_back(std::move(et));
    }
    return out;
  };
  auto table = std::make_unique<ExportTable>();
  table->has_peft = e->peft_config() != nullptr;
  table->peft_config = e->peft_config() ? e->peft_config()->str() : std::string();
  table->peft_tensors = tensors(e->peft_tensors());
  table->own_config = e->own_config() ? e->own_config()->str() : std::string();
  table->own_tensors = tensors(e->own_tensors());
  table->merged = tensors(e->merged());
  table->drop_when_merged = strings(e->drop_when_merged());
  table->hidden = strings(e->hidden());
  table->unmergeable = strings(e->unmergeable());
  rt_->export_ = std::move(table);
  return Status::Ok();
}

}  // namespace edgetune
