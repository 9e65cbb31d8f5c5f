"""The adapters' export table in the plan file (Plan.export, csrc/schema/plan.fbs): build_plan
writes `program.graph.adapters`, read_export gives back an equal ExportTable (configs parsed back
from their JSON text), read_plan_header says whether a plan has one (build_plan asks the native
module for the kernels' workspace sizes; nothing is run);
the binary's use of it is tests/e2e/test_adapter_export_binary.py."""

from __future__ import annotations

import json
import zlib

import pytest
import torch

import edgetune as et
from edgetune.compiler.adapters.export import Expr, ExportTable
from edgetune.compiler.errors import PlanError
from edgetune.compiler.generated.plan_schema import Plan as fb_plan
from edgetune.compiler.plan_file import FOOTER, build_plan, read_export, read_plan_header, split_footer


class Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = torch.nn.Linear(5, 7)
        self.fc2 = torch.nn.Linear(7, 3)

    def forward(self, x):
        return self.fc2(torch.relu(self.fc1(x)))


def _compile(spec):
    torch.manual_seed(0)
    return et.compile(Net(), (torch.randn(4, 5),), torch.randint(3, (4,)), loss="cross_entropy", peft=spec,
                      optimizer=et.optim.SGD(lr=0.1))


@pytest.mark.parametrize("spec", [
    et.peft.LoRA(r=2, alpha=4, targets=["fc1", "fc2"]),
    et.peft.LoRA(r=2, alpha=4, targets=["fc1"], init="pissa"),
    et.peft.LoRA(r=2, alpha=4, targets=["fc1", "fc2"], init="olora", use_dora=True, dropout=0.1),
], ids=["lora", "pissa", "dora-olora"])
def test_round_trip_of_a_compiled_adapter(spec):
    prog = _compile(spec)
    data = build_plan(prog)
    table = read_export(data)
    assert isinstance(table, ExportTable)
    assert table.as_dict() == prog.graph.adapters.as_dict()
    assert read_plan_header(data)["adapters"] is True


def test_every_field_and_step_round_trips():
    prog = _compile(et.peft.Full())
    table = ExportTable()
    table.peft_config = {"peft_type": "LORA", "r": 4, "nested": {"b": [1, 2.5, None], "a": "ü"}, "flag": True}
    table.peft_tensors = {
        "k.rows": Expr.rows(Expr.w("fc1.weight"), [0, -1, 6], Expr.w("fc1.bias").reshape([-1, 1])).steps,
        "k.cat": Expr.cat(-1, Expr.w("fc1.weight").t(), Expr.w("fc2.weight").t().scale(-0.5)).steps,
    }
    table.own_config["adapters"].append({"type": "ssf", "module": "fc1"})
    table.own_tensors = {"fc1.weight": (Expr.w("fc1.weight") / Expr.w("fc1.weight").rownorm().reshape([7, 1])).steps}
    table.merged = {"fc2.weight": (Expr.mm(Expr.w("fc2.weight"), Expr.w("fc1.weight").t()) * Expr.w("fc2.bias")
                                   - Expr.w("fc2.weight") + Expr.w("fc2.weight")).steps}
    table.drop_when_merged = ["a", "b"]
    table.hidden = ["h"]
    table.unmergeable = ["SSF on 'fc1' follows a nonlinearity"]
    prog.graph.adapters = table
    data = build_plan(prog)
    back = read_export(data)
    assert back.as_dict() == table.as_dict()
    # the steps as export.py builds them: (op, name, [ints], f)
    assert back.peft_tensors["k.rows"][-1] == ("rows", "", [0, -1, 6], 0.0)
    assert back.peft_tensors["k.cat"][-2] == ("scale", "", [], -0.5)


def test_configs_are_stored_as_the_adapter_files_json():
    """The JSON text edgetune-train writes verbatim is what adapter_files writes."""
    prog = _compile(et.peft.LoRA(r=2, alpha=4, targets=["fc1"]))
    body = split_footer(build_plan(prog))
    e = fb_plan.Plan.GetRootAs(body, 0).Export()
    table = prog.graph.adapters
    assert e.PeftConfig().decode() == json.dumps(table.peft_config, indent=2, sort_keys=True) + "\n"
    assert e.OwnConfig().decode() == json.dumps(table.own_config, indent=2, sort_keys=True) + "\n"


def test_no_adapters_no_table():
    data = build_plan(_compile(et.peft.Full()))
    assert read_export(data) is None
    assert read_plan_header(data)["adapters"] is False
    body = split_footer(data)
    assert fb_plan.Plan.GetRootAs(body, 0).Export() is None


def test_damaged_export_table_is_a_plan_error():
    prog = _compile(et.peft.LoRA(r=2, alpha=4, targets=["fc1"]))
    data = bytearray(build_plan(prog))
    text = (json.dumps(prog.graph.adapters.own_config, indent=2, sort_keys=True) + "\n").encode()
    at = bytes(data).find(text)
    assert at > 0
    data[at] = ord("]")  # no longer JSON; the checksum rewritten so the reader gets that far
    body = bytes(data[:-FOOTER.size])
    fixed = body + FOOTER.pack(zlib.crc32(body), b"ETCK")
    with pytest.raises(PlanError, match="export table does not read"):
        read_export(fixed)
    with pytest.raises(PlanError, match="checksum"):
        read_export(bytes(data))
