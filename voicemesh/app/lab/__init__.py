"""voicemesh lab: the multi-region mesh on one machine, in network namespaces joined by an emulated WAN
with the topology's round-trip times, and the evidence that geo steering and the backbone pay off."""
