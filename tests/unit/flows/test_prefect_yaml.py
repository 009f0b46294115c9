"""prefect.yaml and the Python deployments describe the same four deployments."""

from pathlib import Path

import yaml

from flows.commands import _parse_params
from flows.deployments import SPECS
from flows.stages import FLOWS

ROOT = Path(__file__).resolve().parents[3]


def test_prefect_yaml_matches_python_specs() -> None:
    config = yaml.safe_load((ROOT / "prefect.yaml").read_text())
    by_name = {d["name"]: d for d in config["deployments"]}
    assert set(by_name) == set(SPECS) == set(FLOWS)
    for stage, deployment in by_name.items():
        path, func = deployment["entrypoint"].split(":")
        assert (ROOT / path).is_file()
        assert FLOWS[stage].fn.__name__ == func
        assert deployment["work_pool"]["name"] == "freshrec"
    assert by_name["publish"]["schedules"][0]["interval"] == SPECS["publish"].interval_s


def test_flow_parameters_are_typed() -> None:
    # Prefect builds each deployment's parameter schema from these annotations.
    for flow in FLOWS.values():
        for name, schema in flow.parameters.properties.items():
            assert "type" in schema or "anyOf" in schema, (flow.name, name)


def test_parse_params() -> None:
    assert _parse_params(["a=1", "b=x", "c=null", "d=true"]) == {"a": 1, "b": "x", "c": None, "d": True}
