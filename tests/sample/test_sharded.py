"""Sharded sampling on 8 fake CPU devices (in a subprocess) equals unsharded sampling."""
import os
import subprocess
import sys
import textwrap

import pytest

from tests.paths import ROOT

_SCRIPT = textwrap.dedent("""
    import jax
    import numpy as np
    from rarejax.model import config as model_config, transformer
    from rarejax.parallel import mesh as mesh_lib
    from rarejax.sample import Sampler

    assert jax.device_count() == 8, jax.devices()
    config = model_config.preset("tiny_qwen2", init_std=0.2)
    params = jax.jit(transformer.init_params, static_argnums=0)(config, jax.random.key(0))
    prompts = [[1, 2, 3, 4, 5], [9, 8], [7] * 11, [42]]
    keys = jax.random.split(jax.random.key(1), 2 * len(prompts))
    kwargs = dict(max_new_tokens=8, rng=keys, temperature=1.0, top_p=0.9, num_samples=2,
                  keep_state=True)
    mesh = mesh_lib.make_mesh(data=2, fsdp=2, tensor=2)
    sharded = Sampler(config, cache_length=48, max_batch_size=8, mesh=mesh)
    plain = Sampler(config, cache_length=48, max_batch_size=8)
    outs = [s.generate(params, prompts, **kwargs) for s in (sharded, plain)]
    np.testing.assert_array_equal(outs[0].tokens, outs[1].tokens)
    np.testing.assert_allclose(outs[0].logprobs, outs[1].logprobs, atol=1e-5)
    assert "data" in str(outs[0].state.cache["layers"][0]["k"].sharding.spec)
    feedback = [[3, 4]] * len(keys)
    more = [s.resume(params, o.state, feedback, max_new_tokens=8)
            for s, o in zip((sharded, plain), outs)]
    np.testing.assert_array_equal(more[0].tokens, more[1].tokens)
    print("OK")
""")


@pytest.mark.slow
def test_sampling_on_a_data_fsdp_tensor_mesh_matches_one_device():
  env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=8",
         "JAX_PLATFORMS": "cpu"}
  result = subprocess.run([sys.executable, "-c", _SCRIPT], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
  assert result.returncode == 0 and result.stdout.strip().endswith("OK"), result.stderr[-3000:]
