"""The error workloads raise for bad workload input: one line naming the field."""


class WorkloadError(ValueError):
    """Bad workload input (a field, a trace row); the message names where and what."""
