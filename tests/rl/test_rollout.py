"""Tests for rarejax.rl.rollout on a tiny random model: the learner batch, on-policy ratio and
off-policy minibatches (the clip acts), the reference KL, an empty batch."""
import jax
import numpy as np
import pytest

from rarejax.model import transformer
from rarejax.model.config import preset
from rarejax.parallel import mesh as mesh_lib
from rarejax.rl import dapo
from rarejax.rl import rollout as rollout_lib
from rarejax.sample import Sampler
from rarejax.train import optimizer
from tests.rl.helpers import ByteTokenizer, constant_rewards

PROMPTS = [rollout_lib.Prompt(ids=(2, 40, 41, 42, 43), gold_ids=("OMIM:154700",),
                              task="differential"),
           rollout_lib.Prompt(ids=(2, 50, 51), gold_ids=("OMIM:609192",), task="final")]



@pytest.fixture(scope="module")
def tiny():
  config = preset("tiny_llama", init_std=0.2)  # peaked logits: far from uniform sampling
  params = jax.jit(transformer.init_params, static_argnums=0)(config, jax.random.key(0))
  sampler = Sampler(config, cache_length=64, max_batch_size=4)
  rollout = rollout_lib.Rollout(sampler, ByteTokenizer(), constant_rewards,
                                rollout_lib.RolloutConfig(group_size=2, max_new_tokens=12,
                                                          temperature=0.7, top_k=20))
  samples = rollout(params, PROMPTS, jax.random.key(1))
  rows = np.arange(4)
  batch = rollout_lib.learner_batch(
      [(samples, rows, dapo.group_advantages(samples.rewards.accuracy, 2))], rows=4, length=24,
      temperature=0.7, pad_id=0)
  return config, params, samples, batch


def _learner(config, params, beta=0.0, learning_rate=1e-3, **updates):
  return rollout_lib.Learner(
      model_config=config, dapo_config=dapo.DapoConfig(beta=beta), init_params=params,
      optimizer_config=optimizer.OptimizerConfig(learning_rate=learning_rate, warmup_steps=0,
                                                 total_steps=10),
      mesh=mesh_lib.make_mesh(), **updates)


def test_learner_batch_aligns_old_logprobs_with_response_targets(tiny):
  _, _, samples, batch = tiny
  n = int(samples.lengths[2])  # row 2: prompt 1 (3 tokens), sample 0
  np.testing.assert_array_equal(batch["targets"][2, 2:2 + n], samples.tokens[2, :n])
  np.testing.assert_array_equal(batch["loss_weights"][2], [0, 0] + [1] * n + [0] * (22 - n))
  np.testing.assert_array_equal(batch["old_logprobs"][2, 2:2 + n], samples.logprobs[2, :n])
  assert batch["advantages"][2] > 0 > batch["advantages"][3]


@pytest.fixture
def scorer_calls(monkeypatch):
  """Counts forwards of every reference scorer made while the test runs."""
  calls = []
  original = dapo.reference_scorer

  def counting(model):
    score = original(model)
    return lambda *args: calls.append(1) or score(*args)
  monkeypatch.setattr(dapo, "reference_scorer", counting)
  return calls


def test_first_on_policy_step_has_ratio_one_and_no_reference_forward(tiny, scorer_calls):
  config, params, _, batch = tiny
  score = dapo.reference_scorer(transformer.Decoder(config))
  learner_logprobs = np.asarray(score(params, batch))  # logits / 0.7, as the sampler scaled them
  scored = batch["loss_weights"] > 0
  np.testing.assert_allclose(learner_logprobs[scored], batch["old_logprobs"][scored], atol=1e-4)
  at_t1 = np.asarray(score(params, {**batch, "temperature": np.ones(4, np.float32)}))
  assert np.abs(at_t1[scored] - batch["old_logprobs"][scored]).max() > 1e-2  # T matters
  scorer_calls.clear()
  learner = _learner(config, params, beta=0.0)
  assert "ref_logprobs" not in learner.with_reference(batch)
  metrics = learner.update(batch, np.random.default_rng(0))
  assert not scorer_calls and "kl" not in metrics               # beta = 0: no reference forward
  assert metrics["updated"] == 1.0 and metrics["tokens"] == scored.sum()
  assert metrics["ratio_mean"] == pytest.approx(1.0, abs=1e-4)
  assert metrics["clip_fraction_low"] == metrics["clip_fraction_high"] == 0.0


def test_minibatch_epochs_reuse_the_rollout_off_policy_so_the_clip_acts(tiny):
  config, params, _, batch = tiny
  frozen = batch["old_logprobs"].copy()
  learner = _learner(config, params, learning_rate=3e-2, minibatches=2, epochs=2)
  metrics = learner.update(batch, np.random.default_rng(0))
  assert learner.step == 4 and metrics["updated"] == 1.0         # 2 epochs x 2 minibatches
  assert metrics["tokens"] == 2 * (batch["loss_weights"] > 0).sum()
  assert abs(metrics["ratio_mean"] - 1.0) > 1e-2                 # later updates are off-policy
  assert metrics["clip_fraction_low"] + metrics["clip_fraction_high"] > 0
  np.testing.assert_array_equal(batch["old_logprobs"], frozen)  # rollout log-probs stay frozen


def test_kl_to_the_reference_is_zero_until_the_policy_moves(tiny, scorer_calls):
  config, params, _, batch = tiny
  learner = _learner(config, params, beta=0.1)
  metrics = learner.update(batch, np.random.default_rng(0))
  assert len(scorer_calls) == 1 and abs(metrics["kl"]) < 1e-6   # policy == reference at first
  second = learner.update(batch, np.random.default_rng(0))
  assert len(scorer_calls) == 2 and second["kl"] > 0             # the policy moved away


def test_empty_batch_applies_no_update(tiny):
  config, params, _, batch = tiny
  learner = _learner(config, params)
  metrics = learner.update({**batch, "loss_weights": np.zeros_like(batch["loss_weights"])},
                           np.random.default_rng(0))
  assert metrics == {"updated": 0.0} and learner.step == 1
  np.testing.assert_array_equal(jax.device_get(learner.params["embedding"]),
                                jax.device_get(params["embedding"]))
