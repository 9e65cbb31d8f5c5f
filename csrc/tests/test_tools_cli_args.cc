// GoogleTest tests of tools/cli_args.h: edgetune-train's flags in both spellings, the checks
// that turn mistakes into one clear message (unknown flag, bad number, --epochs with --steps,
// missing PLAN or --inputs) and the embedded-plan mode without a PLAN. Suite: ToolsCliArgs.
#include <gtest/gtest.h>

#include <initializer_list>
#include <string>
#include <vector>

#include "tools/cli_args.h"

namespace edgetune {
namespace tools {
namespace {

Result<TrainArgs> parse(std::initializer_list<const char*> args, bool embedded = false) {
  std::vector<const char*> argv = {"edgetune-train"};
  argv.insert(argv.end(), args.begin(), args.end());
  return parse_args(static_cast<int>(argv.size()), argv.data(), embedded);
}

std::string error_of(std::initializer_list<const char*> args, bool embedded = false) {
  auto r = parse(args, embedded);
  return r.ok() ? "" : r.status().message();
}

TEST(ToolsCliArgs, ParsesAFullCommandLine) {
  auto r = parse({"m.etp", "--inputs", "x.npy", "--inputs=x2.npy", "--targets", "y.npy", "--epochs", "3", "--batch=8",
                  "--seed", "18446744073709551615", "--threads", "2", "--lr", "1e-3", "--out", "t.safetensors",
                  "--log-every", "5", "--quiet", "--no-shuffle"});
  ASSERT_TRUE(r.ok()) << r.status().to_string();
  const TrainArgs& a = r.value();
  EXPECT_EQ(a.plan, "m.etp");
  EXPECT_EQ(a.inputs, (std::vector<std::string>{"x.npy", "x2.npy"}));
  EXPECT_EQ(a.targets, (std::vector<std::string>{"y.npy"}));
  EXPECT_EQ(a.epochs, 3);
  EXPECT_EQ(a.steps, 0);
  EXPECT_EQ(a.batch, 8);
  EXPECT_EQ(a.seed, ~0ULL);
  EXPECT_EQ(a.threads, 2);
  EXPECT_TRUE(a.has_lr);
  EXPECT_DOUBLE_EQ(a.lr, 1e-3);
  EXPECT_EQ(a.out, "t.safetensors");
  EXPECT_EQ(a.log_every, 5);
  EXPECT_TRUE(a.quiet);
  EXPECT_FALSE(a.shuffle);
}

TEST(ToolsCliArgs, Defaults) {
  auto r = parse({"m.etp", "--inputs", "x.npy", "--targets", "y.npy"});
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->epochs, 0);
  EXPECT_EQ(r->steps, 0);
  EXPECT_EQ(r->seed, 0u);
  EXPECT_FALSE(r->has_lr);
  EXPECT_TRUE(r->shuffle);
  EXPECT_TRUE(r->out.empty());
}

TEST(ToolsCliArgs, RejectsMistakesByName) {
  EXPECT_NE(error_of({"m.etp", "--inputs", "x.npy", "--epoch", "3"}).find("unknown option '--epoch'"), std::string::npos);
  EXPECT_NE(error_of({"m.etp", "--inputs", "x.npy", "--epochs", "ten"}).find("--epochs"), std::string::npos);
  EXPECT_NE(error_of({"m.etp", "--inputs", "x.npy", "--epochs", "0"}).find("positive"), std::string::npos);
  EXPECT_NE(error_of({"m.etp", "--inputs", "x.npy", "--steps", "-4"}).find("--steps"), std::string::npos);
  EXPECT_NE(error_of({"m.etp", "--inputs", "x.npy", "--batch", "8x"}).find("--batch"), std::string::npos);
  EXPECT_NE(error_of({"m.etp", "--inputs", "x.npy", "--lr", "0"}).find("--lr"), std::string::npos);
  EXPECT_NE(error_of({"m.etp", "--inputs", "x.npy", "--lr", "nan"}).find("--lr"), std::string::npos);
  EXPECT_NE(error_of({"m.etp", "--inputs", "x.npy", "--seed", "-1"}).find("--seed"), std::string::npos);
  EXPECT_NE(error_of({"m.etp", "--inputs", "x.npy", "--out"}).find("needs a value"), std::string::npos);
  EXPECT_NE(error_of({"m.etp", "--inputs", "x.npy", "--epochs", "2", "--steps", "5"}).find("not both"),
            std::string::npos);
  EXPECT_NE(error_of({"m.etp", "--inputs", "x.npy", "--out", "a", "--out", "b"}).find("twice"), std::string::npos);
  EXPECT_NE(error_of({"m.etp", "--quiet=1", "--inputs", "x.npy"}).find("takes no value"), std::string::npos);
  // too large is not "expected a non-negative integer": say the maximum
  EXPECT_EQ(error_of({"m.etp", "--inputs", "x.npy", "--threads", "10000"}),
            "--threads: 10000 is more than the maximum of 4096");
  EXPECT_NE(error_of({"m.etp", "--inputs", "x.npy", "--threads", "99999999999999999999999"}).find("maximum of 4096"),
            std::string::npos);
}

TEST(ToolsCliArgs, PlanArgument) {
  EXPECT_NE(error_of({"--inputs", "x.npy"}).find("PLAN"), std::string::npos);
  EXPECT_NE(error_of({"a.etp", "b.etp", "--inputs", "x.npy"}).find("'b.etp'"), std::string::npos);
  EXPECT_NE(error_of({"m.etp"}).find("--inputs"), std::string::npos);
  auto info = parse({"m.etp", "--info"});
  ASSERT_TRUE(info.ok());  // --info needs no data
  EXPECT_TRUE(info->info);
}

TEST(ToolsCliArgs, EmbeddedPlanTakesNoPlanArgument) {
  auto r = parse({"--inputs", "x.npy", "--targets", "y.npy"}, /*embedded=*/true);
  ASSERT_TRUE(r.ok()) << r.status().to_string();
  EXPECT_TRUE(r->plan.empty());
  EXPECT_NE(error_of({"m.etp", "--inputs", "x.npy"}, true).find("built in"), std::string::npos);
  EXPECT_TRUE(parse({"--info"}, true).ok());
}

TEST(ToolsCliArgs, HelpNeedsNothingElse) {
  auto r = parse({"--help"});
  ASSERT_TRUE(r.ok());
  EXPECT_TRUE(r->help);
  EXPECT_NE(usage_text(false).find("PLAN.etp"), std::string::npos);
  EXPECT_EQ(usage_text(true).find("PLAN.etp --inputs"), std::string::npos);
}

TEST(ToolsCliArgs, CheckpointFlags) {
  auto a = parse({"m.etp", "--inputs", "x.npy", "--checkpoint", "c.ckpt"});
  ASSERT_TRUE(a.ok());
  EXPECT_EQ(a->checkpoint, "c.ckpt");
  EXPECT_EQ(a->checkpoint_every_seconds, 600);  // the default interval: 10 minutes
  EXPECT_EQ(a->checkpoint_every_steps, 0);
  auto b = parse({"m.etp", "--inputs", "x.npy", "--checkpoint", "c", "--checkpoint-every", "250", "--resume", "auto"});
  ASSERT_TRUE(b.ok());
  EXPECT_EQ(b->checkpoint_every_steps, 250);
  EXPECT_EQ(b->resume, "auto");
  for (const auto& [text, seconds] : {std::make_pair("30s", 30.0), std::make_pair("1.5m", 90.0), std::make_pair("2h", 7200.0)}) {
    auto c = parse({"m.etp", "--inputs", "x.npy", "--checkpoint", "c", "--checkpoint-every", text});
    ASSERT_TRUE(c.ok()) << text;
    EXPECT_EQ(c->checkpoint_every_seconds, seconds) << text;
    EXPECT_EQ(c->checkpoint_every_steps, 0) << text;
  }
  for (const char* bad : {"0", "-5", "5x", "m", "0s", "ns", ""})
    EXPECT_NE(error_of({"m.etp", "--inputs", "x.npy", "--checkpoint", "c", "--checkpoint-every", bad}).find("--checkpoint-every"),
              std::string::npos)
        << bad;
  EXPECT_NE(error_of({"m.etp", "--inputs", "x.npy", "--checkpoint-every", "5"}).find("needs --checkpoint"), std::string::npos);
  EXPECT_NE(error_of({"m.etp", "--inputs", "x.npy", "--resume", "auto"}).find("--checkpoint"), std::string::npos);
  EXPECT_NE(error_of({"m.etp", "--inputs", "x.npy", "--resume", "a", "--resume", "b"}).find("twice"), std::string::npos);
}

TEST(ToolsCliArgs, Backend) {
  auto d = parse({"m.etp", "--inputs", "x.npy"});
  ASSERT_TRUE(d.ok());
  EXPECT_EQ(d.value().backend, "cpu");
  auto c = parse({"m.etp", "--inputs", "x.npy", "--backend", "cuda"});
  ASSERT_TRUE(c.ok()) << c.status().to_string();
  EXPECT_EQ(c.value().backend, "cuda");
  auto e = parse({"--info", "--backend=cuda"}, /*embedded=*/true);  // an --emit-binary binary takes it too
  ASSERT_TRUE(e.ok()) << e.status().to_string();
  EXPECT_EQ(e.value().backend, "cuda");
  EXPECT_NE(error_of({"m.etp", "--inputs", "x.npy", "--backend", "tpu"}).find("expected cpu or cuda"), std::string::npos);
  EXPECT_NE(error_of({"m.etp", "--inputs", "x.npy", "--backend", "cpu", "--backend", "cuda"}).find("twice"),
            std::string::npos);
  EXPECT_NE(usage_text(false).find("--backend"), std::string::npos);
}

}  // namespace
}  // namespace tools
}  // namespace edgetune
