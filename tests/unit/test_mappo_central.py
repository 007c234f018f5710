"""mappo-central: its critic sees the joint observation (so the CENTRALIZED label is true), and it is refused
wherever a decentralized algorithm is expected."""

import pytest
import torch

from marlmesh import plugins
from marlmesh.centralized.joint_env import JointEnv
from marlmesh.centralized.mappo import CentralMAPPO, joint_observation
from marlmesh.centralized.plugin import is_centralized
from marlmesh.config import ConfigError, load_config
from marlmesh.experiments.sweep_spec import method_label


def _config(**sets):
    items = [f"{k}={v}" for k, v in {"algo.name": "mappo-central", "channel.name": "none", **sets}.items()]
    return load_config(None, ["env.kwargs.N=3", "env.num_envs=2", "algo.ppo.hidden_sizes=[16,16]", *items])


@pytest.fixture
def trainer():
    config = _config(**{"train.rollout_steps": 6, "algo.ppo.epochs": 1, "algo.ppo.minibatches": 2})
    env = JointEnv(config, seed=0, num_envs=2)
    yield CentralMAPPO(config, env, seed=0)
    env.close()


def test_critic_input_is_the_joint_observation_of_every_agent(trainer):
    dims = [spec.obs_dim for spec in trainer.env.specs]
    assert trainer.critic.input_dim == sum(dims) and len(dims) == 3
    seen = []
    hook = trainer.critic.net[0].register_forward_hook(lambda _m, inp, _o: seen.append(inp[0].detach().clone()))
    ro = trainer.collect()
    trainer.update(ro)
    hook.remove()
    want = joint_observation([o for o in ro["obs"]])  # [T, B, sum dims]: agent 0's obs, then 1's, then 2's
    assert torch.equal(seen[0], want)  # GAE values: every step's joint observation
    for i, o in enumerate(ro["obs"]):
        lo = sum(dims[:i])
        assert torch.equal(seen[0][..., lo : lo + dims[i]], o.reshape(*o.shape[:2], -1))
    # every agent's value depends on every other agent's observation
    joint = want[0]
    base = trainer.critic(joint)
    for j in range(3):
        moved = joint.clone()
        lo = sum(dims[:j])
        moved[:, lo : lo + dims[j]] += 1.0
        changed = (trainer.critic(moved) - base).abs()
        assert (changed[:, [i for i in range(3) if i != j]] > 0).all()


def test_update_trains_actors_and_critic_without_nan(trainer):
    before = [p.detach().clone() for p in trainer.critic.parameters()]
    actor_before = [p.detach().clone() for p in trainer.actors[1].actor.parameters()]
    stats = trainer.update(trainer.collect())
    assert all(v == v for v in stats.values())
    assert any(not torch.equal(a, b) for a, b in zip(before, trainer.critic.parameters(), strict=True))
    assert any(not torch.equal(a, b) for a, b in zip(actor_before, trainer.actors[1].actor.parameters(), strict=True))
    assert trainer.env.env_steps == 6 * 2


def test_it_cannot_be_used_as_a_decentralized_learner():
    algo = plugins.load("algos", "mappo-central")
    assert algo.centralized and is_centralized("mappo-central") and not is_centralized("ippo")
    with pytest.raises(ConfigError, match="CENTRALIZED REFERENCE"):
        algo().build_learner(_config(), None, None)
    with pytest.raises(ConfigError, match="needs channel.name=none"):
        plugins.check_channel("mappo-central", algo.required_channel, "broadcast")


def test_sweep_method_name_says_centralized_reference():
    assert method_label({"algo.name": "mappo-central", "channel.name": "none"}, None) == (
        "mappo-central (CENTRALIZED REFERENCE)"
    )
    assert method_label({"algo.name": "ippo", "channel.name": "none"}, None) == "ippo+none"


