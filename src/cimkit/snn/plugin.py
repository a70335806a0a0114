"""Plugin of the spiking concern: the ``spiking_classification`` task, the ``qcfs`` / ``to_snn`` /
``snn_analog`` pipeline steps, the ``time_steps`` protocol, and the ``surrogates`` / ``encoders``
``cimkit list`` topics."""

from cimkit.plugins import TOPICS
from cimkit.snn import steps  # noqa: F401  (register the steps and the protocol)
from cimkit.snn.encoders import ENCODERS
from cimkit.snn.surrogate import SURROGATES
from cimkit.snn.task import SpikingClassification
from cimkit.tasks.base import TASKS

TASKS.add(SpikingClassification.name, SpikingClassification,
          "spike trains (T, B, K) vs labels: rate or count cross-entropy, accuracy from spike counts (primary)")  # fmt: skip
TOPICS.add("surrogates", SURROGATES.describe, "surrogate gradients of the spike function")
TOPICS.add("encoders", ENCODERS.describe, "input encoders of spiking networks")
