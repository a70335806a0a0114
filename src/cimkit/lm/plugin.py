"""Plugin of the LM concern: the ``bitlinear``, ``lora`` and ``sample`` steps, the ``bitnet_lm`` and
``hf_gpt2`` models, the GPT-2 ``Conv1D`` adapter and the ``bitlinear`` / ``lora`` transforms."""

from cimkit.lm import cost, hf, models, steps  # noqa: F401  (register the models, steps, adapter, transforms, cost records)
