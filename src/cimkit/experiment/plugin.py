"""``cimkit list`` topics of the core: variants, pipeline steps, evaluation protocols, tasks, models,
datasets, transforms."""

from cimkit.data import DATASETS
from cimkit.experiment.pipeline import EVALS, STEPS
from cimkit.experiment.variant import VARIANTS
from cimkit.models import MODELS
from cimkit.nn import TRANSFORMS
from cimkit.plugins import TOPICS
from cimkit.tasks import TASKS

TOPICS.add("variants", VARIANTS.describe, "experiment variant kinds ([[variants]] kind = ...)")
TOPICS.add("steps", STEPS.describe, "pipeline steps (steps = [{op = ...}])")
TOPICS.add("evals", EVALS.describe, "pipeline evaluation protocols (eval = {protocol = ...})")
TOPICS.add("tasks", TASKS.describe, "tasks: loss, metrics and primary metric")
TOPICS.add("models", MODELS.describe, "registered models")
TOPICS.add("datasets", DATASETS.describe, "registered datasets")
TOPICS.add("transforms", TRANSFORMS.describe, "transforms for cimkit.apply_ (dispatched on the config type)")
