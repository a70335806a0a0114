"""Spiking neural networks: neurons, simulation and training, ANN→SNN conversion, spiking CIM.

* :mod:`~cimkit.snn.neurons`: :class:`LIF` (= :class:`Leaky`), :class:`IF`, :class:`CubaLIF`
  (= :class:`Synaptic`) with snnTorch's parameter names and semantics;
  :mod:`~cimkit.snn.surrogate`: surrogate gradients; :mod:`~cimkit.snn.encoders`: input encoders;
* :class:`SpikingNet`: time-batched simulation (stateless layers run once on the whole ``(T·B)``
  batch, only the neurons step); :class:`SpikingClassification`: the ``spiking_classification`` task;
* :func:`to_snn` / :func:`qcfs_`: ANN→SNN conversion (threshold balancing, QCFS);
* :func:`measure_activity` / :class:`SpikeStats`: spikes, synaptic operations, neuron updates and
  crossbar reads per inference, for the cost model;
* :mod:`~cimkit.snn.cim`: spiking networks on crossbars (spike-driven layers take 1-bit pulses);
* :mod:`cimkit.snn.nir` (needs the ``snn`` extra, ``pip install cimkit[snn]``): NIR export/import.

See ``docs/snn.md`` for the models, formulas and conventions.
"""

from cimkit.snn.activity import ActivityMonitor, NeuronActivity, SpikeStats, SynapseActivity, measure_activity
from cimkit.snn.cim import spike_input_levels, spiking_analog_config, to_crossbars
from cimkit.snn.convert import ConvertConfig, ConvertMethod, NormMode, activation_scales, qcfs_, to_snn
from cimkit.snn.encoders import ENCODERS, DirectEncoder, Encoder, LatencyEncoder, RateEncoder, make_encoder
from cimkit.snn.neurons import (
    IF,
    LIF,
    CubaLIF,
    Discretization,
    Leaky,
    ResetMechanism,
    SpikingNeuron,
    Synaptic,
    beta_from_tau,
    neurons,
    set_num_steps,
    tau_from_beta,
)
from cimkit.snn.pooling import SpikingMaxPool2d, SumPool2d
from cimkit.snn.qcfs import QCFS
from cimkit.snn.simulate import Readout, SpikingNet
from cimkit.snn.surrogate import (
    SURROGATES,
    Surrogate,
    atan,
    custom,
    fast_sigmoid,
    make_surrogate,
    sigmoid,
    spike,
    straight_through,
)
from cimkit.snn.task import SpikeLoss, SpikingClassification

__all__ = [
    "ENCODERS", "IF", "LIF", "QCFS", "SURROGATES", "ActivityMonitor", "ConvertConfig", "ConvertMethod", "CubaLIF",
    "DirectEncoder", "Discretization", "Encoder", "LatencyEncoder", "Leaky", "NeuronActivity", "NormMode",
    "RateEncoder", "Readout", "ResetMechanism", "SpikeLoss", "SpikeStats", "SpikingClassification",
    "SpikingMaxPool2d", "SpikingNet", "SpikingNeuron", "SumPool2d", "Surrogate", "SynapseActivity", "Synaptic",
    "activation_scales", "atan", "beta_from_tau", "custom", "fast_sigmoid", "make_encoder", "make_surrogate",
    "measure_activity", "neurons", "qcfs_", "set_num_steps", "sigmoid", "spike", "spike_input_levels",
    "spiking_analog_config", "straight_through", "tau_from_beta", "to_crossbars", "to_snn",
]  # fmt: skip
