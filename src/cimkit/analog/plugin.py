"""Plugin of the analog concern: the ``analog`` kind, the ``analog`` step, the ``chips_times``
evaluation protocol, the device and mapping presets."""

from cimkit.analog import steps, variants  # noqa: F401  (register the kind, step and protocol)
from cimkit.analog.devices import DEVICES
from cimkit.analog.mapping import MAPPINGS
from cimkit.plugins import TOPICS

TOPICS.add("devices", DEVICES.describe, "memory-device presets (DeviceConfig)")
TOPICS.add("mappings", MAPPINGS.describe, "crossbar mapping presets (MappingConfig)")
