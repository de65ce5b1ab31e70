"""Detection between sweeps: Docker's event stream and the quick probe.

Neither publishes a verdict of its own. Both decide only *when* an instance gets a full
diagnostic (trigger "event" or "watch"); the diagnostic judges and is what /metrics shows.
"""
