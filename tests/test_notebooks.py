"""The notebooks in notebooks/ run top to bottom, and the numbers they show agree
with the R references (tests/reference/*.json) where one exists.

Each notebook is executed with nbclient in a kernel running this interpreter
(``sys.executable``, through a kernelspec written to a temporary folder, so a
system-wide ``python3`` kernel is never picked up).  A check cell appended to
the executed copy prints the notebook's own variables as JSON; they are compared
with the R values named in each test.
"""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import ipykernel  # noqa: F401  (the kernel; declared in the test extra)
import nbclient
import nbformat
import pytest
from _refdata import load_reference

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"
KERNEL = "mixedanova-test"


@pytest.fixture(scope="module")
def kernel_env(tmp_path_factory):
    """A kernelspec for the running interpreter, found through JUPYTER_PATH."""
    base = tmp_path_factory.mktemp("jupyter")
    spec = base / "kernels" / KERNEL
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "mixedanova tests", "language": "python"}))
    old = {k: os.environ.get(k) for k in ("JUPYTER_PATH", "PYTHONPATH", "MPLBACKEND")}
    os.environ["JUPYTER_PATH"] = str(base)
    # the kernel imports the same mixedanova as the tests
    pkg_root = str(Path(__import__("mixedanova").__file__).resolve().parents[1])
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (pkg_root, old["PYTHONPATH"]) if p)
    os.environ.pop("MPLBACKEND", None)  # the kernel's inline backend needs no display
    yield
    for k, v in old.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


def run(name: str, check: str) -> dict:
    """Execute ``notebooks/name`` plus a final cell printing ``json.dumps(check)``."""
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    assert all(not c.get("outputs") for c in nb.cells if c.cell_type == "code"), \
        f"{name} is stored with outputs; clear them"
    nb.cells.append(nbformat.v4.new_code_cell(
        "import json as _json\nprint(_json.dumps(" + check + "))"))
    client = nbclient.NotebookClient(nb, timeout=300, kernel_name=KERNEL,
                                     resources={"metadata": {"path": str(NOTEBOOKS)}})
    client.execute()
    for cell in nb.cells[:-1]:
        for out in cell.get("outputs", []):
            assert out.get("output_type") != "error", f"{name}: {out.get('ename')}"
    text = "".join(o.get("text", "") for o in nb.cells[-1].outputs if o.output_type == "stream")
    return json.loads(text)


def _vc(ref: dict) -> dict:
    """``{group: vcov}`` of the variances in a reference ``varcorr``."""
    return {r["group"]: r["vcov"] for r in ref["varcorr"] if r["var2"] is None}


def test_every_notebook_is_tested():
    tested = {"01_oneway_random", "02_random_blocks", "03_nested", "04_split_plot",
              "05_random_regression", "06_plants_pots", "07_serial_correlation"}
    assert {p.stem for p in NOTEBOOKS.glob("*.ipynb")} == tested


VC = "{{g: float(v) for g, v in zip({0}.varcomp['group'], {0}.varcomp['vcov'])}}"


def test_01_oneway(kernel_env):
    got = run("01_oneway_random.ipynb", "{" + ", ".join([
        f"'dye_reml': {VC.format('dye_reml')}", f"'dye_ml': {VC.format('dye_ml')}",
        f"'dye2_reml': {VC.format('dye2_reml')}", f"'rail_reml': {VC.format('rail_reml')}",
        "'dye2_raw': dye2_ow.s2_a_raw", "'dye_mu': float(dye_reml.fe_params.iloc[0])",
        "'rail_weights': rail_ow.weights.tolist()"]) + "}")
    # lme4: as.data.frame(VarCorr(m)) of the REML and ML fits
    for key, case in (("dye_reml", "dyestuff_reml"), ("dye_ml", "dyestuff_ml"),
                      ("rail_reml", "rail_reml")):
        ref = _vc(load_reference(case))
        assert got[key] == pytest.approx(ref, rel=1e-4), case
    ref2 = load_reference("dyestuff2_reml")
    # lme4: singular Dyestuff2 fit; base R aov(): negative moment estimate
    assert got["dye2_reml"]["Residual"] == pytest.approx(_vc(ref2)["Residual"], rel=1e-4)
    assert got["dye2_reml"]["Batch"] == pytest.approx(0.0, abs=1e-8)
    assert got["dye2_raw"] == pytest.approx(ref2["moments"]["estimates"]["Batch"], rel=1e-6)
    assert got["dye_mu"] == pytest.approx(1527.5, rel=1e-10)  # lme4: fixef(m)
    # unbalanced Rail: the rail with one value weighs less
    assert got["rail_weights"][0] < min(got["rail_weights"][1:])


