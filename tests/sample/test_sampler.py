"""Sampler acceptance tests on a tiny random fp32 model: cache decode vs teacher forcing, padding,
group repeat, resume, no recompiles for knob changes, stop handling, seeds, bad input."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rarejax.model import config as model_config
from rarejax.model import transformer
from rarejax.sample import Sampler, StopReason
from rarejax.sample import loop

CACHE = 64
NEW = 12
PROMPTS = [[1, 2, 3, 4, 5], [9, 8], [7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7], [42]]


def _setup(family: str = "tiny_llama"):
  config = model_config.preset(family, init_std=0.2)  # peaked logits: no argmax near-ties
  init = jax.jit(transformer.init_params, static_argnums=0)
  return config, init(config, jax.random.key(0))


@pytest.fixture(scope="module")
def model():
  return _setup()


@pytest.fixture(scope="module")
def sampler(model):
  return Sampler(model[0], cache_length=CACHE, max_batch_size=8)


def _teacher_forced_logits(config, params, prompts, tokens) -> np.ndarray:
  """Logits [N, T, V] that a cache-free forward over prompt + tokens[:-1] gives for each token."""
  rows = [p + t[:-1].tolist() for p, t in zip(prompts, tokens)]
  padded = np.zeros((len(rows), max(map(len, rows))), np.int32)  # right padding: causal no-op
  for i, row in enumerate(rows):
    padded[i, :len(row)] = row
  logits, _ = jax.jit(transformer.Decoder(config).apply)({"params": params}, padded)
  return np.stack([np.asarray(logits[i, len(p) - 1:len(p) - 1 + tokens.shape[1]])
                   for i, p in enumerate(prompts)])


@pytest.mark.parametrize("family", ["tiny_llama", "tiny_qwen2", "tiny_gemma"])
def test_greedy_cache_decode_equals_teacher_forced_argmax(family):
  config, params = _setup(family)
  out = Sampler(config, cache_length=CACHE).generate(params, PROMPTS, max_new_tokens=NEW)
  assert (out.stop_reason == StopReason.MAX_NEW_TOKENS).all() and out.mask.all()
  logits = _teacher_forced_logits(config, params, PROMPTS, out.tokens)
  np.testing.assert_array_equal(logits.argmax(-1), out.tokens)
  expected = np.take_along_axis(jax.nn.log_softmax(logits), out.tokens[..., None], -1)[..., 0]
  np.testing.assert_allclose(out.logprobs, expected, atol=1e-4)


def test_sampled_logprobs_use_the_temperature(model, sampler):
  config, params = model
  out = sampler.generate(params, PROMPTS[:2], max_new_tokens=NEW, rng=jax.random.key(3),
                         temperature=0.7, top_k=20)
  logits = _teacher_forced_logits(config, params, PROMPTS[:2], out.tokens)
  expected = np.take_along_axis(jax.nn.log_softmax(logits / 0.7), out.tokens[..., None], -1)
  np.testing.assert_allclose(out.logprobs, expected[..., 0], atol=1e-4)


@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_padded_batch_equals_each_prompt_alone(model, sampler, temperature):
  _, params = model
  keys = jax.random.split(jax.random.key(1), len(PROMPTS))
  knobs = dict(max_new_tokens=NEW, temperature=temperature, top_p=0.9, stop_ids=(5, 17))
  batch = sampler.generate(params, PROMPTS, rng=keys, **knobs)
  for i, prompt in enumerate(PROMPTS):
    alone = sampler.generate(params, [prompt], rng=keys[i:i + 1], **knobs)
    np.testing.assert_array_equal(alone.tokens[0], batch.tokens[i])
    np.testing.assert_allclose(alone.logprobs[0], batch.logprobs[i], atol=1e-5)
    assert alone.lengths[0] == batch.lengths[i]


def test_group_repeat_equals_separate_prefills(model, sampler):
  _, params = model
  groups = 3
  keys = jax.random.split(jax.random.key(2), 2 * groups)
  knobs = dict(max_new_tokens=NEW, temperature=1.0, top_k=50)
  grouped = sampler.generate(params, PROMPTS[:2], num_samples=groups, rng=keys, **knobs)
  assert grouped.tokens.shape == (2 * groups, NEW)
  for row in range(2 * groups):
    alone = sampler.generate(params, [PROMPTS[row // groups]], rng=keys[row:row + 1], **knobs)
    np.testing.assert_array_equal(alone.tokens[0], grouped.tokens[row])
    np.testing.assert_allclose(alone.logprobs[0], grouped.logprobs[row], atol=1e-5)
  assert len({tuple(t) for t in grouped.tokens[:groups]}) > 1  # the samples differ


def test_chunked_batch_equals_one_batch(model, sampler):
  _, params = model
  keys = jax.random.split(jax.random.key(4), 3 * len(PROMPTS))
  knobs = dict(max_new_tokens=NEW, temperature=1.0, num_samples=3, rng=keys)
  whole = sampler.generate(params, PROMPTS, **knobs)
  small = Sampler(model[0], cache_length=CACHE, max_batch_size=2).generate(params, PROMPTS,
                                                                           **knobs)
  np.testing.assert_array_equal(whole.tokens, small.tokens)
  np.testing.assert_allclose(whole.logprobs, small.logprobs, atol=1e-5)


def _stop_ids_ending_rows_early(sampler, params) -> tuple[int, ...]:
  """Stop ids that greedy decoding emits early in some rows but not in others."""
  tokens = sampler.generate(params, PROMPTS, max_new_tokens=NEW).tokens
  return int(tokens[0, 2]), int(tokens[2, 5])


def test_stop_ids_end_rows_and_nothing_follows(model, sampler):
  _, params = model
  stop_ids = _stop_ids_ending_rows_early(sampler, params)
  out = sampler.generate(params, PROMPTS, max_new_tokens=NEW, stop_ids=stop_ids)
  free = sampler.generate(params, PROMPTS, max_new_tokens=NEW)
  stopped = out.stop_reason == StopReason.STOP_ID
  assert stopped[0] and out.lengths[0] <= 3 and len(set(out.lengths)) > 1
  for row in range(len(PROMPTS)):
    n = out.lengths[row]
    np.testing.assert_array_equal(out.tokens[row, :n], free.tokens[row, :n])
    assert (out.tokens[row, n:] == sampler.pad_id).all() and (out.logprobs[row, n:] == 0).all()
    assert out.mask[row, :n].all() and not out.mask[row, n:].any()
    if stopped[row]:
      assert out.tokens[row, n - 1] in stop_ids
      assert not np.isin(out.tokens[row, :n - 1], stop_ids).any()
    else:
      assert n == NEW and out.stop_reason[row] == StopReason.MAX_NEW_TOKENS
  assert out.to_lists()[0] == out.tokens[0, :out.lengths[0]].tolist()


def test_resume_equals_sampling_the_concatenation_from_scratch(model, sampler):
  _, params = model
  stop_ids = _stop_ids_ending_rows_early(sampler, params)
  first = sampler.generate(params, PROMPTS, max_new_tokens=NEW, stop_ids=stop_ids,
                           keep_state=True)
  assert len(set(first.lengths)) > 1  # rows stopped at different lengths
  feedback = [[11, 12, 13], [], [14], [15, 16, 17, 18, 19, 20]]
  resumed = sampler.resume(params, first.state, feedback, max_new_tokens=NEW)
  concatenated = [p + t + f for p, t, f in zip(PROMPTS, first.to_lists(), feedback)]
  scratch = sampler.generate(params, concatenated, max_new_tokens=NEW)
  np.testing.assert_array_equal(resumed.tokens, scratch.tokens)
  np.testing.assert_allclose(resumed.logprobs, scratch.logprobs, atol=1e-4)


def test_resume_a_subset_of_rows_twice(model, sampler):
  _, params = model
  first = sampler.generate(params, PROMPTS, max_new_tokens=4, keep_state=True)
  second = sampler.resume(params, first.state.take([2, 0]), [[3], [4, 5]], max_new_tokens=4,
                          keep_state=True)
  third = sampler.resume(params, second.state, [[6], []], max_new_tokens=4)
  rows = first.to_lists()
  scratch = sampler.generate(
      params, [PROMPTS[2] + rows[2] + [3] + second.to_lists()[0] + [6],
               PROMPTS[0] + rows[0] + [4, 5] + second.to_lists()[1]], max_new_tokens=4)
  np.testing.assert_array_equal(third.tokens, scratch.tokens)


def test_sampling_knobs_do_not_recompile(model, sampler):
  _, params = model
  rng = jax.random.key(0)
  sampler.generate(params, PROMPTS, max_new_tokens=NEW, rng=rng, temperature=1.0, stop_ids=(3,))
  compiled = loop.decode._cache_size(), loop.prefill._cache_size()
  for temperature, top_k, top_p, stop_ids in [(0.0, 0, 1.0, ()), (0.5, 1, 1.0, (4, 5)),
                                              (1.3, 40, 0.5, (6,)), (2.0, 0, 0.01, (7, 8, 9))]:
    sampler.generate(params, PROMPTS, max_new_tokens=NEW, rng=rng, temperature=temperature,
                     top_k=top_k, top_p=top_p, stop_ids=stop_ids)
  assert (loop.decode._cache_size(), loop.prefill._cache_size()) == compiled


def test_same_seed_same_samples_and_other_seed_differs(model, sampler):
  _, params = model
  knobs = dict(max_new_tokens=NEW, temperature=1.0)
  a = sampler.generate(params, PROMPTS, rng=jax.random.key(7), **knobs)
  b = sampler.generate(params, PROMPTS, rng=jax.random.key(7), **knobs)
  c = sampler.generate(params, PROMPTS, rng=jax.random.key(8), **knobs)
  np.testing.assert_array_equal(a.tokens, b.tokens)
  np.testing.assert_array_equal(a.logprobs, b.logprobs)
  assert (a.tokens != c.tokens).any()


@pytest.mark.parametrize("knobs", [dict(top_k=1), dict(top_p=1e-6)])
def test_top_k_one_and_tiny_top_p_equal_greedy(model, sampler, knobs):
  _, params = model
  greedy = sampler.generate(params, PROMPTS, max_new_tokens=NEW)
  sampled = sampler.generate(params, PROMPTS, max_new_tokens=NEW, rng=jax.random.key(5),
                             temperature=1.5, **knobs)
  np.testing.assert_array_equal(sampled.tokens, greedy.tokens)


def test_full_cache_stops_rows(model):
  config, params = model
  small = Sampler(config, cache_length=10)
  out = small.generate(params, [[1, 2, 3], [4] * 8], max_new_tokens=NEW)
  # 9 usable slots: a 3-token prompt leaves room for 7 tokens, an 8-token prompt for 2.
  np.testing.assert_array_equal(out.lengths, [7, 2])
  assert (out.stop_reason == StopReason.CACHE_FULL).all()
  scratch = Sampler(config, cache_length=CACHE).generate(params, [[1, 2, 3], [4] * 8],
                                                         max_new_tokens=NEW)
  np.testing.assert_array_equal(out.tokens[0, :7], scratch.tokens[0, :7])


@pytest.mark.parametrize("call, message", [
    (dict(prompts=[[1] * CACHE]), "prompt has 64 tokens but the cache holds at most 63"),
    (dict(prompts=[[1, 2], []]), "prompt 1 is empty"),
    (dict(prompts=[]), "non-empty list of prompts"),
    (dict(prompts=[[1, 256]]), "prompt 0 has token id 256 outside the vocabulary"),
    (dict(stop_ids=(2, 300)), "stop id 300 is outside the vocabulary"),
    (dict(temperature=1.0), "rng is required"),
    (dict(top_p=0.0), "top_p=0.0 must be in"),
    (dict(max_new_tokens=0), "max_new_tokens=0 must be >= 1"),
])
def test_bad_input_raises_clear_errors(model, sampler, call, message):
  _, params = model
  kwargs = {"prompts": [[1, 2]], "max_new_tokens": NEW, **call}
  with pytest.raises(ValueError, match=message):
    sampler.generate(params, **kwargs)


def test_resume_without_room_raises(model, sampler):
  _, params = model
  out = sampler.generate(params, [[1] * 50], max_new_tokens=NEW, keep_state=True)
  with pytest.raises(ValueError, match="leaving no room to sample"):
    sampler.resume(params, out.state, [[2, 3]], max_new_tokens=NEW)
  with pytest.raises(ValueError, match="got 2 continuations for a state of 1 rows"):
    sampler.resume(params, out.state, [[2], [3]], max_new_tokens=NEW)
