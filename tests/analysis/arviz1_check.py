"""Exercise the ArviZ calls of pyro_irm.analysis.convert / group_diagnostics on ArviZ 1.x, with the
conversion functions loaded from the package source without importing torch."""

import ast
import sys
import types
import warnings

import numpy as np

src = open(sys.argv[1]).read()
tree = ast.parse(src)
keep = [
    n
    for n in tree.body
    if isinstance(n, ast.FunctionDef)
    and n.name
    in (
        "_arviz",
        "arviz_major_version",
        "from_groups",
        "summary",
        "with_point_estimates",
        "has_group",
        "row_values",
    )
] + [n for n in tree.body if isinstance(n, ast.Assign) and getattr(n.targets[0], "id", "") == "POINT_GROUP"]
module = types.ModuleType("convert_subset")
module.__dict__.update(warnings=warnings, np=np, Any=object)
exec(compile(ast.Module(body=keep, type_ignores=[]), "convert.py", "exec"), module.__dict__)
assert module.arviz_major_version() >= 1
rows, groups = 30, ["engaged_positive", "silent_positive", "engaged_negative", "silent_negative"]
rng = np.random.default_rng(0)
p = rng.dirichlet(np.ones(4), size=rows)
payload = {
    "posterior": {
        "group_probability": np.broadcast_to(p, (2, 5, rows, 4)).copy(),
        "reward": rng.normal(size=(2, 5, rows)),
    },
    "log_likelihood": {"action": rng.normal(size=(2, 5, rows))},
    "observed_data": {"action": rng.integers(0, 2, rows).astype(float)},
    "constant_data": {"true_group": rng.integers(0, 4, rows)},
}
dims = {"group_probability": ["row", "group"], "reward": ["row"], "action": ["row"], "true_group": ["row"]}
data = module.from_groups(payload, dims=dims, coords={"row": np.arange(rows), "group": groups})
assert type(data).__name__ == "DataTree"
gp = data["posterior"]["group_probability"]
assert gp.dims == ("chain", "draw", "row", "group")
assert abs(float(gp.sel(group="silent_positive", row=3).mean()) - p[3, 1]) < 1e-12
assert data["posterior"]["group_probability"].mean(dim=("chain", "draw")).values.shape == (rows, 4)
assert np.array_equal(data["constant_data"]["true_group"].values, payload["constant_data"]["true_group"])
assert len(module.summary(data, var_names=["reward"], kind="stats")) == rows
assert {"mean", "r_hat", "ess_bulk"} <= set(module.summary(data, var_names=["reward"]).columns)
point = module.with_point_estimates(
    module.from_groups(
        {"observed_data": payload["observed_data"]}, dims=dims, coords={"row": np.arange(rows)}
    ),
    {"group_probability": p, "reward": rng.normal(size=rows)},
    dims,
    {"row": np.arange(rows), "group": groups},
)
assert module.has_group(point, "point_estimate") and not module.has_group(point, "posterior")
assert point["point_estimate"]["group_probability"].dims == ("row", "group")
assert np.allclose(module.row_values(point, "group_probability"), p)
assert list(module.summary(point, var_names=["reward"]).columns) == ["mean"]
print("arviz 1.x: ok")
