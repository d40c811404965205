"""Grid-grade telemetry: provisioning policy, provisioning, observation, readiness, freshness.

Implements the PowerBank rules (../../docs and the issue #4): every station is asked
to measure power locally once a second, forward changes of `delta_w` within a second
and report at least every `periodic_s`; readiness judges, per station and per
hardware model, whether it does.
"""
