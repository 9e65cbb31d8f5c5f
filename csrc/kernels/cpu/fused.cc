// CPU kernel for fused_elementwise (compiler/ops/fused.py): a chain/DAG of elementwise ops run in
// one pass over memory, so the chain's intermediates never reach the arena.
//
//   y0, y1, ... = fused_elementwise(x0, x1, ...) {shape, program="t0=add(x0,x1); t1=relu(t0); y0=t1"}
//
// The program is parsed and planned into fixed-size stack arrays on every call (a few hundred
// ns, no allocation). The plan sorts every value into one of three kinds:
//   * scalar: immediates, one-element inputs, and results whose operands are all scalars; they
//     are computed once per call, before the tiles;
//   * read in place: inputs of the output's size (a pointer into the input per tile);
//   * tile buffer: every other result, and each broadcast input, gathered (strided copy per
//     tile) just before its first read. Buffers are reused once a value's last reader ran, at
//     most kMaxBuffers live at once; the Python side (tile_buffers_needed) counts the same way,
//     so what infer accepts, check accepts.
// The output is walked in tiles of kTile floats (the live buffers stay in L1), tiles are split
// across threads, and each element is computed by the same formula whatever the split, so the
// result does not depend on the thread count. Outputs are written at the end of each tile,
// after every input read of that tile, so an output may share memory with a full-size input
// (a planner's in-place reuse) as long as no output is a plain copy of that input. The
// per-element formulas are elementwise_math.h's, the same the one-op kernels (elementwise.cc) use.
#include <algorithm>
#include <charconv>
#include <cstring>
#include <string>
#include <string_view>

#include "core/kernel.h"
#include "kernels/cpu/broadcast.h"
#include "kernels/cpu/cpu_util.h"
#include "kernels/cpu/elementwise_math.h"

