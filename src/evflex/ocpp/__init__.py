"""OCPP-J gateway: WebSocket sessions for OCPP 1.6 and 2.0.1.

It translates frames into fleet events and version-neutral commands into frames;
it never decides anything about the fleet.
"""
