// CPU kernels for compiler/ops/mask.py: 1-bit activation masks.
//
//   activation_mask(y) {min, max?} -> u8[(n+7)/8]   bit i = min < y_i < max, LSB first per byte
//   mask_grad(dy, bits) -> dx                       dy_i where bit i is set, else 0
//
// relu_backward / hardtanh_backward only test min < y < max on the saved forward output; keeping
// that test as a bit instead of the f32 activation saves 31/32 of the memory. Work is split over
// whole bytes (8 elements each), so no two threads ever write the same byte and the result does
// not depend on the thread count. Padding bits of the last byte are written as 0.
#include <algorithm>
#include <string>
#include <type_traits>

#if defined(__AVX__) || defined(__AVX512F__)
#include <immintrin.h>
#endif

#include "core/kernel.h"
#include "kernels/cpu/cpu_util.h"

namespace edgetune {
namespace {

// Bytes per chunk handed to a thread (8 elements each): the same order of work as cpu::kGrain.
constexpr int64_t kByteGrain = cpu::kGrain / 8;

int64_t packed_bytes(int64_t numel) { return (numel + 7) / 8; }

Status want_mask_shape(const char* op, const char* what, const TensorView& bits, int64_t numel) {
  if (bits.dtype == DType::u8 && bits.rank == 1 && bits.shape[0] == packed_bytes(numel)) return Status::Ok();
  return invalid_argument(std::string(op) + ": " + what + " is " + bits.shape_string() + ", expected u8[" +
                          std::to_string(packed_bytes(numel)) + "] for " + std::to_string(numel) + " elements");
}

Status want_number_attr(const Attrs& at, const char* name, bool required) {
  const Attr* x = at.find(name);
  if (!x) return required ? invalid_argument(std::string("activation_mask: missing attribute '") + name + "'")
                          : Status::Ok();
  if (x->kind == AttrKind::kFloat || x->kind == AttrKind::kInt) return Status::Ok();
  return invalid_argument(std::string("activation_mask: attribute '") + name + "' must be a number");
}

// ---- activation_mask ---------------------------------------------------------------------------
Status check_activation_mask(const KernelArgs& a) {
  ET_RETURN_IF_ERROR(expect_arity(a, "activation_mask", 1, 1, 1));
  ET_RETURN_IF_ERROR(cpu::want_float("activation_mask input", a.in(0)));
  ET_RETURN_IF_ERROR(want_number_attr(a.attr(), "min", true));
  ET_RETURN_IF_ERROR(want_number_attr(a.attr(), "max", false));
  return want_mask_shape("activation_mask", "output", a.out(0), a.in(0).numel());
}

// kBounded: test y < hi too (hardtanh); without it there is no upper bound at all (relu).
// Whole bytes [b, full) of f32 data with x86 compare-to-mask instructions: the bit order of a
// vector compare mask (lane k -> bit k) is exactly the format's (element 8j+k -> bit k of byte
// j), and an ordered compare is false for NaN like the scalar test. Returns the first byte left.
template <bool kBounded>
int64_t pack_mask_vector(const float* y, int64_t b, int64_t full, float lo, float hi, uint8_t* bits) {
  int64_t j = b;
#if defined(__AVX512F__)
  const __m512 vlo = _mm512_set1_ps(lo), vhi = _mm512_set1_ps(hi);
  for (; j + 2 <= full; j += 2) {
    const __m512 v = _mm512_loadu_ps(y + j * 8);
    __mmask16 m = _mm512_cmp_ps_mask(v, vlo, _CMP_GT_OQ);
    if (kBounded) m &= _mm512_cmp_ps_mask(v, vhi, _CMP_LT_OQ);
    bits[j] = static_cast<uint8_t>(m & 0xff);
    bits[j + 1] = static_cast<uint8_t>(m >> 8);
  }
#elif defined(__AVX__)
  const __m256 vlo = _mm256_set1_ps(lo), vhi = _mm256_set1_ps(hi);
  for (; j < full; ++j) {
    const __m256 v = _mm256_loadu_ps(y + j * 8);
    __m256 m = _mm256_cmp_ps(v, vlo, _CMP_GT_OQ);
    if (kBounded) m = _mm256_and_ps(m, _mm256_cmp_ps(v, vhi, _CMP_LT_OQ));
    bits[j] = static_cast<uint8_t>(_mm256_movemask_ps(m));
  }
#else
  (void)y, (void)full, (void)lo, (void)hi, (void)bits;
#endif
  return j;
}

template <typename T, bool kBounded>
void pack_mask(const KernelArgs& a, const T* y, int64_t n, T lo, T hi, uint8_t* bits) {
  cpu::parallel_for(a, packed_bytes(n), kByteGrain, [&](int64_t b, int64_t e) {
    const int64_t full = std::min(e, n / 8);  // bytes whose 8 elements all exist
    int64_t start = b;
    if constexpr (std::is_same_v<T, float>) {
      if (full > b) start = pack_mask_vector<kBounded>(y, b, full, lo, hi, bits);
    }
    for (int64_t j = start; j < full; ++j) {
      const T* v = y + j * 8;
      unsigned byte = 0;
      for (int k = 0; k < 8; ++k) {
        const bool inside = kBounded ? (v[k] > lo && v[k] < hi) : v[k] > lo;
        byte |= static_cast<unsigned>(inside) << k;
      }
      bits[j] = static_cast<uint8_t>(byte);
    }
    for (int64_t j = full > b ? full : b; j < e; ++j) {  // the last, partial byte
      unsigned byte = 0;
      for (int64_t i = j * 8; i < n; ++i) {
        const bool inside = kBounded ? (y[i] > lo && y[i] < hi) : y[i] > lo;
        byte |= static_cast<unsigned>(inside) << (i - j * 8);
      }
      bits[j] = static_cast<uint8_t>(byte);
    }
  });
}

Status run_activation_mask(const KernelArgs& a) {
  const TensorView &y = a.in(0), &out = a.out(0);
  const bool bounded = a.attr().has("max");
  bool ok = cpu::visit_float(y.dtype, [&](auto tag) {
    using T = typename decltype(tag)::type;
    const T lo = T(a.attr().get_float("min")), hi = T(a.attr().get_float("max"));
    if (bounded) pack_mask<T, true>(a, y.as<T>(), y.numel(), lo, hi, out.as<uint8_t>());
    else pack_mask<T, false>(a, y.as<T>(), y.numel(), lo, hi, out.as<uint8_t>());
  });
  return ok ? Status::Ok() : internal_error("activation_mask: dtype not dispatched");
}

// ---- mask_grad ---------------------------------------------------------------------------------
Status check_mask_grad(const KernelArgs& a) {
  ET_RETURN_IF_ERROR(expect_arity(a, "mask_grad", 2, 2, 1));
  const TensorView &dy = a.in(0), &bits = a.in(1), &out = a.out(0);
  ET_RETURN_IF_ERROR(cpu::want_float("mask_grad dy", dy));
  ET_RETURN_IF_ERROR(want_mask_shape("mask_grad", "bits", bits, dy.numel()));
  ET_RETURN_IF_ERROR(cpu::want_same_dtype("mask_grad output", out, dy));
  return cpu::want_same_shape("mask_grad output", out, dy);
}

// Whole bytes of f32 [i, end) with the bits as a vector lane mask: AVX-512 loads 16 elements
// under a 16-bit mask (masked-off lanes read as 0, so a NaN there never leaks); AVX spreads one
// byte across 8 lanes and compares against each lane's bit. Returns the first element left.
int64_t mask_grad_vector(const float* dy, const uint8_t* bits, int64_t i, int64_t end, float* out) {
#if defined(__AVX512F__)
  for (; i + 16 <= end; i += 16) {
    const __mmask16 m = static_cast<__mmask16>(bits[i >> 3] | (bits[(i >> 3) + 1] << 8));
    _mm512_storeu_ps(out + i, _mm512_maskz_loadu_ps(m, dy + i));
  }
#endif
#if defined(__AVX2__)
  const __m256i lane_bit = _mm256_setr_epi32(1, 2, 4, 8, 16, 32, 64, 128);
  for (; i + 8 <= end; i += 8) {
    const __m256i byte = _mm256_set1_epi32(bits[i >> 3]);
    const __m256i on = _mm256_cmpeq_epi32(_mm256_and_si256(byte, lane_bit), lane_bit);
    _mm256_storeu_ps(out + i, _mm256_and_ps(_mm256_castsi256_ps(on), _mm256_loadu_ps(dy + i)));
  }
#endif
  (void)dy, (void)bits, (void)end, (void)out;
  return i;
}

Status run_mask_grad(const KernelArgs& a) {
  const TensorView &dy = a.in(0), &bits = a.in(1), &out = a.out(0);
  const int64_t n = dy.numel();
  bool ok = cpu::visit_float(dy.dtype, [&](auto tag) {
    using T = typename decltype(tag)::type;
    const T* d = dy.as<T>();
    const uint8_t* m = bits.as<uint8_t>();
    T* o = out.as<T>();
    cpu::parallel_for(a, packed_bytes(n), kByteGrain, [&](int64_t b, int64_t e) {
      const int64_t end = std::min(e * 8, n);
      int64_t i = b * 8;
      if constexpr (std::is_same_v<T, float>) i = mask_grad_vector(d, m, i, std::min(e, n / 8) * 8, o);
      // flat over elements: the bit lookup is cheap and the loop stays branch-free
      for (; i < end; ++i) o[i] = ((m[i >> 3] >> (i & 7)) & 1) ? d[i] : T(0);
    });
  });
  return ok ? Status::Ok() : internal_error("mask_grad: dtype not dispatched");
}

}  // namespace

void register_mask_kernels(KernelRegistry& r) {
  r.add(KernelDef{"activation_mask", "activation_mask", &check_activation_mask, nullptr, &run_activation_mask});
  r.add(KernelDef{"mask_grad", "mask_grad", &check_mask_grad, nullptr, &run_mask_grad});
}

}  // namespace edgetune
