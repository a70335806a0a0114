"""Plugin of the robustness concern: the ``robust_train`` step, the ``weight_noise`` evaluation
protocol, the ``weight_noise`` transform and the registry of robustness methods."""

from cimkit.plugins import TOPICS
from cimkit.robust import steps  # noqa: F401  (registers the step, the protocol and the methods)
from cimkit.robust.steps import METHODS

TOPICS.add("robust-methods", METHODS.describe, "robustness methods (robust_train method = ...)")
