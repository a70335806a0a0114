"""Plugin of the cost concern: prices every variant of an experiment (a result hook and the
``[cost]`` settings table), adds its report sections and the ``cimkit cost`` command, and lists the
presets (``cimkit list specs|adcs|arithmetic|dram``)."""

from cimkit.cost.adc import ADCS
from cimkit.cost.cli import add_cost_command
from cimkit.cost.digital import DIGITAL, MEMORIES
from cimkit.cost.report import cost_sections
from cimkit.cost.settings import CostSettings
from cimkit.cost.specs import SPECS
from cimkit.cost.variants import cost_result_hook
from cimkit.experiment.hooks import CONCERN_SETTINGS, REPORT_HOOKS, RESULT_HOOKS
from cimkit.plugins import COMMANDS, TOPICS

CONCERN_SETTINGS.add("cost", CostSettings, "[cost]: hardware that prices each variant (spec, digital_spec, adc)")
RESULT_HOOKS.add("cost", cost_result_hook, "energy, latency and area per inference of every variant")
REPORT_HOOKS.add("cost", cost_sections, "primary metric vs energy (Pareto front), energy per layer by component")
COMMANDS.add("cost", add_cost_command, "cimkit cost MODEL_OR_EXPERIMENT: per-layer cost table on a spec")
TOPICS.add("specs", SPECS.describe, "hardware specs of the cost model ([cost] spec, cimkit cost --spec)")
TOPICS.add("adcs", ADCS.describe, "ADC models of the cost model ([cost] adc, cimkit cost --adc)")
TOPICS.add("arithmetic", DIGITAL.describe, "digital arithmetic models (HardwareSpec.digital)")
TOPICS.add("dram", MEMORIES.describe, "DRAM models (HardwareSpec.dram)")
