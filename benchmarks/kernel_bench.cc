// Times CPU kernels from the registry (conv, pool, norm, linear) on MobileNetV2/ResNet-sized nodes
// with a persistent thread pool, the way the executor calls them: check once, workspace from one
// buffer, then repeated runs (best of a time budget). Not a test; not built by CMake. Build
// against a runtime library that dev-build.sh produced, from the repository root:
//
//   csrc/dev-build.sh k2 >/dev/null
//   g++ -O3 -march=native -std=c++17 -Icsrc benchmarks/kernel_bench.cc build/dev-k2/csrc/libedgetune_runtime.a
//       -lopenblas -lpthread -o build/kernel_bench          (drop -lopenblas for an OWN build)
//   build/kernel_bench [SUBSTRING]
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <random>
#include <string>
#include <vector>

#include "core/kernel.h"

using namespace edgetune;

namespace {

struct Case {
  std::string what, kernel;
  std::vector<std::vector<int64_t>> ins, outs;
  std::vector<DType> out_dtypes;  // empty = all f32
  std::vector<DType> in_dtypes;   // empty = all f32
  Attrs attrs;
  double flops;  // 0 = report ms only
};

Attrs conv_attrs(int64_t s, int64_t p, int64_t g, std::vector<int64_t> extra_shape = {}, const char* extra = nullptr) {
  Attrs a({ints_attr("stride", {s, s}), ints_attr("padding", {p, p}), ints_attr("dilation", {1, 1}), int_attr("groups", g)});
  if (extra) a.add(ints_attr(extra, std::move(extra_shape)));
  return a;
}

// conv2d + both backward ops for x[n,c,h,w] * w[o,c/g,k,k]
void add_conv(std::vector<Case>& cs, const std::string& what, int64_t n, int64_t c, int64_t h, int64_t o, int64_t k,
              int64_t s, int64_t p, int64_t g) {
  const int64_t ho = (h + 2 * p - k) / s + 1;
  const double flops = 2.0 * n * o * ho * ho * (c / g) * k * k;
  std::vector<int64_t> x{n, c, h, h}, w{o, c / g, k, k}, y{n, o, ho, ho};
  cs.push_back({what + " fwd", "conv2d", {x, w, {o}}, {y}, {}, {}, conv_attrs(s, p, g), flops});
  cs.push_back({what + " dgrad", "conv2d_grad_input", {y, w}, {x}, {}, {}, conv_attrs(s, p, g, x, "input_shape"), flops});
  cs.push_back({what + " wgrad", "conv2d_grad_weight", {y, x}, {w}, {}, {}, conv_attrs(s, p, g, w, "weight_shape"), flops});
}

// The same conv2d + backward ops in both layouts (attr layout = "nhwc": x, y, dy, dx stored
// [N, H, W, C]; input_shape stays [N, C, H, W]); names "NHWC-vs-NCHW <what> nchw|nhwc <op>", so the
// filter "NHWC" selects every pair.
void add_conv_layouts(std::vector<Case>& cs, const std::string& what, int64_t n, int64_t c, int64_t h, int64_t o,
                      int64_t k, int64_t s, int64_t p, int64_t g) {
  const int64_t ho = (h + 2 * p - k) / s + 1;
  const double flops = 2.0 * n * o * ho * ho * (c / g) * k * k;
  const std::vector<int64_t> w{o, c / g, k, k};
  for (bool nhwc : {false, true}) {
    const std::string name = "NHWC-vs-NCHW " + what + (nhwc ? " nhwc" : " nchw");
    std::vector<int64_t> x = nhwc ? std::vector<int64_t>{n, h, h, c} : std::vector<int64_t>{n, c, h, h};
    std::vector<int64_t> y = nhwc ? std::vector<int64_t>{n, ho, ho, o} : std::vector<int64_t>{n, o, ho, ho};
    auto attrs = [&](std::vector<int64_t> extra_shape, const char* extra) {
      Attrs a = conv_attrs(s, p, g, std::move(extra_shape), extra);
      if (nhwc) a.add(string_attr("layout", "nhwc"));
      return a;
    };
    cs.push_back({name + " fwd", "conv2d", {x, w, {o}}, {y}, {}, {}, attrs({}, nullptr), flops});
    cs.push_back({name + " dgrad", "conv2d_grad_input", {y, w}, {x}, {}, {}, attrs({n, c, h, h}, "input_shape"), flops});
    cs.push_back({name + " wgrad", "conv2d_grad_weight", {y, x}, {w}, {}, {}, attrs(w, "weight_shape"), flops});
  }
}

std::vector<Case> cases() {
  std::vector<Case> cs;
  // MobileNetV2-224, batch 8: the pointwise and depthwise convs of its blocks, and one BN, per layout
  add_conv_layouts(cs, "pw 16->96 @112", 8, 16, 112, 96, 1, 1, 0, 1);
  add_conv_layouts(cs, "pw 144->24 @56", 8, 144, 56, 24, 1, 1, 0, 1);
  add_conv_layouts(cs, "pw 192->32 @28", 8, 192, 28, 32, 1, 1, 0, 1);
  add_conv_layouts(cs, "pw 384->64 @14", 8, 384, 14, 64, 1, 1, 0, 1);
  add_conv_layouts(cs, "pw 960->160 @7", 8, 960, 7, 160, 1, 1, 0, 1);
  add_conv_layouts(cs, "pw 320->1280 @7", 8, 320, 7, 1280, 1, 1, 0, 1);
  add_conv_layouts(cs, "dw 3x3 s2 96 @112", 8, 96, 112, 96, 3, 2, 1, 96);
  add_conv_layouts(cs, "dw 3x3 s1 144 @56", 8, 144, 56, 144, 3, 1, 1, 144);
  add_conv_layouts(cs, "dw 3x3 s1 384 @14", 8, 384, 14, 384, 3, 1, 1, 384);
  add_conv_layouts(cs, "dw 3x3 s1 960 @7", 8, 960, 7, 960, 3, 1, 1, 960);
  for (bool nhwc : {false, true}) {
    const std::string name = std::string("NHWC-vs-NCHW BN 8x96x112x112") + (nhwc ? " nhwc" : " nchw");
    Attrs a({float_attr("momentum", 0.1), float_attr("eps", 1e-5)});
    Attrs m({ints_attr("output_mask", {1, 1, 1}), float_attr("eps", 1e-5)});
    if (nhwc) a.add(string_attr("layout", "nhwc")), m.add(string_attr("layout", "nhwc"));
    std::vector<int64_t> x = nhwc ? std::vector<int64_t>{8, 112, 112, 96} : std::vector<int64_t>{8, 96, 112, 112};
    std::vector<int64_t> c{96};
    cs.push_back({name + " train", "batch_norm_train", {x, c, c, c, c}, {x, c, c, c, c}, {}, {}, a, 0});
    cs.push_back({name + " backward", "batch_norm_backward", {x, x, c, c, c}, {x, c, c}, {}, {}, m, 0});
  }
  add_conv(cs, "MBv2 stem 3x3 s2 3->32 @224", 8, 3, 224, 32, 3, 2, 1, 1);
  add_conv(cs, "MBv2 dw 3x3 s1 32 @112", 8, 32, 112, 32, 3, 1, 1, 32);
  add_conv(cs, "MBv2 dw 3x3 s2 96 @112", 8, 96, 112, 96, 3, 2, 1, 96);
  add_conv(cs, "MBv2 dw 3x3 s1 144 @56", 8, 144, 56, 144, 3, 1, 1, 144);
  add_conv(cs, "MBv2 pw 1x1 16->96 @112", 8, 16, 112, 96, 1, 1, 0, 1);
  add_conv(cs, "MBv2 pw 1x1 144->24 @56", 8, 144, 56, 24, 1, 1, 0, 1);
  add_conv(cs, "MBv2 pw 1x1 960->320 @7", 8, 960, 7, 320, 1, 1, 0, 1);
  add_conv(cs, "ResNet 3x3 64->64 @56", 8, 64, 56, 64, 3, 1, 1, 1);
  add_conv(cs, "ResNet 3x3 256->256 @14", 8, 256, 14, 256, 3, 1, 1, 1);
  add_conv(cs, "ResNet stem 7x7 s2 3->64 @224", 8, 3, 224, 64, 7, 2, 3, 1);
  {
    Attrs a({ints_attr("kernel", {3, 3}), ints_attr("stride", {2, 2}), ints_attr("padding", {1, 1}), ints_attr("dilation", {1, 1}),
             int_attr("ceil_mode", 0)});
    cs.push_back({"ResNet maxpool 3x3 s2 64 @112", "max_pool2d", {{8, 64, 112, 112}}, {{8, 64, 56, 56}, {8, 64, 56, 56}},
                  {DType::f32, DType::i64}, {}, a, 0});
    Attrs b({ints_attr("input_shape", {8, 64, 112, 112})});
    cs.push_back({"ResNet maxpool backward", "max_pool2d_backward", {{8, 64, 56, 56}, {8, 64, 56, 56}}, {{8, 64, 112, 112}},
                  {}, {DType::f32, DType::i64}, b, 0});
  }
  {
    Attrs a({float_attr("momentum", 0.1), float_attr("eps", 1e-5)});
    std::vector<int64_t> x{8, 96, 112, 112}, c{96};
    cs.push_back({"BN train 8x96x112x112", "batch_norm_train", {x, c, c, c, c}, {x, c, c, c, c}, {}, {}, a, 0});
    Attrs m({ints_attr("output_mask", {1, 1, 1}), float_attr("eps", 1e-5)});
    cs.push_back({"BN backward 8x96x112x112", "batch_norm_backward", {x, x, c, c, c}, {x, c, c}, {}, {}, m, 0});
  }
  {
    Attrs a({ints_attr("normalized_shape", {384}), float_attr("eps", 1e-5)});
    cs.push_back({"LN 8x128x384", "layer_norm", {{8, 128, 384}, {384}, {384}}, {{8, 128, 384}, {8, 128, 1}, {8, 128, 1}},
                  {}, {}, a, 0});
    cs.push_back({"linear 1024x384->1536", "linear", {{8, 128, 384}, {1536, 384}, {1536}}, {{8, 128, 1536}}, {}, {},
                  Attrs(), 2.0 * 1024 * 384 * 1536});
  }
  return cs;
}

TensorView view(const std::vector<int64_t>& shape, DType dt, std::vector<std::vector<char>>& store) {
  TensorView t;
  t.dtype = dt;
  t.rank = static_cast<int>(shape.size());
  for (int i = 0; i < t.rank; ++i) t.shape[i] = shape[i];
  store.emplace_back(t.nbytes());
  t.data = store.back().data();
  return t;
}

}  // namespace