def test_02_random_blocks(kernel_env):
    got = run("02_random_blocks.ipynb", "{" + ", ".join([
        f"'reml': {VC.format('reml')}", "'rho': float(rho)",
        "'moments': aov.moment_estimates['estimate'].to_dict()",
        "'F_treat': float(aov.ems_table().at['treat', 'F'])",
        "'cs': bool(np.allclose(first, cs))"]) + "}")
    ref = load_reference("bhh_penicillin_reml")
    assert got["reml"] == pytest.approx(_vc(ref), rel=1e-4)  # lme4: VarCorr(m)
    assert got["moments"] == pytest.approx(ref["moments"]["estimates"], rel=1e-6)  # aov()
    f_ref = next(r["F"] for r in ref["moments"]["table"] if r["source"] == "treat")
    assert got["F_treat"] == pytest.approx(f_ref, rel=1e-6)
    v = _vc(ref)
    assert got["rho"] == pytest.approx(v["blend"] / (v["blend"] + v["Residual"]), rel=1e-4)
    assert got["cs"] is True


def test_03_nested(kernel_env):
    got = run("03_nested.ipynb", "{" + ", ".join([
        f"'reml': {VC.format('reml')}",
        "'moments': aov.moment_estimates['estimate'].to_dict()",
        "'pigment': pig.estimates.tolist()", "'pigment_se': pig.se.tolist()"]) + "}")
    ref = load_reference("pastes_nested_reml")
    assert got["reml"] == pytest.approx(_vc(ref), rel=1e-4)  # lme4: VarCorr(m)
    assert got["moments"] == pytest.approx(ref["moments"]["estimates"], rel=1e-6)  # aov()
    # the textbook's components of the pigment paste study
    assert [round(x, 3) for x in got["pigment"]] == [7.128, 28.533, 0.917]
    se_batch = (2 * ((86.495 / 4) ** 2 / 16 + (57.983 / 4) ** 2 / 17)) ** 0.5
    assert got["pigment_se"][0] == pytest.approx(se_batch, rel=1e-10)


def test_04_split_plot(kernel_env):
    got = run("04_split_plot.ipynb", "{" + ", ".join([
        "'sat': sat[['den_df', 'F', 'p']].to_dict('index')",
        "'kr': kr[['den_df', 'F', 'p']].to_dict('index')",
        "'ems_F': aov.ems_table()['F'].dropna().to_dict()"]) + "}")
    ref = load_reference("oats_splitplot_reml")
    # lmerTest: anova(m, type = 3) and anova(m, type = 3, ddf = "Kenward-Roger")
    for key, method in (("sat", "satterthwaite"), ("kr", "kenward_roger")):
        for row in ref["anova_type3"][method]["table"]:
            mine = got[key][row["term"]]
            for col in ("den_df", "F", "p"):
                assert mine[col] == pytest.approx(row[col], rel=1e-3), (method, row["term"], col)
    # base R: aov(yield ~ Variety * nitro_f + Error(Block/Variety)) F values
    for row in ref["moments"]["table"]:
        if row["F"] is not None:
            assert got["ems_F"][row["source"]] == pytest.approx(row["F"], rel=1e-6), row["source"]


def test_05_random_regression(kernel_env):
    got = run("05_random_regression.ipynb",
              "{'blups': {c: blups[c].to_dict() for c in blups.columns}}")
    ref = load_reference("sleepstudy_reml")["ranef"]["Subject"]
    # lme4: ranef(m)$Subject
    for col, values in ref["modes"].items():
        mine = [got["blups"][col][lev] for lev in ref["levels"]]
        assert mine == pytest.approx(values, rel=1e-3, abs=1e-6), col