namespace edgetune {
namespace {

// Limits shared with compiler/ops/fused.py (MAX_*): a program beyond them is rejected by both.
constexpr int kMaxInstructions = 32;
constexpr int kMaxBuffers = 16;
constexpr int kMaxInputs = 16;
constexpr int kMaxOutputs = 16;
constexpr int kMaxTempName = 64;        // tK needs K < 64
constexpr int kMaxProgramChars = 4096;  // without whitespace
constexpr int kMaxSlots = 2 * kMaxInstructions + kMaxOutputs + kMaxInputs + kMaxInstructions;
constexpr int64_t kTile = 512;          // floats per tile: 16 buffers of 2 KiB = 32 KiB, an L1

// ---- the instruction set ---------------------------------------------------------------------
enum class Fn : uint8_t {
  kAdd, kSub, kMul, kDiv, kNeg, kRelu, kHardtanh, kHardsigmoid, kHardswish, kSigmoid, kTanh, kSilu, kGelu,
  kExp, kLog, kSqrt, kRsqrt, kPowScalar, kReluBackward, kHardtanhBackward, kHardsigmoidBackward,
  kHardswishBackward, kSigmoidBackward, kTanhBackward, kSiluBackward, kGeluBackward
};
enum class AttrSet : uint8_t { kNone, kMinMax, kApproximate, kExponent };

struct OpInfo {
  const char* name;
  Fn fn;
  int arity;
  AttrSet attrs;
};

constexpr OpInfo kOps[] = {
    {"add", Fn::kAdd, 2, AttrSet::kNone},
    {"sub", Fn::kSub, 2, AttrSet::kNone},
    {"mul", Fn::kMul, 2, AttrSet::kNone},
    {"div", Fn::kDiv, 2, AttrSet::kNone},
    {"neg", Fn::kNeg, 1, AttrSet::kNone},
    {"relu", Fn::kRelu, 1, AttrSet::kNone},
    {"hardtanh", Fn::kHardtanh, 1, AttrSet::kMinMax},
    {"hardsigmoid", Fn::kHardsigmoid, 1, AttrSet::kNone},
    {"hardswish", Fn::kHardswish, 1, AttrSet::kNone},
    {"sigmoid", Fn::kSigmoid, 1, AttrSet::kNone},
    {"tanh", Fn::kTanh, 1, AttrSet::kNone},
    {"silu", Fn::kSilu, 1, AttrSet::kNone},
    {"gelu", Fn::kGelu, 1, AttrSet::kApproximate},
    {"exp", Fn::kExp, 1, AttrSet::kNone},
    {"log", Fn::kLog, 1, AttrSet::kNone},
    {"sqrt", Fn::kSqrt, 1, AttrSet::kNone},
    {"rsqrt", Fn::kRsqrt, 1, AttrSet::kNone},
    {"pow_scalar", Fn::kPowScalar, 1, AttrSet::kExponent},
    {"relu_backward", Fn::kReluBackward, 2, AttrSet::kNone},
    {"hardtanh_backward", Fn::kHardtanhBackward, 2, AttrSet::kMinMax},
    {"hardsigmoid_backward", Fn::kHardsigmoidBackward, 2, AttrSet::kNone},
    {"hardswish_backward", Fn::kHardswishBackward, 2, AttrSet::kNone},
    {"sigmoid_backward", Fn::kSigmoidBackward, 2, AttrSet::kNone},
    {"tanh_backward", Fn::kTanhBackward, 2, AttrSet::kNone},
    {"silu_backward", Fn::kSiluBackward, 2, AttrSet::kNone},
    {"gelu_backward", Fn::kGeluBackward, 2, AttrSet::kApproximate},
};

// Where a value lives during the tiles (see the file comment).
enum class Where : uint8_t { kSlot, kInput, kBuffer, kGather /* outputs only: broadcast input */ };

struct Ref {
  Where where = Where::kSlot;
  int index = 0;  // slot, input or buffer number
};

struct Operand {
  char kind = 'x';  // 'x' input, 't' earlier result, 'i' immediate
  int index = 0;
  float imm = 0.0f;
  Ref ref;  // filled by plan()
};

struct Instr {
  Fn fn = Fn::kAdd;
  int arity = 0;
  Operand args[2];
  int temp = 0;        // K of tK
  float p0 = 0, p1 = 0;  // hardtanh min/max, pow exponent
  bool gelu_tanh = false;
  math::PowMode pow_mode = math::kPowGeneral;
  // filled by plan()
  bool scalar = false;
  Ref dest;
  int num_gathers = 0;
  int gather_input[2] = {0, 0}, gather_buffer[2] = {0, 0};
};

struct Program {
  Instr ins[kMaxInstructions];
  int num_instrs = 0;
  Operand outs[kMaxOutputs];
  int num_outputs = 0;
  // filled by plan()
  float slot_imm[kMaxSlots] = {0};
  int slot_input[kMaxSlots] = {0};  // input whose one element fills the slot, or -1
  int num_slots = 0;
  int peak_buffers = 0;
};

// ---- parsing: the grammar of compiler/ops/fused.py (parse_program), check for check -----------
Status bad(std::string_view program, const std::string& msg) {
  return invalid_argument("fused_elementwise program \"" + std::string(program) + "\": " + msg);
}

bool all_digits(std::string_view s) {
  if (s.empty()) return false;
  for (char c : s)
    if (c < '0' || c > '9') return false;
  return true;
}

// -?(\d+\.?\d*([eE][-+]?\d+)?|\.\d+([eE][-+]?\d+)?|inf|nan), as the Python side's _NUMBER
bool is_number(std::string_view s) {
  size_t i = 0;
  if (i < s.size() && s[i] == '-') ++i;
  std::string_view r = s.substr(i);
  if (r == "inf" || r == "nan") return true;
  auto digits = [&](size_t& j) {
    size_t start = j;
    while (j < s.size() && s[j] >= '0' && s[j] <= '9') ++j;
    return j - start;
  };
  if (i < s.size() && s[i] == '.') {
    ++i;
    if (digits(i) == 0) return false;
  } else {
    if (digits(i) == 0) return false;
    if (i < s.size() && s[i] == '.') {
      ++i;
      digits(i);
    }
  }
  if (i < s.size() && (s[i] == 'e' || s[i] == 'E')) {
    ++i;
    if (i < s.size() && (s[i] == '-' || s[i] == '+')) ++i;
    if (digits(i) == 0) return false;
  }
  return i == s.size();
}

bool to_double(std::string_view s, double* out) {
  auto r = std::from_chars(s.data(), s.data() + s.size(), *out);
  return r.ec == std::errc() && r.ptr == s.data() + s.size();
}

bool to_index(std::string_view s, int* out) {
  auto r = std::from_chars(s.data(), s.data() + s.size(), *out);
  return r.ec == std::errc() && r.ptr == s.data() + s.size();
}

// "x3" / "t12" / "y0": the letter and the number
bool parse_ref(std::string_view s, char* kind, int* index) {
  if (s.size() < 2 || !all_digits(s.substr(1))) return false;
  *kind = s[0];
  if (!to_index(s.substr(1), index)) *index = 1 << 30;  // too large for anything: rejected by the caller
  return true;
}

Status parse_operand(std::string_view program, std::string_view tok, Operand* o) {
  char kind;
  int index;
  if (parse_ref(tok, &kind, &index) && (kind == 'x' || kind == 't')) {
    o->kind = kind;
    o->index = index;
    return Status::Ok();
  }
  double v;
  if (is_number(tok) && to_double(tok, &v)) {
    o->kind = 'i';
    o->imm = static_cast<float>(v);
    return Status::Ok();
  }
  return bad(program, "bad operand '" + std::string(tok) + "' (want xI, tK or a number)");
}

// Splits s at the first `sep`: head and tail (tail without the separator; found says whether it was there).
void split_first(std::string_view s, char sep, std::string_view* head, std::string_view* tail, bool* found) {
  size_t k = s.find(sep);
  *found = k != std::string_view::npos;
  *head = s.substr(0, *found ? k : s.size());
  *tail = *found ? s.substr(k + 1) : std::string_view();
}

Status parse(std::string_view program, int num_inputs, Program* p, char* text_buf) {
  // whitespace is ignored anywhere, as the Python side strips it first
  int len = 0;
  for (char c : program) {
    if (c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v') continue;
    if (len == kMaxProgramChars)
      return bad(program, "longer than " + std::to_string(kMaxProgramChars) + " characters");
    text_buf[len++] = c;
  }
  std::string_view text(text_buf, static_cast<size_t>(len));
  bool defined[kMaxTempName] = {false};
  bool have_output[kMaxOutputs] = {false};
  int max_output = -1;
  p->num_instrs = 0;
  p->num_outputs = 0;

  auto check_use = [&](const Operand& o, const std::string& where) -> Status {
    if (o.kind == 'x' && o.index >= num_inputs)
      return bad(program, where + " reads x" + std::to_string(o.index) + ", but the node has " +
                              std::to_string(num_inputs) + " inputs");
    if (o.kind == 't' && (o.index >= kMaxTempName || !defined[o.index]))
      return bad(program, where + " reads t" + std::to_string(o.index) + " before it is assigned");
    return Status::Ok();
  };

  std::string_view rest = text;
  while (!rest.empty()) {
    std::string_view st;
    bool more;
    split_first(rest, ';', &st, &rest, &more);
    if (st.empty()) continue;
    std::string_view dest, rhs;
    bool eq;
    split_first(st, '=', &dest, &rhs, &eq);
    char kind;
    int index;
    if (!eq || !parse_ref(dest, &kind, &index) || (kind != 't' && kind != 'y'))
      return bad(program, "statement '" + std::string(st) + "' must be 'tK=op(...)' or 'yJ=operand'");
    if (kind == 'y') {
      if (index >= kMaxOutputs)
        return bad(program, "y" + std::to_string(index) + ": the kernel takes at most " +
                                std::to_string(kMaxOutputs) + " outputs");
      if (have_output[index]) return bad(program, "output y" + std::to_string(index) + " assigned twice");
      Operand o;
      ET_RETURN_IF_ERROR(parse_operand(program, rhs, &o));
      ET_RETURN_IF_ERROR(check_use(o, "y" + std::to_string(index)));
      have_output[index] = true;
      p->outs[index] = o;
      max_output = std::max(max_output, index);
      ++p->num_outputs;
      continue;
    }
    const std::string tname = "t" + std::to_string(index);
    if (index >= kMaxTempName)
      return bad(program, tname + ": temporaries are t0..t" + std::to_string(kMaxTempName - 1));
    if (defined[index]) return bad(program, tname + " assigned twice");
    if (p->num_instrs == kMaxInstructions)
      return bad(program, "more than " + std::to_string(kMaxInstructions) + " instructions");
    std::string_view name, args;
    bool paren;
    split_first(rhs, '(', &name, &args, &paren);
    bool ident = !name.empty() && !(name[0] >= '0' && name[0] <= '9');
    for (char c : name) ident &= (c == '_' || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9'));
    if (!paren || !ident || args.empty() || args.back() != ')')
      return bad(program, tname + "=" + std::string(rhs) + ": expected op(args)");
    args.remove_suffix(1);
    const OpInfo* info = nullptr;
    for (const OpInfo& op : kOps)
      if (name == op.name) info = &op;
    if (!info) return bad(program, tname + ": op '" + std::string(name) + "' cannot be fused");
    const std::string where = tname + "=" + info->name;
    Instr& in = p->ins[p->num_instrs];
    in = Instr();
    in.fn = info->fn;
    in.temp = index;
    int nargs = 0;
    bool seen_attr[2] = {false, false};
    bool any_attr = false;
    std::string_view arest = args;
    bool more_args = !args.empty();
    while (more_args) {
      std::string_view tok;
      split_first(arest, ',', &tok, &arest, &more_args);
      std::string_view aname, value;
      bool has_eq;
      split_first(tok, '=', &aname, &value, &has_eq);
      if (!has_eq) {
        if (any_attr) return bad(program, where + ": operand '" + std::string(tok) + "' after attributes");
        if (nargs == 2) return bad(program, where + " takes " + std::to_string(info->arity) + " operand(s), got more");
        ET_RETURN_IF_ERROR(parse_operand(program, tok, &in.args[nargs]));
        ET_RETURN_IF_ERROR(check_use(in.args[nargs], where));
        ++nargs;
        continue;
      }
      any_attr = true;
      int slot = -1;
      if (info->attrs == AttrSet::kMinMax && aname == "min") slot = 0;
      if (info->attrs == AttrSet::kMinMax && aname == "max") slot = 1;
      if (info->attrs == AttrSet::kApproximate && aname == "approximate") slot = 0;
      if (info->attrs == AttrSet::kExponent && aname == "exponent") slot = 0;
      if (slot < 0) return bad(program, where + ": unknown attribute '" + std::string(aname) + "'");
      if (seen_attr[slot]) return bad(program, where + ": attribute '" + std::string(aname) + "' given twice");
      seen_attr[slot] = true;
      if (info->attrs == AttrSet::kApproximate) {
        if (value != "none" && value != "tanh")
          return bad(program, where + ": approximate=" + std::string(value) + ", want none or tanh");
        in.gelu_tanh = value == "tanh";
        continue;
      }
      double v;
      if (!is_number(value) || !to_double(value, &v))
        return bad(program, where + ": attribute " + std::string(aname) + "=" + std::string(value) + " is not a number");
      (slot == 0 ? in.p0 : in.p1) = static_cast<float>(v);
    }
    if (nargs != info->arity)
      return bad(program, where + " takes " + std::to_string(info->arity) + " operand(s), got " + std::to_string(nargs));
    const bool required = info->attrs == AttrSet::kMinMax || info->attrs == AttrSet::kExponent;
    if (required && (!seen_attr[0] || (info->attrs == AttrSet::kMinMax && !seen_attr[1])))
      return bad(program, where + ": missing attribute(s)");
    in.arity = info->arity;
    if (in.fn == Fn::kPowScalar) in.pow_mode = math::pow_mode(in.p0);
    defined[index] = true;
    ++p->num_instrs;
  }
  if (p->num_outputs == 0) return bad(program, "no outputs (write yJ=tK)");
  if (max_output + 1 != p->num_outputs)
    return bad(program, "outputs must be y0..y" + std::to_string(p->num_outputs - 1));
  return Status::Ok();
}

// ---- planning: where every value lives (the same simulation as fused.py tile_buffers_needed) --
Status plan(const KernelArgs& a, std::string_view program, Program* p) {
  const int64_t out_numel = a.out(0).numel();
  auto in_scalar = [&](int i) { return a.in(i).numel() == 1; };
  auto in_gathered = [&](int i) { return !in_scalar(i) && a.in(i).numel() != out_numel; };
  const int n = p->num_instrs;
  p->num_slots = 0;
  auto new_slot = [&](float imm, int input) {
    p->slot_imm[p->num_slots] = imm;
    p->slot_input[p->num_slots] = input;
    return p->num_slots++;
  };
  int input_slot[kMaxInputs];
  for (int i = 0; i < a.num_inputs; ++i) input_slot[i] = in_scalar(i) ? new_slot(0.0f, i) : -1;

  // last reader of each value: instruction index, n for outputs
  int last_temp[kMaxTempName], first_x[kMaxInputs], last_x[kMaxInputs];
  for (int i = 0; i < kMaxInputs; ++i) first_x[i] = last_x[i] = -1;
  for (int k = 0; k < n; ++k) {
    const Instr& in = p->ins[k];
    last_temp[in.temp] = k;
    for (int j = 0; j < in.arity; ++j) {
      const Operand& o = in.args[j];
      if (o.kind == 'x' && in_gathered(o.index)) {
        if (first_x[o.index] < 0) first_x[o.index] = k;
        last_x[o.index] = k;
      } else if (o.kind == 't') {
        last_temp[o.index] = k;
      }
    }
  }
  for (int j = 0; j < p->num_outputs; ++j)
    if (p->outs[j].kind == 't') last_temp[p->outs[j].index] = n;

  int free_list[kMaxBuffers], num_free = kMaxBuffers, live = 0, peak = 0;
  for (int b = 0; b < kMaxBuffers; ++b) free_list[b] = kMaxBuffers - 1 - b;
  int x_buffer[kMaxInputs];
  Ref temp_ref[kMaxTempName];
  bool over = false;
  auto take = [&]() {
    ++live;
    peak = std::max(peak, live);
    if (num_free == 0) {
      over = true;
      return 0;
    }
    return free_list[--num_free];
  };
  auto give = [&](int b) {
    --live;
    if (!over) free_list[num_free++] = b;
  };
  auto resolve = [&](const Operand& o) -> Ref {
    if (o.kind == 'i') return Ref{Where::kSlot, new_slot(o.imm, -1)};
    if (o.kind == 't') return temp_ref[o.index];
    if (in_scalar(o.index)) return Ref{Where::kSlot, input_slot[o.index]};
    if (in_gathered(o.index)) return Ref{Where::kBuffer, x_buffer[o.index]};
    return Ref{Where::kInput, o.index};
  };

  for (int k = 0; k < n; ++k) {
    Instr& in = p->ins[k];
    in.num_gathers = 0;
    for (int j = 0; j < in.arity; ++j) {  // broadcast inputs read here first: gather them now
      const Operand& o = in.args[j];
      if (o.kind == 'x' && first_x[o.index] == k && (j == 0 || in.args[0].kind != 'x' || in.args[0].index != o.index)) {
        x_buffer[o.index] = take();
        in.gather_input[in.num_gathers] = o.index;
        in.gather_buffer[in.num_gathers] = x_buffer[o.index];
        ++in.num_gathers;
      }
    }
    in.scalar = true;
    for (int j = 0; j < in.arity; ++j) {
      in.args[j].ref = resolve(in.args[j]);
      in.scalar &= in.args[j].ref.where == Where::kSlot;
    }
    for (int j = 0; j < in.arity; ++j) {  // operands read for the last time: their buffers are free
      const Operand& o = in.args[j];
      if (j == 1 && o.kind == in.args[0].kind && o.index == in.args[0].index) continue;
      if (o.kind == 'x' && in_gathered(o.index) && last_x[o.index] == k) give(x_buffer[o.index]);
      if (o.kind == 't' && temp_ref[o.index].where == Where::kBuffer && last_temp[o.index] == k)
        give(temp_ref[o.index].index);
    }
    if (in.scalar) {
      in.dest = Ref{Where::kSlot, new_slot(0.0f, -1)};
    } else {
      in.dest = Ref{Where::kBuffer, take()};
      if (last_temp[in.temp] == k) give(in.dest.index);  // a result nothing reads
    }
    temp_ref[in.temp] = in.dest;
  }
  for (int j = 0; j < p->num_outputs; ++j) {
    Operand& o = p->outs[j];
    o.ref = (o.kind == 'x' && in_gathered(o.index)) ? Ref{Where::kGather, o.index} : resolve(o);
  }
  p->peak_buffers = peak;
  if (over || peak > kMaxBuffers)
    return bad(program, "needs " + std::to_string(peak) + " tile buffers at once, the kernel has " +
                            std::to_string(kMaxBuffers) + ": split the group");
  return Status::Ok();
}

// ---- the formulas ------------------------------------------------------------------------------
template <int N>
struct Arity {
  static constexpr int value = N;
};

// visit(Arity<1 or 2>, f): f(x) or f(x, y), the instruction's per-element formula.
template <typename Visit>
void with_formula(const Instr& in, const Visit& visit) {
  const float lo = in.p0, hi = in.p1, e = in.p0;
  switch (in.fn) {
    case Fn::kAdd: return visit(Arity<2>{}, [](float x, float y) { return x + y; });
    case Fn::kSub: return visit(Arity<2>{}, [](float x, float y) { return x - y; });
    case Fn::kMul: return visit(Arity<2>{}, [](float x, float y) { return x * y; });
    case Fn::kDiv: return visit(Arity<2>{}, [](float x, float y) { return x / y; });
    case Fn::kNeg: return visit(Arity<1>{}, [](float x) { return -x; });
    case Fn::kRelu: return visit(Arity<1>{}, [](float x) { return math::relu(x); });
    case Fn::kHardtanh: return visit(Arity<1>{}, [lo, hi](float x) { return math::hardtanh(x, lo, hi); });
    case Fn::kHardsigmoid: return visit(Arity<1>{}, [](float x) { return math::hardsigmoid(x); });
    case Fn::kHardswish: return visit(Arity<1>{}, [](float x) { return math::hardswish(x); });
    case Fn::kSigmoid: return visit(Arity<1>{}, [](float x) { return math::sigmoid(x); });
    case Fn::kTanh: return visit(Arity<1>{}, [](float x) { return math::tanh(x); });
    case Fn::kSilu: return visit(Arity<1>{}, [](float x) { return math::silu(x); });
    case Fn::kGelu:
      if (in.gelu_tanh) return visit(Arity<1>{}, [](float x) { return math::gelu_tanh(x); });
      return visit(Arity<1>{}, [](float x) { return math::gelu_erf(x); });
    case Fn::kExp: return visit(Arity<1>{}, [](float x) { return math::exp(x); });
    case Fn::kLog: return visit(Arity<1>{}, [](float x) { return math::log(x); });
    case Fn::kSqrt: return visit(Arity<1>{}, [](float x) { return math::sqrt(x); });
    case Fn::kRsqrt: return visit(Arity<1>{}, [](float x) { return math::rsqrt(x); });
    case Fn::kPowScalar:
      switch (in.pow_mode) {
        case math::kPowSquare: return visit(Arity<1>{}, [e](float x) { return math::pow_by_mode<math::kPowSquare>(x, e); });
        case math::kPowCube: return visit(Arity<1>{}, [e](float x) { return math::pow_by_mode<math::kPowCube>(x, e); });
        case math::kPowSqrt: return visit(Arity<1>{}, [e](float x) { return math::pow_by_mode<math::kPowSqrt>(x, e); });
        case math::kPowReciprocal:
          return visit(Arity<1>{}, [e](float x) { return math::pow_by_mode<math::kPowReciprocal>(x, e); });
        case math::kPowRsqrt: return visit(Arity<1>{}, [e](float x) { return math::pow_by_mode<math::kPowRsqrt>(x, e); });
        case math::kPowIdentity:
          return visit(Arity<1>{}, [e](float x) { return math::pow_by_mode<math::kPowIdentity>(x, e); });
        case math::kPowGeneral:
          return visit(Arity<1>{}, [e](float x) { return math::pow_by_mode<math::kPowGeneral>(x, e); });
      }
      return;
    case Fn::kReluBackward: return visit(Arity<2>{}, [](float d, float s) { return math::relu_backward(d, s); });
    case Fn::kHardtanhBackward:
      return visit(Arity<2>{}, [lo, hi](float d, float s) { return math::hardtanh_backward(d, s, lo, hi); });
    case Fn::kHardsigmoidBackward:
      return visit(Arity<2>{}, [](float d, float s) { return math::hardsigmoid_backward(d, s); });
    case Fn::kHardswishBackward:
      return visit(Arity<2>{}, [](float d, float s) { return math::hardswish_backward(d, s); });
    case Fn::kSigmoidBackward: return visit(Arity<2>{}, [](float d, float s) { return math::sigmoid_backward(d, s); });
    case Fn::kTanhBackward: return visit(Arity<2>{}, [](float d, float s) { return math::tanh_backward(d, s); });
    case Fn::kSiluBackward: return visit(Arity<2>{}, [](float d, float s) { return math::silu_backward(d, s); });
    case Fn::kGeluBackward:
      if (in.gelu_tanh) return visit(Arity<2>{}, [](float d, float s) { return math::gelu_tanh_backward(d, s); });
      return visit(Arity<2>{}, [](float d, float s) { return math::gelu_erf_backward(d, s); });
  }
}

// An operand inside a tile: a pointer to n floats, or (p == nullptr) one scalar.
struct Arg {
  const float* p = nullptr;
  float s = 0.0f;
};

// One vector instruction over a tile. A vector instruction has at least one vector operand, so
// a unary one never sees a scalar. `o` may be an operand's own buffer (same index, read first).
void run_instr(const Instr& in, const Arg& x, const Arg& y, float* o, int64_t n) {
  with_formula(in, [&](auto arity, const auto& f) {
    if constexpr (decltype(arity)::value == 1) {
      const float* xp = x.p;
      for (int64_t i = 0; i < n; ++i) o[i] = f(xp[i]);
    } else if (x.p && y.p) {
      const float *xp = x.p, *yp = y.p;
      for (int64_t i = 0; i < n; ++i) o[i] = f(xp[i], yp[i]);
    } else if (x.p) {
      const float *xp = x.p, yv = y.s;
      for (int64_t i = 0; i < n; ++i) o[i] = f(xp[i], yv);
    } else {
      const float xv = x.s, *yp = y.p;
      for (int64_t i = 0; i < n; ++i) o[i] = f(xv, yp[i]);
    }
  });
}

float eval_scalar(const Instr& in, float x, float y) {
  float r = 0.0f;
  with_formula(in, [&](auto arity, const auto& f) {
    if constexpr (decltype(arity)::value == 1) r = f(x);
    else r = f(x, y);
  });
  return r;
}

// Copies output elements [begin, begin + n) of a broadcast input into dst.
void gather(const cpu::Broadcast<1>& bc, const float* src, int64_t begin, int64_t n, float* dst) {
  const bool walks = bc.inner_stride(0) != 0;
  bc.for_runs(begin, begin + n, [&](int64_t o, const int64_t* off, int64_t len) {
    float* d = dst + (o - begin);
    const float* s = src + off[0];
    if (walks) {
      std::memcpy(d, s, static_cast<size_t>(len) * sizeof(float));
    } else {
      const float v = s[0];
      for (int64_t i = 0; i < len; ++i) d[i] = v;
    }
  });
}

// ---- the kernel --------------------------------------------------------------------------------
Status check_fused(const KernelArgs& a) {
  if (a.num_inputs < 1 || a.num_inputs > kMaxInputs)
    return invalid_argument("fused_elementwise takes 1.." + std::to_string(kMaxInputs) + " inputs, got " +
                            std::to_string(a.num_inputs));
  if (a.num_outputs < 1 || a.num_outputs > kMaxOutputs)
    return invalid_argument("fused_elementwise makes 1.." + std::to_string(kMaxOutputs) + " outputs, got " +
                            std::to_string(a.num_outputs));
  const Attr* shape = a.attr().find("shape");
  if (!shape || shape->kind != AttrKind::kInts) return invalid_argument("fused_elementwise: missing ints attribute 'shape'");
  const Attr* program = a.attr().find("program");
  if (!program || program->kind != AttrKind::kString)
    return invalid_argument("fused_elementwise: missing string attribute 'program'");
  const TensorView& out0 = a.out(0);
  bool shape_ok = static_cast<int>(shape->ints.size()) == out0.rank;
  for (int d = 0; shape_ok && d < out0.rank; ++d) shape_ok = shape->ints[d] == out0.shape[d];
  if (!shape_ok) return invalid_argument("fused_elementwise: output " + out0.shape_string() + " is not attribute shape");
  for (int j = 0; j < a.num_outputs; ++j) {
    const std::string what = "fused_elementwise output " + std::to_string(j);
    if (a.out(j).dtype != DType::f32)
      return unimplemented(what + " is " + a.out(j).shape_string() + "; this kernel takes f32");
    ET_RETURN_IF_ERROR(cpu::want_same_shape(what.c_str(), a.out(j), out0));
  }
  for (int i = 0; i < a.num_inputs; ++i) {
    const TensorView& x = a.in(i);
    const std::string what = "fused_elementwise input x" + std::to_string(i) + " is " + x.shape_string();
    if (x.dtype != DType::f32) return unimplemented(what + "; this kernel takes f32");
    cpu::Broadcast<1> bc;
    const TensorView* ins[1] = {&x};
    if (!bc.init(out0, ins)) return invalid_argument(what + ", which does not broadcast to " + out0.shape_string());
  }
  Program p;
  char text[kMaxProgramChars];
  ET_RETURN_IF_ERROR(parse(program->s, a.num_inputs, &p, text));
  if (p.num_outputs != a.num_outputs)
    return invalid_argument("fused_elementwise: the program writes " + std::to_string(p.num_outputs) +
                            " outputs, the node has " + std::to_string(a.num_outputs));
  return plan(a, program->s, &p);
}

Status run_fused(const KernelArgs& a) {
  const std::string& program = a.attr().get_string("program");
  Program p;
  char text[kMaxProgramChars];
  if (!parse(program, a.num_inputs, &p, text).ok() || !plan(a, program, &p).ok())
    return internal_error("fused_elementwise: program rejected after check");

  // scalars: immediates, one-element inputs, then the all-scalar instructions in order
  float slots[kMaxSlots];
  for (int s = 0; s < p.num_slots; ++s)
    slots[s] = p.slot_input[s] >= 0 ? a.in(p.slot_input[s]).as<float>()[0] : p.slot_imm[s];
  for (int k = 0; k < p.num_instrs; ++k) {
    const Instr& in = p.ins[k];
    if (!in.scalar) continue;
    const float x = slots[in.args[0].ref.index], y = in.arity == 2 ? slots[in.args[1].ref.index] : 0.0f;
    slots[in.dest.index] = eval_scalar(in, x, y);
  }

  cpu::Broadcast<1> bc[kMaxInputs];
  const float* in_ptr[kMaxInputs];
  for (int i = 0; i < a.num_inputs; ++i) {
    in_ptr[i] = a.in(i).as<float>();
    const TensorView* ins[1] = {&a.in(i)};
    if (!bc[i].init(a.out(0), ins)) return internal_error("fused_elementwise: shapes changed after check");
  }
  const int64_t numel = a.out(0).numel();
  const int64_t tiles = (numel + kTile - 1) / kTile;
  cpu::parallel_for(a, tiles, std::max<int64_t>(1, cpu::kGrain / kTile), [&](int64_t tb, int64_t te) {
    alignas(64) float buf[kMaxBuffers][kTile];
    auto arg = [&](const Ref& r, int64_t begin) {
      Arg x;
      if (r.where == Where::kSlot) x.s = slots[r.index];
      else if (r.where == Where::kInput) x.p = in_ptr[r.index] + begin;
      else x.p = buf[r.index];
      return x;
    };
    for (int64_t t = tb; t < te; ++t) {
      const int64_t begin = t * kTile, n = std::min(kTile, numel - begin);
      for (int k = 0; k < p.num_instrs; ++k) {
        const Instr& in = p.ins[k];
        if (in.scalar) continue;
        for (int g = 0; g < in.num_gathers; ++g)
          gather(bc[in.gather_input[g]], in_ptr[in.gather_input[g]], begin, n, buf[in.gather_buffer[g]]);
        const Arg x = arg(in.args[0].ref, begin);
        const Arg y = in.arity == 2 ? arg(in.args[1].ref, begin) : Arg{};
        run_instr(in, x, y, buf[in.dest.index], n);
      }
      for (int j = 0; j < p.num_outputs; ++j) {  // after every read of this tile's inputs
        float* dst = a.out(j).as<float>() + begin;
        const Ref& r = p.outs[j].ref;
        if (r.where == Where::kGather) {
          gather(bc[r.index], in_ptr[r.index], begin, n, dst);
        } else if (r.where == Where::kSlot) {
          const float v = slots[r.index];
          for (int64_t i = 0; i < n; ++i) dst[i] = v;
        } else {
          std::memcpy(dst, arg(r, begin).p, static_cast<size_t>(n) * sizeof(float));
        }
      }
    }
  });
  return Status::Ok();
}

}  // namespace

void register_fused_kernels(KernelRegistry& r) {
  r.add(KernelDef{"fused_elementwise", "fused_elementwise", &check_fused, nullptr, &run_fused});
}

}  // namespace edgetune
