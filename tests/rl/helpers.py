"""What the tests of rarejax.rl share: a two-disease grounding index, bytes as a tokenizer, and
rewards whose accuracy differs within every group."""
import numpy as np

from rarejax.knowledge import grounding
from rarejax.rl import rewards as rewards_lib

INDEX = grounding.GroundingIndex([("OMIM:154700", ["Marfan syndrome"]),
                                  ("OMIM:609192", ["Loeys-Dietz syndrome 1"])])


class ByteTokenizer:
  """Bytes as tokens (ids 0-2 reserved): enough of a vocabulary for a tiny_llama (256 ids)."""
  pad_id, eos_id, bos_id = 0, 1, 2

  def encode(self, text):
    return list(text.encode("utf-8"))

  def decode(self, ids):
    return bytes(i for i in ids if i > 2).decode("utf-8", errors="replace")


def constant_rewards(texts, responses, golds, tasks):
  """Accuracy that differs within each group of 2 (sample 0 right), so every group is kept."""
  terms = {name: np.zeros(len(texts), np.float32) for name in rewards_lib.TERMS}
  terms["accuracy"][::2] = 1.0
  return rewards_lib.Rewards.combine(terms, rewards_lib.RewardConfig().weights())