int main(int argc, char** argv) {
  const std::string filter = argc > 1 ? argv[1] : "";
  const KernelRegistry* reg = KernelRegistry::for_backend("cpu");
  ThreadPool pools[2] = {ThreadPool(1), ThreadPool(2)};
  std::mt19937 rng(1);
  std::uniform_real_distribution<float> u(0.5f, 1.5f);
  std::printf("%-48s %-20s %10s %10s %8s %8s\n", "case", "kernel", "1T ms", "2T ms", "1T GF/s", "2T GF/s");
  for (Case& c : cases()) {
    if (!filter.empty() && c.what.find(filter) == std::string::npos) continue;
    const KernelDef* k = reg->find(c.kernel);
    if (!k) {
      std::printf("%-48s no kernel %s\n", c.what.c_str(), c.kernel.c_str());
      continue;
    }
    std::vector<std::vector<char>> store;
    std::vector<TensorView> ins, outs;
    for (size_t i = 0; i < c.ins.size(); ++i)
      ins.push_back(view(c.ins[i], c.in_dtypes.empty() ? DType::f32 : c.in_dtypes[i], store));
    for (size_t i = 0; i < c.outs.size(); ++i)
      outs.push_back(view(c.outs[i], c.out_dtypes.empty() ? DType::f32 : c.out_dtypes[i], store));
    for (auto& t : ins) {
      if (t.dtype == DType::f32) {
        for (int64_t i = 0; i < t.numel(); ++i) t.as<float>()[i] = u(rng);
      } else {  // indices: spread over the 112x112 plane
        for (int64_t i = 0; i < t.numel(); ++i) t.as<int64_t>()[i] = (i * 7) % (112 * 112);
      }
    }
    KernelArgs a{ins.data(), (int)ins.size(), outs.data(), (int)outs.size(), &c.attrs, nullptr, 0, nullptr};
    if (k->check) {
      Status st = k->check(a);
      if (!st.ok()) {
        std::printf("%-48s check failed: %s\n", c.what.c_str(), st.to_string().c_str());
        continue;
      }
    }
    const size_t ws = k->workspace ? k->workspace(a) : 0;
    std::vector<char> wsbuf(ws + 64);
    a.workspace = ws ? wsbuf.data() : nullptr;
    a.workspace_bytes = ws;
    double ms[2];
    for (int p = 0; p < 2; ++p) {
      a.pool = &pools[p];
      (void)k->run(a);
      std::vector<double> ts;
      auto start = std::chrono::steady_clock::now();
      for (;;) {
        auto t0 = std::chrono::steady_clock::now();
        (void)k->run(a);
        auto t1 = std::chrono::steady_clock::now();
        ts.push_back(std::chrono::duration<double>(t1 - t0).count());
        if (std::chrono::duration<double>(t1 - start).count() > 0.3 && ts.size() >= 3) break;
      }
      std::sort(ts.begin(), ts.end());
      ms[p] = ts[0] * 1e3;  // best run: the machine is shared, the minimum is the least disturbed
    }
    if (c.flops > 0)
      std::printf("%-48s %-20s %10.3f %10.3f %8.1f %8.1f\n", c.what.c_str(), c.kernel.c_str(), ms[0], ms[1],
                  c.flops / ms[0] * 1e-6, c.flops / ms[1] * 1e-6);
    else
      std::printf("%-48s %-20s %10.3f %10.3f\n", c.what.c_str(), c.kernel.c_str(), ms[0], ms[1]);
  }
  return 0;
}
