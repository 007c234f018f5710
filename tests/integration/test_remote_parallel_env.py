"""A running env_service used through the standard PettingZoo Parallel API, side by side with the local env."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from pettingzoo.test import parallel_api_test
from service_procs import start_env, stop

from env_service.parallel_env import RemoteParallelEnv
from marlmesh import tls
from marlmesh.config import ConfigError, TlsConfig, dump_config, load_config
from marlmesh.deploy.certs import generate_tls
from marlmesh.envs import make_env

pytestmark = pytest.mark.integration
SEED = 11


@pytest.mark.parametrize("continuous", [False, True])
def test_remote_env_steps_exactly_like_the_local_env(tmp_path: Path, continuous: bool) -> None:
    config = load_config(None, ["env.kwargs.max_cycles=10", f"env.kwargs.continuous_actions={continuous}"])
    cfg_path = tmp_path / "config.yaml"
    cfg_path.write_text(dump_config(config))
    proc, address = start_env(tmp_path, cfg_path, "--num-envs", "1", "--seed", str(SEED))
    remote = RemoteParallelEnv(address, seed=SEED)
    local = make_env(config.env)
    try:
        assert remote.possible_agents == local.possible_agents
        for a in local.possible_agents:
            assert remote.observation_space(a).shape == local.observation_space(a).shape
            assert remote.action_space(a) == local.action_space(a)
        rng = np.random.default_rng(0)
        obs_r, _ = remote.reset(seed=SEED)
        obs_l, _ = local.reset(seed=SEED)
        episodes = 0
        for step in range(35):  # three and a half episodes of 10 steps: crosses the service's autoresets
            for a in local.possible_agents:
                np.testing.assert_array_equal(obs_r[a], obs_l[a], err_msg=f"step {step} obs of {a}")
            assert remote.agents == local.agents
            if continuous:
                actions = {a: rng.random(5).astype(np.float32) for a in local.agents}
            else:
                actions = {a: int(rng.integers(5)) for a in local.agents}
            obs_r, rew_r, term_r, trunc_r, info_r = remote.step(actions)
            obs_l, rew_l, term_l, trunc_l, _ = local.step(actions)
            assert term_r == term_l and trunc_r == trunc_l
            for a in local.possible_agents:
                assert rew_r[a] == np.float32(rew_l[a]), f"step {step} reward of {a}"
                np.testing.assert_array_equal(obs_r[a], obs_l[a], err_msg=f"step {step} obs of {a}")
                assert "cost" in info_r[a]
            if any(trunc_l.values()) or any(term_l.values()):
                episodes += 1
                assert remote.agents == []
                obs_r, _ = remote.reset()
                obs_l, _ = local.reset()
        assert episodes == 3
        with pytest.raises(RuntimeError, match="middle of an episode"):
            remote.reset()
        with pytest.raises(ValueError, match="cannot be reseeded"):
            remote.reset(seed=SEED + 1)
    finally:
        remote.close()
        local.close()
        assert stop([proc]) == [0]


def test_remote_env_passes_pettingzoo_parallel_api_test(tmp_path: Path) -> None:
    config = load_config(None, ["env.kwargs.max_cycles=25"])
    cfg_path = tmp_path / "config.yaml"
    cfg_path.write_text(dump_config(config))
    proc, address = start_env(tmp_path, cfg_path, "--num-envs", "1")
    remote = RemoteParallelEnv(address)
    try:
        parallel_api_test(remote, num_cycles=100)  # episodes end within the cycles: resets at episode ends
    finally:
        remote.close()
        stop([proc])


def test_remote_env_needs_a_single_copy(tmp_path: Path) -> None:
    cfg_path = tmp_path / "config.yaml"
    cfg_path.write_text(dump_config(load_config(None)))
    proc, address = start_env(tmp_path, cfg_path, "--num-envs", "2")
    try:
        with pytest.raises(ValueError, match="--num-envs 1"):
            RemoteParallelEnv(address)
    finally:
        stop([proc])


def _tls_section(keys: Path) -> TlsConfig:
    return load_config(None, ["runtime.tls.enabled=true", f"runtime.tls.keys_dir={keys}"]).runtime.tls


def test_remote_env_over_mtls_needs_the_runs_client_certificate(tmp_path: Path) -> None:
    keys, foreign = tmp_path / "keys", tmp_path / "foreign"
    generate_tls(keys, 1)
    generate_tls(foreign, 1)
    config = load_config(None, ["env.kwargs.max_cycles=5", "runtime.tls.enabled=true", f"runtime.tls.keys_dir={keys}"])
    cfg_path = tmp_path / "config.yaml"
    cfg_path.write_text(dump_config(config))
    proc, address = start_env(tmp_path, cfg_path, "--num-envs", "1", "--seed", str(SEED))
    try:
        remote = RemoteParallelEnv(address, seed=SEED, timeout_s=20, tls=config.runtime.tls)  # as "launcher"
        try:
            obs, _ = remote.reset(seed=SEED)
            _, rewards, *_ = remote.step({a: 0 for a in remote.agents})
            assert set(obs) == set(rewards) == set(remote.possible_agents)
        finally:
            remote.close()
        other = tls.load_identity(_tls_section(keys), "agent-0")  # any identity of the run's CA
        remote = RemoteParallelEnv(address, timeout_s=20, tls=other)
        remote.close()

        with pytest.raises(ConnectionError, match="dialled in plaintext.*runtime.tls enabled"):
            RemoteParallelEnv(address, timeout_s=2)
        with pytest.raises(ConnectionError, match="mutual TLS as 'launcher'.*same CA"):
            RemoteParallelEnv(address, timeout_s=2, tls=_tls_section(foreign))
        with pytest.raises(ConfigError, match=r"runtime.tls.keys_dir: the certificate of client-x .*client-x.tls.crt"):
            RemoteParallelEnv(address, tls=_tls_section(keys), tls_name="client-x")
        (tmp_path / "empty").mkdir()
        with pytest.raises(
            ConfigError, match=r"runtime.tls.keys_dir: the CA certificate .*empty/ca.crt does not exist"
        ):
            RemoteParallelEnv(address, tls=_tls_section(tmp_path / "empty"))
    finally:
        assert stop([proc]) == [0]
