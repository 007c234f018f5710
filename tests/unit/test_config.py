import pytest

from comm_bus.links import resolve_link
from marlmesh.config import ConfigError, apply_overrides, dump_config, load_config


def test_defaults_validate_and_round_trip(tmp_path):
    cfg = load_config(None)
    path = tmp_path / "c.yaml"
    path.write_text(dump_config(cfg))
    assert load_config(path) == cfg


def test_shipped_configs_validate():
    for name in (
        "configs/default.yaml",
        "configs/smoke.yaml",
        "configs/dgmappo.yaml",
        "configs/mfppo.yaml",
        "configs/ippo.yaml",
        "configs/co2po.yaml",
        "configs/soak.yaml",
    ):
        load_config(name)


def test_a_mapping_set_replaces_the_default_jobs_constrained_links():
    # configs/default.yaml's comment tells users to get ideal links back this way
    assert not load_config("configs/default.yaml").bus.links.default.is_ideal()
    assert load_config("configs/default.yaml", ["bus.links.default={}"]).bus.links.default.is_ideal()
    half = load_config("configs/default.yaml", ["bus.links.default={loss: 0.2}"]).bus.links.default
    assert half.loss == 0.2 and half.rate_bps is None and half.latency_ms == 0


def test_unknown_key_names_path_and_nearest_key():
    with pytest.raises(ConfigError) as exc:
        load_config(None, ["env.nmu_envs=4"])
    msg = str(exc.value)
    assert "'env.nmu_envs'" in msg and "did you mean 'env.num_envs'" in msg
    assert "\n" not in msg


def test_unknown_top_level_key(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("sed: 3\n")
    with pytest.raises(ConfigError, match=r"unknown config key 'sed'; did you mean 'seed'"):
        load_config(path)


def test_bad_value_names_path_and_value():
    with pytest.raises(ConfigError, match=r"config key 'train.total_env_steps'.*got 'lots'"):
        load_config(None, ["train.total_env_steps=lots"])
    with pytest.raises(ConfigError, match=r"config key 'algo.ppo.lr'"):
        load_config(None, ["algo.ppo.lr=-1"])
    with pytest.raises(ConfigError, match=r"config key 'bus.clock'"):
        load_config(None, ["bus.clock=sundial"])


def test_overrides_types_and_nesting():
    cfg = load_config(
        None, ["train.total_env_steps=20000", "env.kwargs.N=4", "algo.ppo.lr=1e-3", "eval.deterministic=false"]
    )
    assert cfg.train.total_env_steps == 20000
    assert cfg.env.kwargs == {"N": 4}
    assert cfg.algo.ppo.lr == pytest.approx(1e-3)
    assert cfg.eval.deterministic is False


def test_override_syntax_errors():
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        apply_overrides({}, ["train.total_env_steps"])
    with pytest.raises(ConfigError, match="is a value, not a section"):
        apply_overrides({"seed": 1}, ["seed.x=2"])


def test_missing_and_invalid_files(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("env: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)


def test_link_constraints_pick_the_netem_model_unless_ideal_is_forced():
    assert load_config(None).bus.links.resolved_model() == "ideal"
    assert load_config(None, ["bus.links.default={}"]).bus.links.resolved_model() == "ideal"
    assert load_config(None, ["bus.links.default.loss=0.1"]).bus.links.resolved_model() == "netem"
    with pytest.raises(ConfigError, match="'bus.links': model 'ideal' has no constraints"):
        load_config(None, ["bus.links.model=ideal", "bus.links.default.loss=0.1"])
    with pytest.raises(ConfigError, match="bus.links.default.loss"):
        load_config(None, ["bus.links.default.loss=1.5"])
    with pytest.raises(ConfigError, match="did you mean 'bus.links.default.latency_ms'"):
        load_config(None, ["bus.links.default.latency=5"])


def test_the_default_queue_limit_keeps_ideal_links_ideal_and_null_means_unbounded():
    default = load_config(None).bus.links
    assert default.default.queue_limit == 1000 and default.resolved_model() == "ideal"
    # a queue limit alone constrains nothing (nothing is ever in flight): still ideal, also when forced
    for limit in ("5", "null"):
        links = load_config(None, [f"bus.links.default.queue_limit={limit}"]).bus.links
        assert links.resolved_model() == "ideal"
    assert load_config(None, ["bus.links.model=ideal", "bus.links.default.queue_limit=5"]).bus.links.default.is_ideal()
    unbounded = load_config(None, ["bus.links.default.rate_bps=1000", "bus.links.default.queue_limit=null"]).bus.links
    assert unbounded.default.queue_limit is None and unbounded.resolved_model() == "netem"
    override = load_config(
        None, ["bus.links.default.rate_bps=1000", "bus.links.overrides=[{dst: 1, queue_limit: null}]"]
    )
    assert resolve_link(override.bus.links, 0, 1).queue_limit is None
    assert resolve_link(override.bus.links, 1, 0).queue_limit == 1000
    with pytest.raises(ConfigError, match="bus.links.default.queue_limit"):
        load_config(None, ["bus.links.default.queue_limit=0"])
