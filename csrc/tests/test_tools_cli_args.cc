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

TEST(ToolsCliArgs, AdapterOutputs) {
  auto r = parse({"m.etp", "--inputs", "x.npy", "--targets", "y.npy", "--out", "adapter/", "--merged-out", "m.st"});
  ASSERT_TRUE(r.ok()) << r.status().to_string();
  EXPECT_EQ(r.value().adapter_out, "adapter/");  // a trailing slash: the adapter directory
  EXPECT_EQ(r.value().out, "");
  EXPECT_EQ(r.value().merged_out, "m.st");
  auto both = parse({"m.etp", "--inputs", "x.npy", "--targets", "y.npy", "--out", "w.st", "--adapter-out", "a"});
  ASSERT_TRUE(both.ok()) << both.status().to_string();
  EXPECT_EQ(both.value().out, "w.st");
  EXPECT_EQ(both.value().adapter_out, "a");
  EXPECT_NE(error_of({"m.etp", "--inputs", "x.npy", "--out", "a/", "--adapter-out", "b"}).find("twice"),
            std::string::npos);
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

TEST(ToolsCliArgs, InputsTakeCommaSeparatedLists) {
  auto r = parse({"m.etp", "--inputs", "ids.npy,mask.npy", "--targets", "y.npy"});
  ASSERT_TRUE(r.ok()) << r.status().to_string();
  EXPECT_EQ(r->inputs, (std::vector<std::string>{"ids.npy", "mask.npy"}));
  // a list and a repeated flag add up, in order
  auto both = parse({"m.etp", "--inputs=a.npy,b.npy", "--inputs", "c.npy", "--targets", "y.npy"});
  ASSERT_TRUE(both.ok()) << both.status().to_string();
  EXPECT_EQ(both->inputs, (std::vector<std::string>{"a.npy", "b.npy", "c.npy"}));
  auto named = parse({"m.etp", "--inputs", "attention_mask=mask.npy,input_ids=ids.npy", "--targets", "y.npy"});
  ASSERT_TRUE(named.ok()) << named.status().to_string();
  EXPECT_EQ(named->inputs, (std::vector<std::string>{"attention_mask=mask.npy", "input_ids=ids.npy"}));
  for (const char* bad : {"a.npy,", ",a.npy", "a.npy,,b.npy", ","}) {
    const std::string e = error_of({"m.etp", "--inputs", bad, "--targets", "y.npy"});
    EXPECT_NE(e.find("--inputs: empty file name in '" + std::string(bad) + "'"), std::string::npos) << bad << ": " << e;
  }
  EXPECT_NE(usage_text(false).find("input_ids=ids.npy,attention_mask=mask.npy"), std::string::npos);
}

// order_inputs with a plan whose model inputs are (input_ids, attention_mask) and target is 'target'
Result<std::vector<std::string>> ordered(std::initializer_list<const char*> inputs,
                                         std::vector<std::string> model = {"input_ids", "attention_mask"}) {
  TrainArgs a;
  for (const char* i : inputs) a.inputs.push_back(i);
  return order_inputs(a, model, {"target"});
}

std::string order_error(std::initializer_list<const char*> inputs,
                        std::vector<std::string> model = {"input_ids", "attention_mask"}) {
  auto r = ordered(inputs, std::move(model));
  return r.ok() ? "" : r.status().message();
}

TEST(ToolsCliArgs, OrderInputsPositionalAndNamed) {
  using V = std::vector<std::string>;
  auto pos = ordered({"ids.npy", "mask.npy"});
  ASSERT_TRUE(pos.ok()) << pos.status().to_string();
  EXPECT_EQ(pos.value(), (V{"ids.npy", "mask.npy"}));
  auto named = ordered({"attention_mask=m.npy", "input_ids=dir/i.npy"});  // any order: placed by name
  ASSERT_TRUE(named.ok()) << named.status().to_string();
  EXPECT_EQ(named.value(), (V{"dir/i.npy", "m.npy"}));
  // a file name holding '=' stays a file when the part before it is no input name and has a '/' or '.'
  auto paths = ordered({"./a=b.npy", "data/x=1.npy"});
  ASSERT_TRUE(paths.ok()) << paths.status().to_string();
  EXPECT_EQ(paths.value(), (V{"./a=b.npy", "data/x=1.npy"}));
  // plan names with dots (ONNX names such as 'input.1') are still names
  auto onnx = ordered({"mask.2=m.npy", "input.1=i.npy"}, {"input.1", "mask.2"});
  ASSERT_TRUE(onnx.ok()) << onnx.status().to_string();
  EXPECT_EQ(onnx.value(), (V{"i.npy", "m.npy"}));
  // one input: the old single-file form
  auto one = ordered({"x.npy"}, {"x"});
  ASSERT_TRUE(one.ok());
  EXPECT_EQ(one.value(), (V{"x.npy"}));
  auto one_named = ordered({"x=x.npy"}, {"x"});
  ASSERT_TRUE(one_named.ok());
  EXPECT_EQ(one_named.value(), (V{"x.npy"}));
}

TEST(ToolsCliArgs, OrderInputsRejectsMistakesByName) {
  // wrong count of positional files: the plan's names and the named form in the message
  std::string e = order_error({"ids.npy"});
  EXPECT_NE(e.find("the plan takes 2 model inputs (input_ids, attention_mask), got 1 --inputs file (ids.npy)"),
            std::string::npos) << e;
  EXPECT_NE(e.find("--inputs input_ids=FILE,attention_mask=FILE"), std::string::npos) << e;
  e = order_error({"a.npy", "b.npy", "c.npy"});
  EXPECT_NE(e.find("got 3 --inputs files (a.npy, b.npy, c.npy)"), std::string::npos) << e;
  e = order_error({"a.npy", "b.npy"}, {"x"});
  EXPECT_NE(e.find("the plan takes 1 model input (x), got 2"), std::string::npos) << e;
  // unknown name, the target's name, a name twice, a name missing, an empty name or file
  e = order_error({"input_ids=i.npy", "mask=m.npy"});
  EXPECT_NE(e.find("the plan has no model input 'mask' (its model inputs: input_ids, attention_mask"),
            std::string::npos) << e;
  e = order_error({"input_ids=i.npy", "target=y.npy"});
  EXPECT_NE(e.find("'target' is the plan's target"), std::string::npos) << e;
  EXPECT_NE(e.find("--targets y.npy"), std::string::npos) << e;
  e = order_error({"input_ids=i.npy", "input_ids=j.npy"});
  EXPECT_NE(e.find("model input 'input_ids' is given twice (i.npy and j.npy)"), std::string::npos) << e;
  e = order_error({"input_ids=i.npy"});
  EXPECT_NE(e.find("no file for model input 'attention_mask'"), std::string::npos) << e;
  e = order_error({"input_ids=i.npy", "attention_mask="});
  EXPECT_NE(e.find("no file after 'attention_mask='"), std::string::npos) << e;
  e = order_error({"=i.npy", "attention_mask=m.npy"});
  EXPECT_NE(e.find("empty input name"), std::string::npos) << e;
  // the two forms do not mix
  e = order_error({"input_ids=i.npy", "m.npy"});
  EXPECT_NE(e.find("name every file (NAME=FILE) or none: 'input_ids=i.npy' is named, 'm.npy' is not"),
            std::string::npos) << e;
  // "v=1.npy" looks like NAME=FILE: refused as an unknown name, with the way to say it is a file
  e = order_error({"v=1.npy", "attention_mask=m.npy"});
  EXPECT_NE(e.find("no model input 'v'"), std::string::npos) << e;
  EXPECT_NE(e.find("./v=1.npy"), std::string::npos) << e;
}

}  // namespace
}  // namespace tools
}  // namespace edgetune
