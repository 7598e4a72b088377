import json

from pyro_irm.cli import main


def test_demo_writes_the_metrics_as_json(tmp_path, capsys):
    path = tmp_path / "out" / "demo.json"
    code = main(
        [
            "demo",
            "--rows",
            "3000",
            "--test-rows",
            "2000",
            "--epochs",
            "5",
            "--quiet",
            "--json",
            str(path),
        ]
    )
    assert code == 0
    results = json.loads(path.read_text())
    for method in ("implicitrm", "naive"):
        assert {"auc", "mae", "group_accuracy"} <= results[method].keys()
        assert 0.0 <= results[method]["auc"] <= 1.0
    assert "group_accuracy" not in results["oracle"]
    printed = capsys.readouterr().out
    assert "implicitrm" in printed and "no-action group acc." in printed


def test_bad_arguments_exit_nonzero(capsys):
    import pytest

    with pytest.raises(SystemExit) as error:
        main(["demo", "--inference", "magic"])
    assert error.value.code == 2