def test_06_plants_pots(kernel_env):
    got = run("06_plants_pots.ipynb", "{" + ", ".join([
        "'v_ok': bool(np.allclose(V, res.V()))",
        "'beta_ok': bool(np.allclose(beta, res.fe_params.to_numpy()))",
        "'blup_ok': bool(np.allclose(p_hat, res.random_effects['pot']['(Intercept)']))",
        "'zz': ZZt.to_numpy().tolist()"]) + "}")
    # V = s2_p ZZ' + s2_e I, and GLS / BLUP by hand reproduce the fit
    assert got["v_ok"] and got["beta_ok"] and got["blup_ok"]
    sizes = [3, 2, 3, 2]
    import numpy as np
    blocks = np.zeros((10, 10))
    start = 0
    for n in sizes:
        blocks[start:start + n, start:start + n] = 1.0
        start += n
    assert np.array_equal(np.array(got["zz"]), blocks)


def test_07_serial_correlation(kernel_env):
    got = run("07_serial_correlation.ipynb", "{" + ", ".join([
        "'est': est.to_dict('index')", "'phi': float(phi)", "'sigma': float(sigma)",
        "'s_day': float(s_day)", "'aic': float(ar.aic)", "'llf': float(ar.llf)",
        "'rows': rows.tolist()", "'corr_r': corr_r.to_numpy().tolist()",
        "'corr_v': corr_v.to_numpy().tolist()", "'vc_cs': vc_cs.to_dict()",
        "'aic_cs': float(cs.aic)"]) + "}")
    import numpy as np
    ref = load_reference("glucose_ar1")
    cp = ref["covariance_parameters"]
    # nlme: sqrt(getVarCov(m)); m$sigma; coef(m$modelStruct$corStruct, unconstrained = FALSE)
    assert got["phi"] == pytest.approx(cp["phi"], rel=1e-4)
    assert got["sigma"] == pytest.approx(cp["sigma_residual"], rel=1e-4)
    assert got["s_day"] == pytest.approx(cp["sigma_day"], rel=1e-4)
    # nlme: logLik(m); AIC(m)
    assert got["llf"] == pytest.approx(ref["loglik"], rel=1e-6)
    assert got["aic"] == pytest.approx(ref["aic"], rel=1e-6)
    est = got["est"]
    # nlme: fixef(m)['foodF3:timeT1'] and its SE; L = (mu_31 + ... + mu_34) / 4,
    # sum(L * fixef(m)) and sqrt(L' vcov(m) L)
    for key in ("mu_31", "food3_mean"):
        assert est[key]["estimate AR(1)"] == pytest.approx(ref[key]["estimate"], rel=1e-4)
        assert est[key]["SE AR(1)"] == pytest.approx(ref[key]["se"], rel=1e-4)
        # balanced cell means: the CS fit's GLS estimates are the same raw means
        assert est[key]["estimate CS"] == pytest.approx(ref[key]["estimate"], rel=1e-4)
    # time differences: Var = 2 sigma^2 (1 - phi^lag) / 5 at nlme's estimates (AR(1)),
    # 2 sigma^2 / 5 at the CS fit's residual variance
    for key, lag in (("T2 - T1 (food 3)", 1), ("T4 - T1 (food 3)", 3)):
        se = (2 * cp["var_residual"] * (1 - cp["phi"] ** lag) / 5) ** 0.5
        assert est[key]["SE AR(1)"] == pytest.approx(se, rel=1e-4), key
        assert est[key]["SE CS"] == pytest.approx((2 * got["vc_cs"]["Residual"] / 5) ** 0.5,
                                                  rel=1e-10), key
    assert est["mu_31"]["SE CS"] == pytest.approx((sum(got["vc_cs"].values()) / 5) ** 0.5,
                                                  rel=1e-10)
    # one subject's 4 measurements: nlme's first-group covariances (corMatrix and
    # Z G Z' + sigma^2 R), as correlations
    fg = ref["first_group_covariance"]
    pos = [fg["csv_rows_1based"].index(r + 1) for r in got["rows"]]
    for key, field in (("corr_r", "conditional"), ("corr_v", "marginal")):
        m = np.array(fg[field])[np.ix_(pos, pos)]
        assert np.allclose(got[key], m / m[0, 0], rtol=1e-4, atol=1e-6), key
    assert got["aic"] < got["aic_cs"]