def test_no_learner_pods_are_rendered_for_it():
    from marlmesh.deploy.k8s import RenderError, render

    with pytest.raises(RenderError, match="CENTRALIZED REFERENCE"):
        render(_config(), 3)


def test_a_rerun_in_the_same_directory_resumes_from_the_newest_checkpoints(tmp_path):
    import io

    from marlmesh.checkpoint import load_latest
    from marlmesh.launch.centralized import train_central

    sets = {"train.rollout_steps": 5, "train.total_env_steps": 20, "algo.ppo.epochs": 1, "train.checkpoint_keep": 2}
    config = _config(**sets)
    first = train_central(config, tmp_path, io.StringIO(), evaluate=False)
    assert first["status"] == "trained" and first["learners"][0]["version"] == 2  # 2 updates of 5 x 2 env steps
    out = io.StringIO()
    second = train_central(config, tmp_path, out, evaluate=False)
    assert "resumed from" in out.getvalue() and second["learners"][0]["version"] == 4
    assert load_latest(tmp_path / "checkpoints" / "agent-2")[0]["version"] == 4


def test_annealed_lr_falls_over_the_step_budget(tmp_path):
    import io
    import json

    from marlmesh.launch.centralized import train_central

    sets = {"train.rollout_steps": 5, "train.total_env_steps": 40, "algo.ppo.epochs": 1, "algo.ppo.anneal_lr": "true"}
    train_central(_config(**sets), tmp_path, io.StringIO(), evaluate=False)
    rates = [json.loads(line)["lr"] for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    lr = _config().algo.ppo.lr
    assert rates == pytest.approx([lr, 0.75 * lr, 0.5 * lr, 0.25 * lr])  # 4 updates of 10 env steps each


@pytest.mark.parametrize("grad_clip", ["per_group", "joint"])
def test_grad_clip_applies_to_the_actors_and_the_central_critic(grad_clip):
    config = _config(**{"algo.ppo.grad_clip": grad_clip, "algo.ppo.max_grad_norm": 0.5})
    env = JointEnv(config, seed=0, num_envs=2)
    try:
        trainer = CentralMAPPO(config, env, seed=0)
    finally:
        env.close()
    modules = [*(a.actor for a in trainer.actors), trainer.critic]
    for k, module in enumerate(modules):  # gradients of very different sizes: 1, 10, 100, 1000 per entry
        for p in module.parameters():
            p.grad = torch.full_like(p, 10.0**k)
    before = [torch.cat([p.grad.flatten() for p in m.parameters()]) for m in modules]
    trainer.clip_gradients()
    after = [torch.cat([p.grad.flatten() for p in m.parameters()]) for m in modules]
    if grad_clip == "per_group":  # each module clipped to 0.5 on its own
        for a, b in zip(after, before, strict=True):
            torch.testing.assert_close(a, b * (0.5 / torch.linalg.vector_norm(b)))
        return
    factor = 0.5 / torch.linalg.vector_norm(torch.cat(before))  # one factor for all
    for a, b in zip(after, before, strict=True):
        torch.testing.assert_close(a, b * factor)


def test_its_actors_can_be_entity_actors():
    from marlmesh.policies.entity_actor import EntityActorNet

    config = _config(
        **{"train.rollout_steps": 6, "algo.ppo.epochs": 1, "algo.ppo.minibatches": 2, "algo.ppo.actor_net": "entity"}
    )
    env = JointEnv(config, seed=0, num_envs=2)
    try:
        trainer = CentralMAPPO(config, env, seed=0)
        assert all(isinstance(actor.actor.net, EntityActorNet) for actor in trainer.actors)
        before = [p.detach().clone() for p in trainer.actors[0].actor.parameters()]
        stats = trainer.update(trainer.collect())
        assert all(v == v for v in stats.values())
        assert any(not torch.equal(a, b) for a, b in zip(before, trainer.actors[0].actor.parameters(), strict=True))
    finally:
        env.close()
