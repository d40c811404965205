"""The grid-service engine's pure core: services turn a signal into a portfolio
target, allocation turns the target into per-EVSE limits, availability says how
much flexibility the fleet holds. Only `loop.py` (the engine) touches asyncio.

Sign convention everywhere: power in W, positive = consumption (import, as OCPP
meters it), negative = injection (V2G/BESS discharge). A service's output is a
change ΔP against the baseline (the fleet's power just before activation).
"""
