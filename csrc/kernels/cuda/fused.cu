// CUDA kernel for fused_elementwise (compiler/ops/fused.py): the program "t0=add(x0,x1); t1=relu(t0);
// y0=t1" runs per output element in one thread, its temporaries in registers / local memory, inputs
// read through their broadcast strides. The check is the CPU kernel's (grammar, limits, tile-buffer
// plan), so both backends accept the same programs; run() re-reads the already-checked program into
// a fixed-size struct passed by value (no allocation). Formulas are elementwise_math.h's, so results
// match the CPU's element for element (--fmad=false). Outputs are written after every input read of
// the element, so an output may share memory with a full-size input.
#include <charconv>
#include <cstring>
#include <string_view>

#include "kernels/cpu/elementwise_math.h"
#include "kernels/cuda/cuda_util.h"

namespace edgetune {
namespace cuda {
namespace {

constexpr int kMaxInstructions = 32, kMaxInputs = 16, kMaxOutputs = 16, kMaxTemps = 64;

enum Fn : uint8_t {
  kAdd, kSub, kMul, kDiv, kNeg, kRelu, kHardtanh, kHardsigmoid, kHardswish, kSigmoid, kTanh, kSilu, kGelu, kExp, kLog,
  kSqrt, kRsqrt, kPowScalar, kReluBackward, kHardtanhBackward, kHardsigmoidBackward, kHardswishBackward,
  kSigmoidBackward, kTanhBackward, kSiluBackward, kGeluBackward
};
constexpr const char* kNames[] = {"add", "sub", "mul", "div", "neg", "relu", "hardtanh", "hardsigmoid", "hardswish",
                                  "sigmoid", "tanh", "silu", "gelu", "exp", "log", "sqrt", "rsqrt", "pow_scalar",
                                  "relu_backward", "hardtanh_backward", "hardsigmoid_backward", "hardswish_backward",
                                  "sigmoid_backward", "tanh_backward", "silu_backward", "gelu_backward"};

struct Operand {
  char kind = 'i';  // 'x' input, 't' temporary, 'i' immediate
  uint8_t index = 0;
  float imm = 0.0f;
};

struct Instr {
  uint8_t fn = kAdd, arity = 0, temp = 0, pow_mode = 0;
  bool gelu_tanh = false;
  float p0 = 0.0f, p1 = 0.0f;
  Operand args[2];
};

struct Program {
  int num_instrs = 0, num_inputs = 0, num_outputs = 0;
  Instr ins[kMaxInstructions];
  Operand outs[kMaxOutputs];
  const float* in[kMaxInputs];
  BcastIndex<1> bc[kMaxInputs];
  bool same[kMaxInputs];  // input walks with the output (offset = element index)
};

struct Outputs {
  float* p[kMaxOutputs];
};

bool parse_number(std::string_view s, float* out) {
  double v = 0;
  std::string_view r = s;
  bool neg = false;
  if (!r.empty() && r[0] == '-') neg = true, r.remove_prefix(1);
  if (r == "inf") v = HUGE_VAL;
  else if (r == "nan") v = NAN;
  else if (std::from_chars(r.data(), r.data() + r.size(), v).ec != std::errc()) return false;
  *out = static_cast<float>(neg ? -v : v);
  return true;
}

bool parse_operand(std::string_view tok, Operand* o) {
  if (tok.size() >= 2 && (tok[0] == 'x' || tok[0] == 't') && tok[1] >= '0' && tok[1] <= '9') {
    int v = 0;
    std::from_chars(tok.data() + 1, tok.data() + tok.size(), v);
    o->kind = tok[0];
    o->index = static_cast<uint8_t>(v);
    return true;
  }
  o->kind = 'i';
  return parse_number(tok, &o->imm);
}

// The program as fused.cc's check accepted it (whitespace dropped; statements split at ';').
bool parse(const std::string& program, Program* p) {
  char text[4096];
  size_t len = 0;
  for (char c : program)
    if (!(c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v') && len < sizeof text) text[len++] = c;
  std::string_view rest(text, len);
  while (!rest.empty()) {
    size_t semi = rest.find(';');
    std::string_view st = rest.substr(0, semi);
    rest = semi == std::string_view::npos ? std::string_view() : rest.substr(semi + 1);
    if (st.empty()) continue;
    const size_t eq = st.find('=');
    if (eq == std::string_view::npos || eq < 2) return false;
    std::string_view dest = st.substr(0, eq), rhs = st.substr(eq + 1);
    int index = 0;
    std::from_chars(dest.data() + 1, dest.data() + dest.size(), index);
    if (dest[0] == 'y') {
      if (index >= kMaxOutputs || !parse_operand(rhs, &p->outs[index])) return false;
      p->num_outputs = std::max(p->num_outputs, index + 1);
      continue;
    }
    if (p->num_instrs == kMaxInstructions || index >= kMaxTemps) return false;
    Instr& in = p->ins[p->num_instrs++];
    in = Instr();
    in.temp = static_cast<uint8_t>(index);
    const size_t paren = rhs.find('(');
    if (paren == std::string_view::npos || rhs.back() != ')') return false;
    const std::string_view name = rhs.substr(0, paren);
    std::string_view args = rhs.substr(paren + 1, rhs.size() - paren - 2);
    bool found = false;
    for (uint8_t f = 0; f < sizeof kNames / sizeof kNames[0]; ++f)
      if (name == kNames[f]) in.fn = f, found = true;
    if (!found) return false;
    while (!args.empty()) {
      const size_t comma = args.find(',');
      std::string_view tok = args.substr(0, comma);
      args = comma == std::string_view::npos ? std::string_view() : args.substr(comma + 1);
      const size_t aeq = tok.find('=');
      if (aeq == std::string_view::npos) {
        if (in.arity == 2 || !parse_operand(tok, &in.args[in.arity])) return false;
        ++in.arity;
        continue;
      }
      const std::string_view an = tok.substr(0, aeq), av = tok.substr(aeq + 1);
      if (an == "approximate") in.gelu_tanh = av == "tanh";
      else if (an == "max") parse_number(av, &in.p1);
      else parse_number(av, &in.p0);  // min, exponent
    }
    if (in.fn == kPowScalar) in.pow_mode = static_cast<uint8_t>(math::pow_mode(in.p0));
  }
  return p->num_outputs > 0;
}

__device__ float pow_dev(int mode, float x, float e) {
  switch (mode) {
    case math::kPowSquare: return math::pow_by_mode<math::kPowSquare>(x, e);
    case math::kPowCube: return math::pow_by_mode<math::kPowCube>(x, e);
    case math::kPowSqrt: return math::pow_by_mode<math::kPowSqrt>(x, e);
    case math::kPowReciprocal: return math::pow_by_mode<math::kPowReciprocal>(x, e);
    case math::kPowRsqrt: return math::pow_by_mode<math::kPowRsqrt>(x, e);
    case math::kPowIdentity: return math::pow_by_mode<math::kPowIdentity>(x, e);
    default: return math::pow_by_mode<math::kPowGeneral>(x, e);
  }
}

__device__ float apply(const Instr& in, float x, float y) {
  switch (in.fn) {
    case kAdd: return x + y;
    case kSub: return x - y;
    case kMul: return x * y;
    case kDiv: return x / y;
    case kNeg: return -x;
    case kRelu: return math::relu(x);
    case kHardtanh: return math::hardtanh(x, in.p0, in.p1);
    case kHardsigmoid: return math::hardsigmoid(x);
    case kHardswish: return math::hardswish(x);
    case kSigmoid: return math::sigmoid(x);
    case kTanh: return math::tanh(x);
    case kSilu: return math::silu(x);
    case kGelu: return in.gelu_tanh ? math::gelu_tanh(x) : math::gelu_erf(x);
    case kExp: return math::exp(x);
    case kLog: return math::log(x);
    case kSqrt: return math::sqrt(x);
    case kRsqrt: return math::rsqrt(x);
    case kPowScalar: return pow_dev(in.pow_mode, x, in.p0);
    case kReluBackward: return math::relu_backward(x, y);
    case kHardtanhBackward: return math::hardtanh_backward(x, y, in.p0, in.p1);
    case kHardsigmoidBackward: return math::hardsigmoid_backward(x, y);
    case kHardswishBackward: return math::hardswish_backward(x, y);
    case kSigmoidBackward: return math::sigmoid_backward(x, y);
    case kTanhBackward: return math::tanh_backward(x, y);
    case kSiluBackward: return math::silu_backward(x, y);
    case kGeluBackward: return in.gelu_tanh ? math::gelu_tanh_backward(x, y) : math::gelu_erf_backward(x, y);
  }
  return 0.0f;
}

__device__ float read(const Program& p, const Operand& o, const float* t, int64_t i) {
  if (o.kind == 'i') return o.imm;
  if (o.kind == 't') return t[o.index];
  return p.same[o.index] ? p.in[o.index][i] : p.in[o.index][p.bc[o.index].offset(0, i)];
}

__global__ void fused_kernel(Program p, Outputs out, int64_t n) {
  ET_GRID_LOOP(i, n) {
    float t[kMaxTemps];
    for (int k = 0; k < p.num_instrs; ++k) {
      const Instr& in = p.ins[k];
      const float x = read(p, in.args[0], t, i);
      const float y = in.arity == 2 ? read(p, in.args[1], t, i) : 0.0f;
      t[in.temp] = apply(in, x, y);
    }
    float v[kMaxOutputs];
    for (int j = 0; j < p.num_outputs; ++j) v[j] = read(p, p.outs[j], t, i);
    for (int j = 0; j < p.num_outputs; ++j) out.p[j][i] = v[j];
  }
}

Status run_fused(const KernelArgs& a) {
  ET_CUDA_CONTEXT(ctx, a);
  Program p;
  if (!parse(a.attr().get_string("program"), &p) || p.num_outputs != a.num_outputs || a.num_inputs > kMaxInputs)
    return internal_error("fused_elementwise: program rejected after check");
  p.num_inputs = a.num_inputs;
  const TensorView& out0 = a.out(0);
  for (int i = 0; i < a.num_inputs; ++i) {
    cpu::Broadcast<1> bc;
    const TensorView* ins[1] = {&a.in(i)};
    if (!bc.init(out0, ins)) return internal_error("fused_elementwise: shapes changed after check");
    p.in[i] = a.in(i).as<float>();
    p.bc[i] = bcast_index(bc);
    p.same[i] = cpu::same_shape(a.in(i), out0);
  }
  Outputs o;
  for (int j = 0; j < a.num_outputs; ++j) o.p[j] = a.out(j).as<float>();
  const int64_t n = out0.numel();
  if (n == 0) return Status::Ok();
  fused_kernel<<<grid_for(n), kBlock, 0, ctx->stream>>>(p, o, n);
  ET_CUDA_LAUNCHED("fused_elementwise");
  return Status::Ok();
}

}  // namespace

void register_fused_kernels(KernelRegistry& r) {
  add_like_cpu(r, "fused_elementwise", "fused_elementwise", nullptr, &run_fused);
}

}  // namespace cuda
}  // namespace edgetune
