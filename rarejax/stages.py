"""Pipeline stages, each gin-scoped: data → cpt → sft → rers → trajectory_sft → rl → eval.

Importing this module registers every stage with rarejax.pipeline; each is registered in its
own package, next to its logic:
  import_hf  a Hugging Face checkpoint as the first export     (rarejax.model.pipeline_stage)
  data  builds the knowledge base (with the configured publication exclusions), the simulated
        and real case datasets, the knowledge corpus and the tokenizer
                                                                 (rarejax.data.pipeline_stage)
  cpt   knowledge internalization: LM loss on the knowledge corpus   (scope cpt/train_stage)
  sft   diagnosis SFT on reference responses: response-masked loss  (scope sft/train_stage)
  trajectory_sft  SFT that may train on the trajectories of an earlier rers stage
                                                   (the three: rarejax.train.pipeline_stage)
  rers  reflection-enhanced reasoning sampling → trajectories        (rarejax.rers.stage)
  rl    dual-level curriculum RL with DAPO                           (rarejax.rl.stage)
  eval  every earlier stage's export and the classical baselines on the held-out simulated notes
                                                             (rarejax.evaluate.pipeline_stage)
Training stages evaluate periodically through the shared sampler and grader on a held-out
slice of the simulated validation cases. The experiment-level helpers every stage shares (the
knowledge base, the prepared data, the held-out cases, the periodic evaluation, the export
metadata) live in rarejax.experiment, which imports no stage module.
"""

# pylint: disable=unused-import  (each import registers its stages)
from rarejax.data import pipeline_stage as _data_stage
from rarejax.evaluate import pipeline_stage as _eval_stage
from rarejax.model import pipeline_stage as _import_hf_stage
from rarejax.rers import stage as _rers_stage
from rarejax.rl import stage as _rl_stage
from rarejax.train import pipeline_stage as _train_stages
